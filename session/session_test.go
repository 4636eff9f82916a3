package session

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/internal/field"
)

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.CookieSecret == "" {
		cfg.CookieSecret = string(testSecret)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

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

// sealed is s as its session cookie value.
func sealed(t *testing.T, m *Manager, s Session) string {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := m.set(rec, httptest.NewRequest(http.MethodGet, "/", nil), s); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()[0].Value
}

func TestStartWithoutProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{})
		for path, want := range map[string]bool{"/auth/login": false, "/auth/callback": false, "/auth/logout": true, "/auth/userinfo": true} {
			if m.Handles(path) != want {
				t.Errorf("Handles(%s) = %v, want %v", path, !want, want)
			}
		}
		rec := httptest.NewRecorder()
		until := time.Now().Add(time.Hour)
		if err := m.Start(rec, httptest.NewRequest(http.MethodPost, "/auth/saml/acs", nil), Session{Via: "saml", Sub: "buyer-1", Email: "b@example.com", Name: "B\r\nX", Exp: until.Unix()}); err != nil {
			t.Fatal(err)
		}
		id, err := m.Identify(nil, sessionFrom(t, rec, "/"))
		if err != nil || id == nil || id.Subject != "buyer-1" || id.Email != "b@example.com" || id.Expiry.Unix() != until.Unix() {
			t.Fatalf("identity %+v, %v", id, err)
		}
		h := http.Header{}
		SetIdentityHeaders(h, id)
		if h.Get("X-S360-Name") != "BX" {
			t.Fatalf("X-S360-Name = %q", h.Get("X-S360-Name"))
		}
		time.Sleep(time.Hour)
		if id, err := m.Identify(nil, sessionFrom(t, rec, "/")); id != nil || !errors.Is(err, ErrSessionExpired) {
			t.Fatalf("after the IdP's session end: %+v, %v", id, err)
		}

		bearer := httptest.NewRequest(http.MethodGet, "/", nil)
		bearer.Header.Set("Authorization", "Bearer x.y.z")
		if _, err := m.Identify(nil, bearer); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("bearer without a provider: %v", err)
		}
		if err := m.Start(httptest.NewRecorder(), bearer, Session{Via: "saml"}); err == nil {
			t.Fatal("a session without a subject was started")
		}
		if err := m.Start(httptest.NewRecorder(), bearer, Session{Via: "saml", Sub: strings.Repeat("s", 256)}); err == nil {
			t.Fatal("a session with a 256-byte subject was started")
		}
	})
}

func TestSessionTTLCapsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{SessionTTL: time.Minute})
		rec := httptest.NewRecorder()
		if err := m.Start(rec, httptest.NewRequest(http.MethodPost, "/", nil), Session{Via: "saml", Sub: "b", Exp: time.Now().Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
		id, _ := m.Identify(nil, sessionFrom(t, rec, "/"))
		if id == nil || id.Expiry.Unix() != time.Now().Add(time.Minute).Unix() {
			t.Fatalf("identity %+v", id)
		}
	})
}

func TestSealer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{})
		a, _ := m.Sealer("a")
		b, _ := m.Sealer("b")
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

// logout runs the logout endpoint with the session rec's cookie holds.
func logout(t *testing.T, m *Manager, rec *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	t.Helper()
	out := httptest.NewRecorder()
	m.ServeHTTP(out, sessionFrom(t, rec, "http://site.test/auth/logout"))
	return out
}

func TestOnLogoutSendsToTheLoginMethod(t *testing.T) {
	m := newManager(t, Config{PostLogoutRedirect: "/bye"})
	var got Session
	var gotBack string
	m.OnLogout("saml", func(_ *http.Request, s Session, back string) string {
		got, gotBack = s, back
		return "https://shop.example/slo?x=1"
	})
	rec := httptest.NewRecorder()
	if err := m.Start(rec, httptest.NewRequest(http.MethodPost, "/", nil), Session{Via: "saml", Sub: "b", Ext: `{"n":"b"}`}); err != nil {
		t.Fatal(err)
	}
	res := logout(t, m, rec)
	if res.Code != http.StatusFound || res.Header().Get("Location") != "https://shop.example/slo?x=1" {
		t.Fatalf("logout: %d %v", res.Code, res.Header())
	}
	if got.Ext != `{"n":"b"}` || got.Sub != "b" || gotBack != "http://site.test/bye" {
		t.Fatalf("hook got session %+v back %q", got, gotBack)
	}
	if id, err := m.Identify(nil, sessionFrom(t, rec, "/")); id != nil || !errors.Is(err, ErrInvalidSession) {
		t.Fatalf("after logout: %+v, %v; want the session revoked", id, err)
	}
}

