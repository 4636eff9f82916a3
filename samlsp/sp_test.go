package samlsp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"html"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/crewjam/saml"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/internal/field"
	"github.com/s360edge/s360edge/oidcrp"
)

const (
	site      = "http://shop-site.test"
	buyerSub  = "buyer-42"
	buyerMail = "buyer@example.com"
	buyerName = "Ada Buyer"
)

type keyPair struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var (
	keysOnce sync.Once
	keys     [3]keyPair // IdP, SP, a stranger IdP
)

func testKeys(t *testing.T) [3]keyPair {
	keysOnce.Do(func() {
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: "test"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
			if err != nil {
				panic(err)
			}
			c, _ := x509.ParseCertificate(der)
			keys[i] = keyPair{k, c}
		}
	})
	return keys
}

// fixedSessions is the IdP's logged-in buyer.
type fixedSessions struct{}

func (fixedSessions) GetSession(_ http.ResponseWriter, _ *http.Request, _ *saml.IdpAuthnRequest) *saml.Session {
	now := time.Now()
	return &saml.Session{ID: "s1", NameID: buyerSub, CreateTime: now, ExpireTime: now.Add(time.Hour), Index: "1",
		CustomAttributes: []saml.Attribute{
			{Name: "email", Values: []saml.AttributeValue{{Value: buyerMail}}},
			{Name: "displayName", Values: []saml.AttributeValue{{Value: buyerName}}},
		}}
}

type spLookup struct{ md *saml.EntityDescriptor }

func (l spLookup) GetServiceProvider(*http.Request, string) (*saml.EntityDescriptor, error) {
	return l.md, nil
}

type fixture struct {
	t    *testing.T
	sp   *SP
	rp   *oidcrp.RP
	idp  *saml.IdentityProvider
	evil *saml.IdentityProvider // same URLs, another key: not in the metadata
	logs *observer.ObservedLogs
}

