package integration

import (
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
	// SAML login only (no oidc block); /echo/private* and the order path
	// are protected.
	login := subBlock("saml", "idp_metadata "+simURL+"/saml/metadata", "cert "+cert, "key "+key,
		"cookie_secret {env.S360_COOKIE_KEY}", "protect /echo/private* /tnseb/backend-apis/externalOrderFacade/*")
	e = startEdge(t, pollsOffCaddyfile(simURL, login,
		"reverse_proxy /echo* "+strings.TrimPrefix(echo.URL, "http://"), "root * "+root, "file_server"),
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

// shopLogin fills in the shop's login form, which the browser is on, with
// the seeded buyer's account.
func shopLogin(t *testing.T, b *browser, simURL string) {
	t.Helper()
	runWithin(t, b.ctx, "the shop should ask for the buyer's password", 60*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)))
	if at := runWithin(t, b.ctx, "reading the location", 10*time.Second, chromedp.Location()); !strings.HasPrefix(at, simURL+"/saml/sso?") {
		t.Fatalf("the browser is at %q, want the shop's sign-on page", at)
	}
	runWithin(t, b.ctx, "logging in at the shop", 60*time.Second, chromedp.Steps(
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), "buyer"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "buyer-password"),
		chromedp.Submit(chromedp.CSS(`input[name=password]`)),
	))
}

// TestSAMLBrowserLogin logs the shop's buyer in through SAML in headless
// Chromium: the real browser's cookie rules (the login state cookie must
// come back on the shop's cross-port form post) and the shop's
// self-submitting answer form are what the hand-driven test cannot show.
func TestSAMLBrowserLogin(t *testing.T) {
	needChromium(t)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "index.html"), []byte("website"), 0o600)
	e, simURL, _ := startSAML(t, root)
	b := startBrowser(t, artifactsDir(t), "saml-login-failure.png")
	ctx := b.ctx

	// A protected page sends the browser through the shop's login.
	runWithin(t, ctx, "opening a protected page", 60*time.Second, chromedp.Navigate(e.URL+"/echo/private/tickets"))
	shopLogin(t, b, simURL)
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

// TestSAMLBrowserJourney is the best journey, in headless
// Chromium, on the demo page: log in with the shop account (S-360 as
// SAML IdP), browse the catalog with availability, book, and arrive at the
// shop's cart already known there, because the shop's login session is the
// one the website's login used. Logging out of the website ends it at the
// shop too.
func TestSAMLBrowserJourney(t *testing.T) {
	needChromium(t)
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactsDir(t)
	e, simURL, sp := startSAML(t, demo)
	s := &sim{proc: sp, URL: simURL}
	fx := s.Fixtures(t)
	bk := firstBookable(t, fx)
	b := startBrowser(t, artifacts, "saml-journey-failure.png")
	ctx := b.ctx

	// 1. Browse: the demo page lists the catalog; its login is the shop's.
	browseDemo(t, b, e, fx, bk)
	if label := runWithin(t, ctx, "reading the login link", 10*time.Second, chromedp.Text(chromedp.ID("login"))); label != "Log in with your shop account" {
		t.Errorf("the login link says %q, want the shop account offered", label)
	}
	href := runWithin(t, ctx, "reading the login link", 10*time.Second, chromedp.Evaluate[string](`document.getElementById("login").getAttribute("href")`))
	if !strings.Contains(href, "provider=saml") {
		t.Errorf("the login link is %q, want provider=saml", href)
	}

	// 2. Log in with the shop account and come back to the page, which
	// shows the buyer from /auth/userinfo.
	runWithin(t, ctx, "clicking \"Log in\"", 10*time.Second, chromedp.Click(chromedp.ID("login")))
	shopLogin(t, b, simURL)
	runWithin(t, ctx, "after the shop's login the page should come back showing the buyer", 45*time.Second, chromedp.Steps(
		chromedp.WaitVisible(chromedp.ID("user-name")),
		chromedp.WaitVisible(chromedp.CSS(bk.availSel)),
		chromedp.WaitVisible(chromedp.CSS(bk.bookSel)),
	))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != e.URL+"/" {
		t.Errorf("after the login the browser is at %q, want back on the demo page %q", at, e.URL+"/")
	}
	if name := runWithin(t, ctx, "reading the user name", 10*time.Second, chromedp.Text(chromedp.ID("user-name"))); name != "Ada Buyer" {
		t.Errorf("the page shows the buyer as %q, want the shop account's name %q", name, "Ada Buyer")
	}
	b.screenshot(t, artifacts, "saml-journey-shop.png", "the demo page, logged in with the shop account")

	// 3. Book, and arrive at the shop's cart, already known there.
	cartID := bookToCart(t, b, s, bk, artifacts, "saml-journey.png")
	runWithin(t, ctx, "the cart should show the buyer the shop knows", 10*time.Second, chromedp.WaitVisible(chromedp.ID("shop-buyer")))
	if who := runWithin(t, ctx, "reading the shop's buyer", 10*time.Second, chromedp.Text(chromedp.ID("shop-buyer"))); who != "Ada Buyer" {
		t.Errorf("the cart names the buyer %q, want %q", who, "Ada Buyer")
	}
	if n := runWithin(t, ctx, "looking for a login form", 10*time.Second, chromedp.Evaluate[int](`document.querySelectorAll("input[name=password], #shop-guest").length`)); n != 0 {
		t.Errorf("the cart asks the buyer to log in again (%d login elements)", n)
	}
	cart := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location())

	// 4. "Log out" on the site ends the session here and, by single
	// logout, at the shop: the cart no longer knows the buyer.
	runWithin(t, ctx, "after \"Log out\" the page should offer the login again", 60*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("logout")),
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("login")),
	))
	runWithin(t, ctx, "the cart after the logout should show a guest", 30*time.Second, chromedp.Steps(
		chromedp.Navigate(cart),
		chromedp.WaitVisible(chromedp.ID("shop-guest")),
	))
	if id := runWithin(t, ctx, "reading the order id", 10*time.Second, chromedp.Text(chromedp.ID("order-id"))); strings.TrimSpace(id) != cartID {
		t.Errorf("the cart after the logout shows order %q, want %q", id, cartID)
	}
	b.noExceptions(t)
}