// A session whose login method has no logout of its own ends here.
func TestLogoutWithoutHookStaysHere(t *testing.T) {
	m := newManager(t, Config{PostLogoutRedirect: "/bye"})
	m.OnLogout("", func(*http.Request, Session, string) string { return "https://idp.example/logout" })
	rec := httptest.NewRecorder()
	if err := m.Start(rec, httptest.NewRequest(http.MethodPost, "/", nil), Session{Via: "saml", Sub: "b"}); err != nil {
		t.Fatal(err)
	}
	if res := logout(t, m, rec); res.Code != http.StatusFound || res.Header().Get("Location") != "/bye" {
		t.Fatalf("logout: %d %v", res.Code, res.Header())
	}
}

func TestSessionWithoutIDRefused(t *testing.T) {
	m := newManager(t, Config{})
	s := Session{Sub: "sub", Exp: time.Now().Add(time.Hour).Unix(), TokExp: time.Now().Add(time.Hour).Unix()}
	if _, err := m.read(sealed(t, m, s)); !errors.Is(err, ErrInvalidSession) {
		t.Fatalf("session without an id: %v, want ErrInvalidSession", err)
	}
	s.ID = "some-id"
	if _, err := m.read(sealed(t, m, s)); err != nil {
		t.Fatalf("same session with an id: %v", err)
	}
}

func TestSessionCookieSizeLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{})
		s := Session{ID: "id", Sub: "sub", Exp: time.Now().Add(time.Hour).Unix(), TokExp: time.Now().Add(time.Minute).Unix(),
			RT: strings.Repeat("r", 500), IDT: strings.Repeat("i", 4000)}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, tc := range []struct {
			name    string
			s       Session
			keepRT  bool
			keepIDT bool
		}{
			{"small", Session{ID: "id", Sub: "sub", Exp: s.Exp, TokExp: s.TokExp, RT: "rt", IDT: "idt"}, true, true},
			{"big ID token", s, true, false},
			{"big both", Session{ID: "id", Sub: "sub", Exp: s.Exp, TokExp: s.TokExp, RT: strings.Repeat("r", 4000), IDT: "x"}, false, false},
		} {
			rec := httptest.NewRecorder()
			if err := m.set(rec, req, tc.s); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			c := rec.Result().Cookies()[0]
			if len(c.String()) >= 4096 {
				t.Fatalf("%s: cookie is %d bytes", tc.name, len(c.String()))
			}
			got, err := m.read(c.Value)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if (got.RT != "") != tc.keepRT || (got.IDT != "") != tc.keepIDT {
				t.Fatalf("%s: kept RT=%v IDT=%v", tc.name, got.RT != "", got.IDT != "")
			}
		}
	})
}

func TestSanitizeReturnTo(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "/",
		"/":                    "/",
		"/ok?x=1":              "/ok?x=1",
		"/app/book?a=b#frag":   "/app/book?a=b#frag",
		"//evil.com":           "/",
		"///evil.com":          "/",
		"/\\evil.com":          "/",
		"/a\\b":                "/",
		"https://evil.com":     "/",
		"http:/evil.com":       "/",
		"javascript:alert(1)":  "/",
		"evil.com":             "/",
		"/\t/evil.com":         "/",
		"/\n/evil.com":         "/",
		"/ok%2F%2Fstill-local": "/ok%2F%2Fstill-local",
	} {
		if got := SanitizeReturnTo(in); got != want {
			t.Errorf("SanitizeReturnTo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSetIdentityHeaders(t *testing.T) {
	h := http.Header{"X-S360-User": {"forged"}, "X-S360-Admin": {"1"}, "Accept": {"*/*"}}
	h["x-s360-raw"] = []string{"not canonical"}
	SetIdentityHeaders(h, nil)
	if len(h) != 1 || h.Get("Accept") != "*/*" {
		t.Fatalf("anonymous: %v", h)
	}
	h = http.Header{"X-S360-User": {"forged"}}
	SetIdentityHeaders(h, &Identity{Subject: "u1", Email: "a@b.c", Name: "Eve\r\nX-S360-Admin: 1"})
	if h.Get("X-S360-User") != "u1" || h.Get("X-S360-Email") != "a@b.c" || h.Get("X-S360-Name") != "EveX-S360-Admin: 1" || len(h) != 3 {
		t.Fatalf("identified: %v", h)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{CookieSecret: string(testSecret)}); err != nil {
		t.Fatal(err)
	}
	// Each error names its setting, as the Caddyfile spells it, for the
	// caller to name the block it sits in.
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "cookie_secret: missing;"},
		{Config{CookieSecret: "short"}, "cookie_secret: too short; set it to at least 32 random characters"},
		{Config{CookieSecret: string(testSecret), Prefix: "auth"}, `path_prefix: "auth" does not start with /`},
		{Config{CookieSecret: string(testSecret), CookieName: "a b"}, `cookie_name: "a b" is not a valid cookie name`},
		{Config{CookieSecret: string(testSecret), PostLogoutRedirect: "bye"}, `post_logout_redirect: "bye" is neither a path nor an absolute URL`},
	} {
		_, err := New(tc.cfg)
		var fe *field.Error
		if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want a *field.Error %q", tc.cfg, err, tc.want)
		}
	}
}