func newIDP(kp keyPair) *saml.IdentityProvider {
	mu, _ := url.Parse("https://idp.test/metadata")
	su, _ := url.Parse("https://idp.test/sso")
	return &saml.IdentityProvider{Key: kp.key, Certificate: kp.cert, MetadataURL: *mu, SSOURL: *su,
		SessionProvider: fixedSessions{}, WantAuthnRequestsSigned: true, Logger: log.New(io.Discard, "", 0)}
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newFixture builds an SP and its IdP. With clear, the IdP sees no SP
// encryption key, so its assertions are readable (and editable) in tests.
func newFixture(t *testing.T, clear bool) *fixture {
	k := testKeys(t)
	dir := t.TempDir()
	f := &fixture{t: t, idp: newIDP(k[0]), evil: newIDP(k[2])}
	md, err := xml.Marshal(f.idp.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	mdFile := filepath.Join(dir, "idp.xml")
	if err := os.WriteFile(mdFile, md, 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	f.rp, err = oidcrp.New(oidcrp.Config{NoProvider: true, CookieSecret: strings.Repeat("k", 32)})
	if err != nil {
		t.Fatal(err)
	}
	f.sp, err = New(Config{
		IDPMetadata: mdFile,
		Cert:        writePEM(t, dir, "sp.crt", "CERTIFICATE", k[1].cert.Raw),
		Key:         writePEM(t, dir, "sp.key", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(k[1].key))),
		Sessions:    f.rp,
		Logger:      zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	spMD := f.sp.provider(httptest.NewRequest(http.MethodGet, site+"/", nil), nil).Metadata()
	if clear {
		d := &spMD.SPSSODescriptors[0]
		var signing []saml.KeyDescriptor
		for _, kd := range d.KeyDescriptors {
			if kd.Use != "encryption" {
				signing = append(signing, kd)
			}
		}
		d.KeyDescriptors = signing
	}
	f.idp.ServiceProviderProvider = spLookup{spMD}
	f.evil.ServiceProviderProvider = spLookup{spMD}
	return f
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// login starts a login at the SP and returns the state cookie and the
// IdP's HTTP-Redirect URL.
func (f *fixture) login() (*http.Cookie, string) {
	f.t.Helper()
	rec := httptest.NewRecorder()
	f.sp.ServeLogin(rec, httptest.NewRequest(http.MethodGet, site+"/auth/login?provider=saml&return_to=/account", nil))
	if rec.Code != http.StatusFound {
		f.t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var state *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == stateCookieName {
			state = c
		}
	}
	if state == nil {
		f.t.Fatal("login set no state cookie")
	}
	return state, rec.Header().Get("Location")
}

var samlResponseField = regexp.MustCompile(`name="SAMLResponse" value="([^"]+)"`)

// answer has idp handle the AuthnRequest at location and returns the XML
// of its signed response.
func (f *fixture) answer(idp *saml.IdentityProvider, location string) []byte {
	f.t.Helper()
	rec := httptest.NewRecorder()
	idp.ServeSSO(rec, httptest.NewRequest(http.MethodGet, location, nil))
	m := samlResponseField.FindSubmatch(rec.Body.Bytes())
	if rec.Code != http.StatusOK || m == nil {
		f.t.Fatalf("idp refused the AuthnRequest: %d %s", rec.Code, rec.Body)
	}
	return must(base64.StdEncoding.DecodeString(html.UnescapeString(string(m[1]))))
}

// post sends response to the ACS, as the buyer's browser on host would.
func (f *fixture) post(host string, state *http.Cookie, response []byte) *httptest.ResponseRecorder {
	f.t.Helper()
	form := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString(response)}}
	req := httptest.NewRequest(http.MethodPost, host+"/auth/saml/acs", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if state != nil {
		req.AddCookie(state)
	}
	rec := httptest.NewRecorder()
	f.sp.ServeHTTP(rec, req)
	return rec
}

// identify returns the buyer the session cookie set by rec names, or nil.
func (f *fixture) identify(rec *httptest.ResponseRecorder) *oidcrp.Identity {
	f.t.Helper()
	req := httptest.NewRequest(http.MethodGet, site+"/account", nil)
	for _, c := range rec.Result().Cookies() {
		if c.Name == oidcrp.DefaultCookieName && c.MaxAge >= 0 {
			req.AddCookie(c)
		}
	}
	id, _ := f.rp.Identify(nil, req)
	return id
}

func TestLoginSucceeds(t *testing.T) {
	for _, clear := range []bool{false, true} {
		t.Run(map[bool]string{false: "encrypted assertion", true: "assertion in clear"}[clear], func(t *testing.T) {
			testLogin(t, clear)
		})
	}
}

func testLogin(t *testing.T, clear bool) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, clear)
		state, loc := f.login()
		u := must(url.Parse(loc))
		if u.Query().Get("Signature") == "" || u.Query().Get("SigAlg") == "" {
			t.Fatalf("AuthnRequest is not signed: %s", loc)
		}
		rec := f.post(site, state, f.answer(f.idp, loc))
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/account" {
			t.Fatalf("ACS: %d %q %s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
		id := f.identify(rec)
		if id == nil || id.Subject != buyerSub || id.Email != buyerMail || id.Name != buyerName {
			t.Fatalf("identity = %+v", id)
		}
	})
}

func TestUnsignedAuthnRequestRefusedByIdP(t *testing.T) {
	// Guards the test IdP itself: it must check signatures, or
	// TestLoginSucceeds would not prove the SP signs.
	f := newFixture(t, false)
	_, loc := f.login()
	u := must(url.Parse(loc))
	q := u.Query()
	q.Del("Signature")
	u.RawQuery = q.Encode()
	rec := httptest.NewRecorder()
	f.idp.ServeSSO(rec, httptest.NewRequest(http.MethodGet, u.String(), nil))
	if samlResponseField.Match(rec.Body.Bytes()) {
		t.Fatal("the IdP answered an unsigned AuthnRequest")
	}
}

var signatureElement = regexp.MustCompile(`(?s)<ds:Signature.*?</ds:Signature>`)

func TestRefusedResponses(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		run    func(f *fixture) *httptest.ResponseRecorder
	}{
		{"tampered", "signature", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			resp := f.answer(f.idp, loc)
			tampered := strings.Replace(string(resp), buyerMail, "boss@example.com", 1)
			if tampered == string(resp) {
				f.t.Fatal("the response does not carry the email")
			}
			return f.post(site, state, []byte(tampered))
		}},
		{"unsigned", "", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			resp := f.answer(f.idp, loc)
			unsigned := signatureElement.ReplaceAll(resp, nil)
			if len(unsigned) == len(resp) {
				f.t.Fatal("the response has no signature to remove")
			}
			return f.post(site, state, unsigned)
		}},
		{"signed by a key not in the metadata", "untrusted_certificate", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			return f.post(site, state, f.answer(f.evil, loc))
		}},
		{"wrongly addressed", "destination", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			return f.post("http://other-site.test", state, f.answer(f.idp, loc))
		}},
		{"expired", "expired", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			resp := f.answer(f.idp, loc)
			time.Sleep(saml.MaxIssueDelay + maxSkew + time.Second)
			return f.post(site, state, resp)
		}},
		{"answer to another login", "in_response_to", func(f *fixture) *httptest.ResponseRecorder {
			_, locA := f.login()
			stateB, _ := f.login()
			return f.post(site, stateB, f.answer(f.idp, locA))
		}},
		{"replayed with a copy of the state cookie", "replayed", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			resp := f.answer(f.idp, loc)
			if rec := f.post(site, state, resp); rec.Code != http.StatusSeeOther {
				f.t.Fatalf("first post: %d %s", rec.Code, rec.Body)
			}
			f.logs.TakeAll()
			return f.post(site, state, resp)
		}},
		{"replayed in a browser with no login in progress", "", func(f *fixture) *httptest.ResponseRecorder {
			state, loc := f.login()
			resp := f.answer(f.idp, loc)
			f.post(site, state, resp)
			return f.post(site, nil, resp)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, true)
				rec := tt.run(f)
				if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"error":"invalid_`) {
					t.Fatalf("got %d %s, want 401 JSON", rec.Code, rec.Body)
				}
				if id := f.identify(rec); id != nil {
					t.Fatalf("a refused response started a session for %q", id.Subject)
				}
				refusals := f.logs.FilterMessageSnippet("refused").All()
				if len(refusals) == 0 || refusals[len(refusals)-1].Level != zapcore.InfoLevel {
					t.Fatalf("refusal not logged at INFO: %v", f.logs.All())
				}
				last := refusals[len(refusals)-1]
				if tt.reason != "" && last.ContextMap()["reason"] != tt.reason {
					t.Errorf("logged reason %v, want %q", last.ContextMap()["reason"], tt.reason)
				}
				for _, e := range f.logs.All() {
					if s := e.Message + " " + strings.Join(mapValues(e.ContextMap()), " "); strings.Contains(s, buyerMail) || strings.Contains(s, buyerSub) || strings.Contains(s, "<") {
						t.Errorf("log entry carries assertion content: %s", s)
					}
				}
			})
		})
	}
}

