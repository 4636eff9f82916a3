package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"html"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The SAML test runs the real binaries: the simulator is the shop and its
// SAML IdP (crewjam/saml's samlidp, with the seeded buyer), the sidecar is
// the SP. The test plays the browser: every redirect and form post between
// the two processes is driven and asserted by hand.

// samlCaddyfile: SAML login only (no oidc block), /echo/private* protected.
const samlCaddyfile = `{
	admin %[2]s
}
http://%[1]s {
	s360 {
		upstream     @SIM@
		operator     {env.S360_OPERATOR}
		secret       {env.S360_SECRET}
		shop         @SIM@
		storage      {env.XDG_DATA_HOME}/store
		setup_poll   0
		updates_poll 0
		saml {
			idp_metadata  @SIM@/saml/metadata
			cert          @CERT@
			key           @KEY@
			cookie_secret {env.S360_COOKIE_KEY}
			protect       /echo/private*
		}
	}
	reverse_proxy /echo* @ECHO@
	root * @ROOT@
	file_server
}
`

// spKeyPair writes the SP's self-signed certificate and key.
func spKeyPair(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "website SP"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "sp.crt"), filepath.Join(dir, "sp.key")
	if os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600) != nil ||
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600) != nil {
		t.Fatal("writing the SP key pair")
	}
	return certFile, keyFile
}

var formField = regexp.MustCompile(`<input type="(?:hidden|text|password)" name="([A-Za-z]+)"[^>]*value="([^"]*)"`)
var formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)

// form reads an HTML form's action and fields.
func form(t *testing.T, r reply) (string, url.Values) {
	t.Helper()
	a := formAction.FindSubmatch(r.body)
	if r.status != http.StatusOK || a == nil {
		t.Fatalf("want an HTML form: %s", r)
	}
	v := url.Values{}
	for _, m := range formField.FindAllSubmatch(r.body, -1) {
		v.Set(string(m[1]), html.UnescapeString(string(m[2])))
	}
	base, _ := url.Parse(r.url)
	action, err := base.Parse(html.UnescapeString(string(a[1])))
	if err != nil {
		t.Fatalf("form action: %v", err)
	}
	return action.String(), v
}