// TestDemoSAMLJourney runs `make run`'s set-up (Caddyfile.example, whose
// saml block points at the simulator's shop IdP, and demo/) as a person
// would use it: the demo page opened as localhost, "Log in with your shop
// account", book, and the shop's cart already knows the buyer.
func TestDemoSAMLJourney(t *testing.T) {
	needChromium(t)
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactsDir(t)
	cert, key := spKeyPair(t)
	dir := t.TempDir()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	simAddr := freeAddr(t)
	simURL := "http://" + simAddr
	key32 := make([]byte, 32)
	rand.Read(key32)
	// Only what `make run` leaves to its defaults is moved: the ports, and
	// the paths that are relative to the repository.
	p := start(t, "s360edge", []string{
		"S360_OPERATOR=" + simOperator, "S360_SECRET=" + simSecret, "S360_PORT=" + port, "S360_ADMIN=" + freeAddr(t),
		"S360_UPSTREAM=" + simURL, "S360_SHOP=" + simURL, "S360_SAML_IDP=" + simURL + "/saml/metadata",
		"S360_SAML_ENTITY=http://127.0.0.1:" + port + "/auth/saml/metadata", "S360_SAML_CERT=" + cert, "S360_SAML_KEY=" + key,
		"S360_STORAGE=" + filepath.Join(dir, "store"), "S360_SITE=" + demo, "XDG_DATA_HOME=" + dir, "HOME=" + dir,
		"S360_COOKIE_KEY=" + base64.StdEncoding.EncodeToString(key32),
	}, "run", "--config", "../Caddyfile.example", "--adapter", "caddyfile")
	e := &edge{proc: p, URL: "http://localhost:" + port, t: t}
	if !e.waitListening(t) {
		t.Fatalf("s360edge exited:\n%s", tail(p.Output(), 8000))
	}
	sp := start(t, "s360sim", nil, "-addr", simAddr, "-institution", "MOSA", "-operator", simOperator, "-secret", simSecret,
		"-saml-sp-metadata", "http://127.0.0.1:"+port+"/auth/saml/metadata")
	s := &sim{proc: sp, URL: simURL}
	waitFor(t, "s360sim to serve", 20*time.Second, func() bool {
		resp, err := http.Get(simURL + "/_sim/fixtures")
		if err == nil {
			resp.Body.Close()
		}
		sp.failIfExited(t)
		return err == nil && resp.StatusCode == 200
	})
	fx := s.Fixtures(t)
	bk := firstBookable(t, fx)
	b := startBrowser(t, artifacts, "demo-saml-failure.png")
	ctx := b.ctx

	browseDemo(t, b, e, fx, bk)
	runWithin(t, ctx, "clicking \"Log in with your shop account\"", 10*time.Second, chromedp.Click(chromedp.ID("login")))
	shopLogin(t, b, simURL)
	// The login ran on the SP's entity_id origin, and returns there.
	runWithin(t, ctx, "after the shop's login the page should come back showing the buyer", 45*time.Second, chromedp.Steps(
		chromedp.WaitVisible(chromedp.ID("user-name")),
		chromedp.WaitVisible(chromedp.CSS(bk.bookSel)),
	))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != "http://127.0.0.1:"+port+"/" {
		t.Errorf("after the login the browser is at %q, want the demo page on the SP's origin", at)
	}
	bookToCart(t, b, s, bk, artifacts, "demo-saml-cart.png")
	runWithin(t, ctx, "the cart should show the buyer the shop knows", 10*time.Second, chromedp.WaitVisible(chromedp.ID("shop-buyer")))
	b.noExceptions(t)
}