func mapValues(m map[string]any) []string {
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func TestAcceptedWithinSkew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, false)
		state, loc := f.login()
		resp := f.answer(f.idp, loc)
		time.Sleep(saml.MaxIssueDelay)
		if rec := f.post(site, state, resp); rec.Code != http.StatusSeeOther {
			t.Fatalf("a response %s old was refused: %d %s", saml.MaxIssueDelay, rec.Code, rec.Body)
		}
	})
}

func TestMetadataRetriedAfterFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, false)
		good := f.sp.cfg.IDPMetadata
		f.sp.cfg.IDPMetadata = filepath.Join(t.TempDir(), "missing.xml")
		rec := httptest.NewRecorder()
		f.sp.ServeLogin(rec, httptest.NewRequest(http.MethodGet, site+"/auth/login", nil))
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("login without metadata: %d %s", rec.Code, rec.Body)
		}
		f.sp.cfg.IDPMetadata = good
		if _, err := f.sp.metadata(); err == nil {
			t.Fatal("metadata re-read before the retry delay")
		}
		time.Sleep(metadataRetry)
		if _, err := f.sp.metadata(); err != nil {
			t.Fatalf("metadata not re-read after the retry delay: %v", err)
		}
	})
}

func TestSPMetadata(t *testing.T) {
	f := newFixture(t, false)
	rec := httptest.NewRecorder()
	f.sp.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, site+"/auth/saml/metadata", nil))
	var md saml.EntityDescriptor
	if rec.Code != http.StatusOK || xml.Unmarshal(rec.Body.Bytes(), &md) != nil {
		t.Fatalf("metadata: %d %s", rec.Code, rec.Body)
	}
	if md.EntityID != site+"/auth/saml/metadata" || len(md.SPSSODescriptors) != 1 {
		t.Fatalf("entity %q, %d SP descriptors", md.EntityID, len(md.SPSSODescriptors))
	}
	acs := md.SPSSODescriptors[0].AssertionConsumerServices
	if len(acs) != 1 || acs[0].Location != site+"/auth/saml/acs" || acs[0].Binding != saml.HTTPPostBinding {
		t.Fatalf("ACS = %+v", acs)
	}
}