func (c *client) postForm(t *testing.T, target string, v url.Values) reply {
	t.Helper()
	resp, err := c.http.PostForm(target, v)
	if err != nil {
		t.Fatalf("%s: POST %s: %v", c.name, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{method: "POST", url: target, status: resp.StatusCode, hdr: resp.Header, body: b}
}

// startSAML runs the sidecar (SAML login only, website root at root) and
// the simulator serving the shop's IdP for it.
func startSAML(t *testing.T, root string) (e *edge, simURL string, simProc *proc) {
	t.Helper()
	simAddr := freeAddr(t)
	simURL = "http://" + simAddr
	cert, key := spKeyPair(t)
	echo := echoWebsite(t)
	key32 := make([]byte, 32)
	rand.Read(key32)
	// The sidecar starts first: it reads the IdP metadata only at the
	// first login, so the shop being down does not block its start.
	e = startEdge(t, strings.NewReplacer("@SIM@", simURL, "@CERT@", cert, "@KEY@", key,
		"@ECHO@", strings.TrimPrefix(echo.URL, "http://"), "@ROOT@", root).Replace(samlCaddyfile),
		"S360_COOKIE_KEY="+base64.StdEncoding.EncodeToString(key32))
	simProc = start(t, "s360sim", nil, "-addr", simAddr, "-operator", simOperator, "-secret", simSecret,
		"-saml-sp-metadata", e.URL+"/auth/saml/metadata")
	waitFor(t, "s360sim to listen", 20*time.Second, func() bool {
		resp, err := http.Get(simURL + "/saml/metadata")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return e, simURL, simProc
}

func TestSAMLLoginJourney(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "index.html"), []byte("website"), 0o600)
	e, simURL, sp := startSAML(t, root)
	waitFor(t, "the simulator to print the buyer's login", 10*time.Second, func() bool {
		return strings.Contains(sp.Output(), `buyer login "buyer", password "buyer-password"`)
	})

	b := newClient("buyer")
	// A protected page sends the browser to login, and back afterwards.
	r := b.get(t, e.URL+"/echo/private/tickets", "Accept", browserAccept)
	if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), "/auth/login?") {
		t.Fatalf("protected page: %s", r)
	}
	r = b.get(t, e.URL+r.hdr.Get("Location"))
	loc, _ := url.Parse(r.hdr.Get("Location"))
	if r.status != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), simURL+"/saml/sso?") ||
		loc.Query().Get("SAMLRequest") == "" || loc.Query().Get("Signature") == "" {
		t.Fatalf("login: want a signed HTTP-Redirect AuthnRequest to the shop: %s", r)
	}
	// The shop (which checks the request's signature against the SP
	// metadata it fetches from the sidecar) asks for the buyer's password.
	action, fields := form(t, b.get(t, loc.String()))
	fields.Set("user", "buyer")
	fields.Set("password", "wrong")
	if _, again := form(t, b.postForm(t, action, fields)); again.Get("SAMLResponse") != "" {
		t.Fatal("the shop logged the buyer in with a wrong password")
	}
	fields.Set("password", "buyer-password")
	r = b.postForm(t, action, fields)
	if r.status != http.StatusSeeOther || r.hdr.Get("Location") != strings.TrimPrefix(loc.String(), simURL) {
		t.Fatalf("shop login: want a return to the signed request: %s", r)
	}
	acs, answer := form(t, b.get(t, loc.String()))
	if acs != e.URL+"/auth/saml/acs" || answer.Get("SAMLResponse") == "" {
		t.Fatalf("the shop's answer goes to %q, with fields %v", acs, answer)
	}
	r = b.postForm(t, acs, answer)
	if r.status != http.StatusSeeOther || r.hdr.Get("Location") != "/echo/private/tickets" || r.cookie("s360_session") == nil {
		t.Fatalf("ACS: %s", r)
	}

	r, info := b.userinfo(t, e)
	if r.status != 200 || info["sub"] != "buyer@example.com" || info["email"] != "buyer@example.com" || info["name"] != "Ada Buyer" {
		t.Fatalf("userinfo after login: %s", r)
	}
	r = b.get(t, e.URL+"/echo/private/tickets", "X-S360-User", "forged")
	var hdrs map[string][]string
	if r.status != 200 || json.Unmarshal(r.body, &hdrs) != nil {
		t.Fatalf("protected page after login: %s", r)
	}
	if u := hdrs["X-S360-User"]; len(u) != 1 || u[0] != "buyer@example.com" || hdrs["X-S360-Name"][0] != "Ada Buyer" {
		t.Fatalf("identity headers seen by the website: %v", hdrs)
	}

	// The same answer posted again is refused, with or without the
	// browser's state.
	if r := b.postForm(t, acs, answer); r.status != http.StatusUnauthorized || r.apiError(t).Error == "" {
		t.Fatalf("replayed response: %s", r)
	}

	// Logout ends the session, and a copy of the cookie made before it.
	copied := newClient("copy")
	u, _ := url.Parse(e.URL)
	copied.jar.SetCookies(u, b.jar.Cookies(u))
	// It also ends the buyer's session at the shop (SP-initiated single
	// logout): a signed LogoutRequest, and the shop's answer back here.
	r = b.do(t, "POST", e.URL+"/auth/logout", "")
	slo, _ := url.Parse(r.hdr.Get("Location"))
	if r.status != http.StatusFound || slo == nil || !strings.HasPrefix(slo.String(), simURL+"/saml/slo?") ||
		slo.Query().Get("SAMLRequest") == "" || slo.Query().Get("Signature") == "" {
		t.Fatalf("logout: want a signed LogoutRequest to the shop: %s", r)
	}
	r = b.get(t, slo.String())
	if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), e.URL+"/auth/saml/slo?SAMLResponse=") {
		t.Fatalf("the shop's single logout: %s", r)
	}
	if r = b.get(t, r.hdr.Get("Location")); r.status != http.StatusFound || r.hdr.Get("Location") != "/" {
		t.Fatalf("back from single logout: %s", r)
	}
	if strings.Contains(e.Output(), "saml logout response refused") {
		t.Errorf("the shop's LogoutResponse was refused:\n%s", e.Output())
	}
	for _, c := range []*client{b, copied} {
		if r, _ := c.userinfo(t, e); r.status != http.StatusUnauthorized {
			t.Fatalf("%s after logout: %s", c.name, r)
		}
	}
	if r := copied.get(t, e.URL+"/echo/private/tickets"); r.status != http.StatusUnauthorized {
		t.Fatalf("protected API call with a logged-out cookie: %s", r)
	}
	// The shop asks for the password again.
	r = b.get(t, e.URL+"/auth/login?provider=saml")
	if _, f := form(t, b.get(t, r.hdr.Get("Location"))); !f.Has("password") {
		t.Fatal("the shop's session outlived the single logout")
	}
}

