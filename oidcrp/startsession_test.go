package oidcrp

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// sessionFrom returns a request carrying the session cookie set on rec.
func sessionFrom(t *testing.T, rec *httptest.ResponseRecorder, target string) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for _, c := range rec.Result().Cookies() {
		if c.Name == DefaultCookieName {
			req.AddCookie(c)
			return req
		}
	}
	t.Fatal("no session cookie set")
	return nil
}

func TestStartSessionWithoutProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rp, err := New(Config{NoProvider: true, CookieSecret: string(testSecret)})
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]bool{DefaultLoginPath: false, DefaultCallbackPath: false, DefaultLogoutPath: true, DefaultUserinfoPath: true} {
			if rp.Handles(path) != want {
				t.Errorf("Handles(%s) = %v, want %v", path, !want, want)
			}
		}
		rec := httptest.NewRecorder()
		until := time.Now().Add(time.Hour)
		if err := rp.StartSession(rec, httptest.NewRequest(http.MethodPost, "/auth/saml/acs", nil), Login{Via: "saml", Subject: "buyer-1", Email: "b@example.com", Name: "B\r\nX", Until: until}); err != nil {
			t.Fatal(err)
		}
		id, err := rp.Identify(nil, sessionFrom(t, rec, "/"))
		if err != nil || id == nil || id.Subject != "buyer-1" || id.Email != "b@example.com" || id.Expiry.Unix() != until.Unix() {
			t.Fatalf("identity %+v, %v", id, err)
		}
		h := http.Header{}
		SetIdentityHeaders(h, id)
		if h.Get("X-S360-Name") != "BX" {
			t.Fatalf("X-S360-Name = %q", h.Get("X-S360-Name"))
		}
		time.Sleep(time.Hour)
		if id, err := rp.Identify(nil, sessionFrom(t, rec, "/")); id != nil || !errors.Is(err, ErrSessionExpired) {
			t.Fatalf("after the IdP's session end: %+v, %v", id, err)
		}

		bearer := httptest.NewRequest(http.MethodGet, "/", nil)
		bearer.Header.Set("Authorization", "Bearer x.y.z")
		if _, err := rp.Identify(nil, bearer); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("bearer without a provider: %v", err)
		}
		if err := rp.StartSession(httptest.NewRecorder(), bearer, Login{Via: "saml"}); err == nil {
			t.Fatal("a session without a subject was started")
		}
		if err := rp.StartSession(httptest.NewRecorder(), bearer, Login{Via: "saml", Subject: strings.Repeat("s", 256)}); err == nil {
			t.Fatal("a session with a 256-byte subject was started")
		}
	})
}

func TestSessionTTLCapsStartSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rp, _ := New(Config{NoProvider: true, CookieSecret: string(testSecret), SessionTTL: time.Minute})
		rec := httptest.NewRecorder()
		if err := rp.StartSession(rec, httptest.NewRequest(http.MethodPost, "/", nil), Login{Via: "saml", Subject: "b"}); err != nil {
			t.Fatal(err)
		}
		id, _ := rp.Identify(nil, sessionFrom(t, rec, "/"))
		if id == nil || id.Expiry.Unix() != time.Now().Add(time.Minute).Unix() {
			t.Fatalf("identity %+v", id)
		}
	})
}

// A SAML session logs out here only: the OIDC provider's end-session
// endpoint knows nothing of it.
func TestLogoutOfSAMLSessionStaysHere(t *testing.T) {
	e := newEnv(t, envOptions{endSession: true, cfg: func(c *Config) { c.PostLogoutRedirect = "/bye" }})
	rec := httptest.NewRecorder()
	if err := e.rp.StartSession(rec, httptest.NewRequest(http.MethodPost, "/", nil), Login{Via: "saml", Subject: "b"}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.srv.URL)
	e.browser.Jar.SetCookies(u, rec.Result().Cookies())
	if v := e.get(e.browser, "/auth/userinfo").json(t); v["sub"] != "b" {
		t.Fatalf("userinfo: %v", v)
	}
	res := e.get(e.browser, "/auth/logout")
	if res.status != http.StatusFound || res.header.Get("Location") != "/bye" {
		t.Fatalf("logout: %d %v", res.status, res.header)
	}
}

func TestSealer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rp, _ := New(Config{NoProvider: true, CookieSecret: string(testSecret)})
		a, _ := rp.Sealer("a")
		b, _ := rp.Sealer("b")
		v, err := a.Seal([]byte("x"), time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if p, err := a.Open(v); err != nil || string(p) != "x" {
			t.Fatalf("open: %q %v", p, err)
		}
		if _, err := b.Open(v); err == nil {
			t.Fatal("a value sealed for one cookie opened as another")
		}
		time.Sleep(time.Minute)
		if _, err := a.Open(v); err == nil {
			t.Fatal("an expired value opened")
		}
	})
}

func TestOnLogoutSendsToTheLoginMethod(t *testing.T) {
	e := newEnv(t, envOptions{endSession: true, cfg: func(c *Config) { c.PostLogoutRedirect = "/bye" }})
	var gotExt, gotBack string
	e.rp.OnLogout("saml", func(_ *http.Request, ext, back string) string {
		gotExt, gotBack = ext, back
		return "https://shop.example/slo?x=1"
	})
	rec := httptest.NewRecorder()
	if err := e.rp.StartSession(rec, httptest.NewRequest(http.MethodPost, "/", nil), Login{Via: "saml", Subject: "b", Ext: `{"n":"b"}`}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.srv.URL)
	e.browser.Jar.SetCookies(u, rec.Result().Cookies())
	res := e.get(e.browser, "/auth/logout")
	if res.status != http.StatusFound || res.header.Get("Location") != "https://shop.example/slo?x=1" {
		t.Fatalf("logout: %d %v", res.status, res.header)
	}
	if gotExt != `{"n":"b"}` || gotBack != e.srv.URL+"/bye" {
		t.Fatalf("hook got ext %q back %q", gotExt, gotBack)
	}
	if r := e.get(e.browser, "/auth/userinfo"); r.status != http.StatusUnauthorized {
		t.Fatalf("userinfo after logout: %d", r.status)
	}
}