func TestConfigErrors(t *testing.T) {
	rp := must(oidcrp.New(oidcrp.Config{NoProvider: true, CookieSecret: strings.Repeat("k", 32)}))
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no metadata", Config{Sessions: rp, Cert: "x", Key: "y"}, "idp_metadata: missing; set it to the shop's IdP metadata: an https:// URL, or a local file"},
		{"no cert", Config{Sessions: rp, IDPMetadata: "m", Key: "y"}, "cert: missing; the IdP wants signed requests"},
		{"no key", Config{Sessions: rp, IDPMetadata: "m", Cert: "x"}, "key: missing; the IdP wants signed requests"},
		{"unreadable key pair", Config{Sessions: rp, IDPMetadata: "m", Cert: "/nonexistent", Key: "/nonexistent"}, "cert and key: loading them: open /nonexistent"},
		{"relative entity_id", Config{Sessions: rp, IDPMetadata: "m", Cert: "x", Key: "y", EntityID: "/sp"}, `entity_id: "/sp" is not an absolute URL`},
		// The settings' errors come first, all of them: a caller whose
		// sessions failed gets them too.
		{"no sessions, bad settings", Config{EntityID: "/sp"}, "idp_metadata: missing"},
		{"no sessions, bad settings, all reported", Config{EntityID: "/sp"}, "key: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			var fe *field.Error
			if !errors.As(err, &fe) || errors.Is(err, ErrNoSessions) {
				t.Fatalf("err = %v, want only *field.Error", err)
			}
		})
	}
	f := newFixture(t, false)
	cfg := f.sp.cfg
	cfg.Sessions = nil
	if _, err := New(cfg); !errors.Is(err, ErrNoSessions) {
		t.Fatalf("valid settings without sessions: %v, want ErrNoSessions", err)
	}
}