// TestSAMLBrowserLogin logs the shop's buyer in through SAML in headless
// Chromium: the real browser's cookie rules (the login state cookie must
// come back on the shop's cross-port form post) and the shop's
// self-submitting answer form are what the hand-driven test cannot show.
func TestSAMLBrowserLogin(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found: install Debian's chromium package to run the SAML browser login", chromiumPath)
		}
		t.Fatalf("%s not found although CI is set: %v", chromiumPath, err)
	}
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "index.html"), []byte("website"), 0o600)
	e, simURL, _ := startSAML(t, root)

	chromeOut := &syncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(chromeOut),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first Run binds the browser to its context, so it gets no
	// deadline (which would end the browser with it); a watchdog instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v\n%s", chromiumPath, err, tail(chromeOut.String(), 4000))
		}
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatalf("starting %s: no answer within 90s (%v)", chromiumPath, <-started)
	}
	defer func() {
		if t.Failed() {
			t.Logf("--- chromium output ---\n%s", tail(withoutDBus(chromeOut.String()), 4000))
		}
	}()

	// A protected page sends the browser through the shop's login.
	runWithin(t, ctx, "opening a protected page", 60*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/echo/private/tickets"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)),
	))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); !strings.HasPrefix(at, simURL+"/saml/sso?") {
		t.Fatalf("the browser is at %q, want the shop's sign-on page", at)
	}
	runWithin(t, ctx, "logging in at the shop", 60*time.Second, chromedp.Steps(
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), "buyer"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "buyer-password"),
		chromedp.Submit(chromedp.CSS(`input[name=password]`)),
	))
	// The shop's answer form submits itself to the ACS, which sends the
	// browser back to the protected page, now with the buyer's headers.
	waitFor(t, "the browser to come back to the protected page", 30*time.Second, func() bool {
		at, _ := chromedp.Run(ctx, chromedp.Location())
		return at == e.URL+"/echo/private/tickets"
	})
	body := runWithin(t, ctx, "reading the page", 10*time.Second, chromedp.Text(chromedp.CSS(`body`)))
	if !strings.Contains(body, `"X-S360-User":["buyer@example.com"]`) || !strings.Contains(body, `"X-S360-Name":["Ada Buyer"]`) {
		t.Fatalf("the website saw %s", body)
	}
	runWithin(t, ctx, "reading userinfo", 30*time.Second, chromedp.Navigate(e.URL+"/auth/userinfo"))
	body = runWithin(t, ctx, "reading userinfo", 10*time.Second, chromedp.Text(chromedp.CSS(`body`)))
	if !strings.Contains(body, `"email":"buyer@example.com"`) {
		t.Fatalf("userinfo: %s", body)
	}
}