// IdP metadata over plain http is refused unless it comes from loopback:
// the network could swap the IdP's certificate on its way.
func TestMetadataSource(t *testing.T) {
	f := newFixture(t, false)
	for _, tt := range []struct{ src, want string }{
		{"https://shop.example.com/saml/metadata", ""},
		{"http://127.0.0.1:8081/saml/metadata", ""},
		{"http://127.3.4.5/md", ""},
		{"http://localhost:8081/saml/metadata", ""},
		{"http://LOCALHOST./md", ""},
		{"http://[::1]:8081/saml/metadata", ""},
		{f.sp.cfg.IDPMetadata, ""},
		{"idp-metadata.xml", ""},
		{"http://shop.example.com/saml/metadata", `idp_metadata: "http://shop.example.com/saml/metadata" is plain http to a host that is not loopback: ` +
			"anyone on the network path could swap the IdP certificate and log in as any buyer; write idp_metadata https://shop.example.com/saml/metadata, or download"},
		{"http://10.0.0.1/md", "write idp_metadata https://10.0.0.1/md"},
		{"http://localhost.example.com/md", "is plain http to a host that is not loopback"},
		{"http://u:pw@shop.example.com/md", `"http://u:xxxxx@shop.example.com/md" is plain http`},
		{"ftp://shop.example.com/md", `idp_metadata: "ftp://shop.example.com/md" is neither an http(s) URL nor a file`},
		{"https:///md", `idp_metadata: "https:///md" has no host`},
	} {
		t.Run(tt.src, func(t *testing.T) {
			cfg := f.sp.cfg
			cfg.IDPMetadata = tt.src
			_, err := New(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "pw@"):
				t.Fatalf("password in %v", err)
			}
		})
	}
}

// roundTrip answers every request of an http.Client.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A loopback metadata URL that redirects to plain http elsewhere is
// refused at the fetch, as New would have refused that URL.
func TestMetadataRedirectToPlainHTTP(t *testing.T) {
	f := newFixture(t, false)
	md := must(os.ReadFile(f.sp.cfg.IDPMetadata))
	cfg := f.sp.cfg
	cfg.IDPMetadata = "http://127.0.0.1:1/md"
	cfg.HTTPClient = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		if r.URL.Host == "127.0.0.1:1" {
			http.Redirect(rec, r, "http://shop.example.com/md", http.StatusFound)
		} else {
			rec.Write(md)
		}
		resp := rec.Result()
		resp.Request = r // as http.Transport sets it
		return resp, nil
	})}
	sp := must(New(cfg))
	if _, err := sp.metadata(); err == nil || !strings.Contains(err.Error(), "redirected: idp_metadata: \"http://shop.example.com/md\" is plain http") {
		t.Fatalf("metadata after a redirect to plain http: %v", err)
	}
	cfg.IDPMetadata = "http://127.0.0.1:2/md" // not redirected
	if _, err := must(New(cfg)).metadata(); err != nil {
		t.Fatalf("loopback metadata: %v", err)
	}
}

// An IdP whose clock runs ahead of ours is accepted within the 90 s skew
// only (our clock is set back after the login: the IdP checks our
// request's time with its own).
func TestIdPClockAhead(t *testing.T) {
	for _, tt := range []struct {
		ahead time.Duration
		want  int
	}{
		{60 * time.Second, http.StatusSeeOther},
		{maxSkew + 30*time.Second, http.StatusUnauthorized},
	} {
		t.Run(tt.ahead.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, true)
				state, loc := f.login()
				resp := f.answer(f.idp, loc)
				f.sp.cfg.Now = func() time.Time { return time.Now().Add(-tt.ahead) }
				if rec := f.post(site, state, resp); rec.Code != tt.want {
					t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
				}
			})
		})
	}
}

func TestSingleLogoutRequest(t *testing.T) {
	f := newFixture(t, true)
	f.idp.LogoutURL = *must(url.Parse("https://idp.test/slo"))
	md, _ := xml.Marshal(f.idp.Metadata())
	if err := os.WriteFile(f.sp.cfg.IDPMetadata, md, 0o600); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, site+"/auth/logout", nil)
	if u := f.sp.logoutURL(req, "not json", "/"); u != "" {
		t.Fatalf("a session without IdP data logs out at %q", u)
	}
	u := must(url.Parse(f.sp.logoutURL(req, `{"n":"buyer-42","i":"idx-1"}`, "/")))
	if u.Host != "idp.test" || u.Path != "/slo" || u.Query().Get("SAMLRequest") == "" || u.Query().Get("Signature") == "" {
		t.Fatalf("logout URL %s: want a signed LogoutRequest to the IdP's SLO", u)
	}
	rec := httptest.NewRecorder()
	f.sp.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, site+"/auth/saml/slo?SAMLRequest=x", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("IdP-initiated logout request: %d", rec.Code)
	}
}
