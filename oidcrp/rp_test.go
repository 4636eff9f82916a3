package oidcrp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/s360edge/s360edge/internal/field"
)

// namedUser adds a "name" claim, which mockoidc's default user lacks.
type namedUser struct {
	*mockoidc.MockUser
	name string
}

func (u namedUser) Claims(scopes []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c, err := u.MockUser.Claims(scopes, base)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var m jwt.MapClaims
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["name"] = u.name
	return m, nil
}

type env struct {
	t       *testing.T
	m       *mockoidc.MockOIDC
	rp      *RP
	srv     site
	net     memNet
	browser *http.Client

	refreshCalls  atomic.Int32
	exchangeCalls atomic.Int32
}

type envOptions struct {
	endSession bool
	cfg        func(*Config)
	// provider wraps the provider's handler, to observe or change it.
	provider func(http.Handler) http.Handler
}

// newEnv starts mockoidc and a site that serves the RP endpoints, a
// protected /app/ area (Require) and an open area that echoes the identity
// headers the website would receive.
func newEnv(t *testing.T, opt envOptions) *env {
	t.Helper()
	e := &env{t: t}
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	if err := m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == mockoidc.TokenEndpoint && r.ParseForm() == nil && r.PostForm.Get("client_id") != "" {
				switch r.PostForm.Get("grant_type") {
				case "refresh_token":
					e.refreshCalls.Add(1)
				case "authorization_code":
					e.exchangeCalls.Add(1)
				}
			}
			if r.URL.Path == mockoidc.DiscoveryEndpoint && opt.endSession {
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				var doc map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
					panic(err)
				}
				doc["end_session_endpoint"] = m.Addr() + "/oidc/logout?tenant=t1"
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(doc)
				return
			}
			next.ServeHTTP(w, r)
		})
	}); err != nil {
		t.Fatal(err)
	}
	if opt.provider != nil {
		if err := m.AddMiddleware(opt.provider); err != nil {
			t.Fatal(err)
		}
	}
	ln := &memListener{done: make(chan struct{})}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	e.srv.URL = "http://site.test"
	e.net = memNet{"site.test": nil, ln.Addr().String(): m.Server.Handler}

	cfg := Config{
		Issuer:       m.Issuer(),
		ClientID:     m.ClientID,
		ClientSecret: m.ClientSecret,
		CookieSecret: string(testSecret),
		HTTPClient:   &http.Client{Transport: e.net},
	}
	if opt.cfg != nil {
		opt.cfg(&cfg)
	}
	e.rp, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.net["site.test"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.rp.Handles(r.URL.Path) {
			e.rp.ServeHTTP(w, r)
			return
		}
		var id *Identity
		if strings.HasPrefix(r.URL.Path, "/app/") {
			var ok bool
			if id, ok = e.rp.Require(w, r); !ok {
				return
			}
		} else {
			id, _ = e.rp.Identify(w, r)
		}
		SetIdentityHeaders(r.Header, id)
		got := map[string]string{}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-s360-") {
				got[k] = r.Header.Get(k)
			}
		}
		writeJSON(w, http.StatusOK, got)
	})
	e.browser = e.newBrowser()
	return e
}

// site is where the test's website answers.
type site struct{ URL string }

// memNet serves requests in memory by host, so that tests can run in a synctest bubble: there
// network I/O would keep fake time from advancing (it is not durably blocking).
type memNet map[string]http.Handler

func (n memNet) RoundTrip(r *http.Request) (*http.Response, error) {
	h := n[r.URL.Host]
	if h == nil {
		return nil, fmt.Errorf("no host %s in the test's network", r.URL.Host)
	}
	in := r.Clone(r.Context())
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI, in.RemoteAddr = r.URL.RequestURI(), "192.0.2.1:40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, in)
	resp := w.Result()
	resp.Request = r
	return resp, nil
}

// memListener is the provider's listener: it never accepts, since memNet serves the
// provider's handler directly, and its blocked Accept is durable inside a bubble.
type memListener struct {
	done chan struct{}
	once sync.Once
}

func (l *memListener) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l *memListener) Close() error              { l.once.Do(func() { close(l.done) }); return nil }
func (l *memListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// newBrowser has a cookie jar and does not follow redirects: tests drive
// every hop.
func (e *env) newBrowser() *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: e.net, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type result struct {
	status int
	header http.Header
	body   []byte
	cookie map[string]*http.Cookie
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
	return v
}

func (e *env) do(c *http.Client, method, rawURL string, header http.Header) result {
	e.t.Helper()
	if strings.HasPrefix(rawURL, "/") {
		rawURL = e.srv.URL + rawURL
	}
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	res := result{status: resp.StatusCode, header: resp.Header, body: body, cookie: map[string]*http.Cookie{}}
	for _, ck := range resp.Cookies() {
		res.cookie[ck.Name] = ck
	}
	return res
}

func (e *env) get(c *http.Client, rawURL string) result {
	e.t.Helper()
	return e.do(c, http.MethodGet, rawURL, nil)
}

// startLogin runs /auth/login and the provider's authorize step, and
// returns the callback URL the provider sends the browser to.
func (e *env) startLogin(c *http.Client, returnTo string) *url.URL {
	e.t.Helper()
	res := e.get(c, "/auth/login?return_to="+url.QueryEscape(returnTo))
	if res.status != http.StatusFound {
		e.t.Fatalf("login: %d %s", res.status, res.body)
	}
	res = e.get(c, res.header.Get("Location"))
	if res.status != http.StatusFound {
		e.t.Fatalf("authorize: %d %s", res.status, res.body)
	}
	u, err := url.Parse(res.header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) login(c *http.Client, returnTo string) result {
	e.t.Helper()
	res := e.get(c, e.startLogin(c, returnTo).String())
	if res.status != http.StatusFound {
		e.t.Fatalf("callback: %d %s", res.status, res.body)
	}
	return res
}

// sessionOf opens the browser's session cookie, as the RP would.
func (e *env) sessionOf(c *http.Client) session {
	e.t.Helper()
	u, _ := url.Parse(e.srv.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == DefaultCookieName {
			s, err := e.rp.readSession(ck.Value)
			if err != nil {
				e.t.Fatal(err)
			}
			return s
		}
	}
	e.t.Fatal("no session cookie")
	return session{}
}

func TestLoginUserinfoIdentifyLogout(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.m.QueueUser(namedUser{MockUser: mockoidc.DefaultUser(), name: "Zoë Buyer"})

	// /auth/login: PKCE S256, state, nonce, and a locked-down state cookie.
	res := e.get(e.browser, "/auth/login?return_to="+url.QueryEscape("/app/seats?show=42"))
	if res.status != http.StatusFound {
		t.Fatalf("login: %d %s", res.status, res.body)
	}
	auth, _ := url.Parse(res.header.Get("Location"))
	q := auth.Query()
	if !strings.HasPrefix(auth.String(), e.m.AuthorizationEndpoint()) || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" ||
		q.Get("redirect_uri") != e.srv.URL+"/auth/callback" || q.Get("client_id") != e.m.ClientID {
		t.Fatalf("authorize URL %s", auth)
	}
	if !strings.Contains(q.Get("scope"), "openid") {
		t.Fatalf("scope %q", q.Get("scope"))
	}
	st := res.cookie["s360_session_state"]
	if st == nil || !st.HttpOnly || st.Path != "/auth/callback" || st.SameSite != http.SameSiteLaxMode || st.MaxAge != 600 || st.Secure {
		t.Fatalf("state cookie %+v", st)
	}

	// Provider, then callback: a session and back to return_to.
	res = e.get(e.browser, auth.String())
	res = e.get(e.browser, res.header.Get("Location"))
	if res.status != http.StatusFound || res.header.Get("Location") != "/app/seats?show=42" {
		t.Fatalf("callback: %d %v %s", res.status, res.header, res.body)
	}
	sc := res.cookie[DefaultCookieName]
	if sc == nil || !sc.HttpOnly || sc.Path != "/" || sc.SameSite != http.SameSiteLaxMode || sc.MaxAge <= 0 || len(sc.Value) > maxCookieValue {
		t.Fatalf("session cookie %+v", sc)
	}
	if c := res.cookie["s360_session_state"]; c == nil || c.MaxAge >= 0 {
		t.Fatalf("state cookie not cleared: %+v", c)
	}
	if e.exchangeCalls.Load() != 1 {
		t.Fatalf("exchanges = %d", e.exchangeCalls.Load())
	}

	// /auth/userinfo for the site's scripts.
	res = e.get(e.browser, "/auth/userinfo")
	if res.status != http.StatusOK || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("userinfo: %d %v %s", res.status, res.header, res.body)
	}
	ui := res.json(t)
	if ui["sub"] != "1234567890" || ui["email"] != "jane.doe@example.com" || ui["name"] != "Zoë Buyer" || ui["expires_at"] == "" {
		t.Fatalf("userinfo %v", ui)
	}

	// A protected page sees the verified headers; forged ones are gone.
	res = e.do(e.browser, http.MethodGet, "/app/seats", http.Header{
		"X-S360-User": {"admin"}, "X-S360-Role": {"operator"}, "Accept": {"text/html"},
	})
	if res.status != http.StatusOK {
		t.Fatalf("protected: %d %s", res.status, res.body)
	}
	h := res.json(t)
	if h["X-S360-User"] != "1234567890" || h["X-S360-Email"] != "jane.doe@example.com" || h["X-S360-Name"] != "Zoë Buyer" || len(h) != 3 {
		t.Fatalf("identity headers %v", h)
	}

	// Identify directly.
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	u, _ := url.Parse(e.srv.URL)
	for _, ck := range e.browser.Jar.Cookies(u) {
		req.AddCookie(ck)
	}
	id, err := e.rp.Identify(httptest.NewRecorder(), req)
	if err != nil || id == nil || id.Subject != "1234567890" || id.Claims["email"] != "jane.doe@example.com" {
		t.Fatalf("Identify = %+v, %v", id, err)
	}

	// Logout: cookie cleared, back to "/" (this provider has no end_session_endpoint).
	res = e.do(e.browser, http.MethodPost, "/auth/logout", nil)
	if res.status != http.StatusFound || res.header.Get("Location") != "/" {
		t.Fatalf("logout: %d %v", res.status, res.header)
	}
	if c := res.cookie[DefaultCookieName]; c == nil || c.MaxAge >= 0 {
		t.Fatalf("session cookie not cleared: %+v", c)
	}
	res = e.get(e.browser, "/auth/userinfo")
	if res.status != http.StatusUnauthorized || res.json(t)["error"] != "unauthenticated" || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("userinfo after logout: %d %s", res.status, res.body)
	}
	res = e.do(e.browser, http.MethodGet, "/open", http.Header{"X-S360-User": {"forged"}})
	if h := res.json(t); len(h) != 0 {
		t.Fatalf("anonymous request kept %v", h)
	}
}

func TestLogoutEndSession(t *testing.T) {
	e := newEnv(t, envOptions{endSession: true, cfg: func(c *Config) { c.PostLogoutRedirect = "/bye" }})
	e.login(e.browser, "/")
	idt := e.sessionOf(e.browser).IDT
	if idt == "" {
		t.Fatal("session has no ID token")
	}
	res := e.get(e.browser, "/auth/logout")
	loc, _ := url.Parse(res.header.Get("Location"))
	q := loc.Query()
	if res.status != http.StatusFound || !strings.HasPrefix(loc.String(), e.m.Addr()+"/oidc/logout?") ||
		q.Get("tenant") != "t1" || q.Get("id_token_hint") != idt || q.Get("client_id") != e.m.ClientID ||
		q.Get("post_logout_redirect_uri") != e.srv.URL+"/bye" {
		t.Fatalf("logout: %d %s", res.status, loc)
	}
	if c := res.cookie[DefaultCookieName]; c == nil || c.MaxAge >= 0 {
		t.Fatalf("session cookie not cleared: %+v", c)
	}
	// Without a session there is nothing to end at the provider.
	res = e.get(e.newBrowser(), "/auth/logout")
	if res.status != http.StatusFound || res.header.Get("Location") != "/bye" {
		t.Fatalf("anonymous logout: %d %v", res.status, res.header)
	}
}

func TestCallbackBadState(t *testing.T) {
	e := newEnv(t, envOptions{})
	cb := e.startLogin(e.browser, "/")
	bad := *cb
	q := bad.Query()
	q.Set("state", "not-the-state")
	bad.RawQuery = q.Encode()
	res := e.get(e.browser, bad.String())
	if res.status != http.StatusBadRequest || res.json(t)["error"] != "invalid_state" || res.cookie[DefaultCookieName] != nil {
		t.Fatalf("bad state: %d %s %v", res.status, res.body, res.cookie)
	}
	if e.exchangeCalls.Load() != 0 {
		t.Fatal("code exchanged despite bad state")
	}
	// The genuine answer still completes: the state cookie was kept.
	res = e.get(e.browser, cb.String())
	if res.status != http.StatusFound || res.cookie[DefaultCookieName] == nil {
		t.Fatalf("genuine callback: %d %s", res.status, res.body)
	}
}

func TestCallbackMissingStateCookie(t *testing.T) {
	e := newEnv(t, envOptions{})
	cb := e.startLogin(e.browser, "/")
	res := e.get(e.newBrowser(), cb.String()) // another browser: no state cookie
	if res.status != http.StatusBadRequest || res.json(t)["error"] != "invalid_state" || res.cookie[DefaultCookieName] != nil {
		t.Fatalf("missing state cookie: %d %s", res.status, res.body)
	}
}

func TestCallbackReplayedCode(t *testing.T) {
	e := newEnv(t, envOptions{})
	first := e.startLogin(e.browser, "/")
	if res := e.get(e.browser, first.String()); res.status != http.StatusFound {
		t.Fatalf("first callback: %d %s", res.status, res.body)
	}
	// Replaying the same answer: its state cookie is gone.
	if res := e.get(e.browser, first.String()); res.status != http.StatusBadRequest || res.json(t)["error"] != "invalid_state" {
		t.Fatalf("replayed answer: %d %s", res.status, res.body)
	}
	// An attacker's browser with a valid login state of its own, given the
	// already used code: the provider refuses it, no session.
	other := e.newBrowser()
	own := e.startLogin(other, "/")
	q := own.Query()
	q.Set("code", first.Query().Get("code"))
	own.RawQuery = q.Encode()
	res := e.get(other, own.String())
	if res.status != http.StatusBadRequest || res.cookie[DefaultCookieName] != nil {
		t.Fatalf("replayed code: %d %s %v", res.status, res.body, res.cookie)
	}
	if j := res.json(t); j["error"] != "code_rejected" || j["provider_error"] != "invalid_grant" {
		t.Fatalf("replayed code: %v", j)
	}
	if res := e.get(other, "/auth/userinfo"); res.status != http.StatusUnauthorized {
		t.Fatalf("userinfo: %d", res.status)
	}
}

func TestCallbackProviderError(t *testing.T) {
	e := newEnv(t, envOptions{})
	cb := e.startLogin(e.browser, "/")
	q := url.Values{"state": {cb.Query().Get("state")}, "error": {"access_denied<script>"}, "error_description": {"<b>no</b>"}}
	res := e.get(e.browser, "/auth/callback?"+q.Encode())
	if res.status != http.StatusBadRequest || !strings.HasPrefix(res.header.Get("Content-Type"), "application/json") || res.cookie[DefaultCookieName] != nil {
		t.Fatalf("provider error: %d %v %s", res.status, res.header, res.body)
	}
	if bytes.Contains(res.body, []byte("<")) {
		t.Fatalf("markup not escaped: %s", res.body)
	}
	if j := res.json(t); j["error"] != "provider_error" || j["provider_error"] != "access_denied<script>" {
		t.Fatalf("provider error: %v", j)
	}
}

func TestSessionExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: func(c *Config) { c.SessionTTL = time.Hour }})
		e.login(e.browser, "/")
		// The browser's jar drops the cookie at its Max-Age; a skewed browser clock would not.
		u, _ := url.Parse(e.srv.URL)
		var sent []string
		for _, c := range e.browser.Jar.Cookies(u) {
			sent = append(sent, c.String())
		}
		time.Sleep(time.Hour + time.Second)

		api := &http.Client{Transport: e.net}
		res := e.do(api, http.MethodGet, "/app/orders", http.Header{"Accept": {"application/json"}, "Cookie": {strings.Join(sent, "; ")}})
		j := res.json(t)
		if res.status != http.StatusUnauthorized || j["error"] != "login_required" || j["login_url"] != "/auth/login?return_to=%2Fapp%2Forders" ||
			!strings.Contains(j["message"].(string), "expired") {
			t.Fatalf("expired API request: %d %v", res.status, j)
		}
		if c := res.cookie[DefaultCookieName]; c == nil || c.MaxAge >= 0 {
			t.Fatalf("expired cookie not cleared: %+v", c)
		}
		if e.refreshCalls.Load() != 0 {
			t.Fatal("an expired session was refreshed")
		}
	})
}

func TestRefreshBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.login(e.browser, "/")
		before := e.sessionOf(e.browser)
		if before.RT == "" {
			t.Fatal("no refresh token in the session")
		}

		// Shortly before the 10-minute ID token expires.
		step := 9*time.Minute + 30*time.Second
		time.Sleep(step)
		res := e.get(e.browser, "/auth/userinfo")
		if res.status != http.StatusOK || res.cookie[DefaultCookieName] == nil {
			t.Fatalf("userinfo near expiry: %d %s", res.status, res.body)
		}
		if n := e.refreshCalls.Load(); n != 1 {
			t.Fatalf("refreshes = %d", n)
		}
		after := e.sessionOf(e.browser)
		if after.TokExp <= before.TokExp || after.IDT == before.IDT || after.Sub != before.Sub || after.Exp != before.Exp {
			t.Fatalf("session not refreshed: before %+v after %+v", before, after)
		}

		// Past the first token's expiry, the refreshed session still works
		// without another refresh.
		time.Sleep(3 * time.Minute)
		if res := e.get(e.browser, "/auth/userinfo"); res.status != http.StatusOK {
			t.Fatalf("userinfo after refresh: %d %s", res.status, res.body)
		}
		if n := e.refreshCalls.Load(); n != 1 {
			t.Fatalf("refreshes = %d", n)
		}

		// Once the provider no longer honours the refresh token (its 1h life is
		// over) and the ID token has expired, the session ends.
		time.Sleep(time.Hour)
		res = e.do(e.browser, http.MethodGet, "/app/x", http.Header{"Accept": {"text/html"}})
		if res.status != http.StatusFound || res.header.Get("Location") != "/auth/login?return_to=%2Fapp%2Fx" {
			t.Fatalf("after refresh token expiry: %d %v %s", res.status, res.header, res.body)
		}
	})
}

func TestConcurrentRefreshOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.login(e.browser, "/")
		step := 9*time.Minute + 30*time.Second
		time.Sleep(step)

		u, _ := url.Parse(e.srv.URL)
		cookies := e.browser.Jar.Cookies(u)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				for _, ck := range cookies {
					req.AddCookie(ck)
				}
				rec := httptest.NewRecorder()
				id, err := e.rp.Identify(rec, req)
				if err == nil && (id == nil || len(rec.Result().Cookies()) != 1) {
					err = errors.New("no identity or no refreshed cookie")
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := e.refreshCalls.Load(); n != 1 {
			t.Fatalf("refreshes = %d, want 1 for one refresh token", n)
		}
	})
}

func TestBearer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.login(e.browser, "/")
		idt := e.sessionOf(e.browser).IDT
		api := &http.Client{Transport: e.net} // no cookies

		bearer := func(tok string) http.Header {
			return http.Header{"Authorization": {"Bearer " + tok}, "Accept": {"application/json"}}
		}
		res := e.do(api, http.MethodGet, "/app/orders", bearer(idt))
		if res.status != http.StatusOK || res.json(t)["X-S360-User"] != "1234567890" {
			t.Fatalf("bearer: %d %s", res.status, res.body)
		}
		res = e.do(api, http.MethodGet, "/auth/userinfo", bearer(idt))
		if res.status != http.StatusOK || res.json(t)["email"] != "jane.doe@example.com" {
			t.Fatalf("bearer userinfo: %d %s", res.status, res.body)
		}

		parts := strings.Split(idt, ".")
		payload := []byte(parts[1])
		payload[len(payload)/2] ^= 0x01
		tampered := parts[0] + "." + string(payload) + "." + parts[2]

		now := e.m.Now()
		otherAud, err := e.m.Keypair.SignJWT(jwt.MapClaims{
			"iss": e.m.Issuer(), "aud": "another-client", "sub": "1234567890",
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		})
		if err != nil {
			t.Fatal(err)
		}
		otherIss, err := e.m.Keypair.SignJWT(jwt.MapClaims{
			"iss": "https://evil.example", "aud": e.m.ClientID, "sub": "1234567890",
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		})
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"tampered": tampered, "other audience": otherAud, "other issuer": otherIss, "garbage": "abc"} {
			res := e.do(api, http.MethodGet, "/app/orders", bearer(tok))
			if res.status != http.StatusUnauthorized || res.json(t)["error"] != "invalid_token" || !strings.Contains(res.header.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("%s: %d %s", name, res.status, res.body)
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if id, err := e.rp.Identify(nil, req); id != nil || !errors.Is(err, ErrInvalidToken) {
				t.Errorf("%s: Identify = %v, %v", name, id, err)
			}
		}

		// Expired.
		time.Sleep(11 * time.Minute)
		res = e.do(api, http.MethodGet, "/auth/userinfo", bearer(idt))
		if res.status != http.StatusUnauthorized {
			t.Fatalf("expired bearer: %d %s", res.status, res.body)
		}
	})
}

// flakyTransport fails the first n discovery requests.
type flakyTransport struct {
	n         atomic.Int32
	discovery atomic.Int32
	next      http.RoundTripper
}

func (f *flakyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
		if f.discovery.Add(1) <= f.n.Load() {
			return nil, errors.New("connection refused (test)")
		}
	}
	return f.next.RoundTrip(r)
}

func TestDiscoveryRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := &flakyTransport{}
		ft.n.Store(1)
		e := newEnv(t, envOptions{cfg: func(c *Config) { c.HTTPClient = &http.Client{Transport: ft} }})
		ft.next = e.net
		if ft.discovery.Load() != 0 {
			t.Fatal("New did network I/O")
		}
		res := e.get(e.browser, "/auth/login")
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "provider_unavailable" || res.header.Get("Retry-After") == "" {
			t.Fatalf("first login: %d %v %s", res.status, res.header, res.body)
		}
		// Within the backoff, no new attempt.
		res = e.get(e.browser, "/auth/login")
		if res.status != http.StatusServiceUnavailable || ft.discovery.Load() != 1 {
			t.Fatalf("second login: %d, discoveries %d", res.status, ft.discovery.Load())
		}
		time.Sleep(discoveryRetry)
		e.login(e.browser, "/")
		if res := e.get(e.browser, "/auth/userinfo"); res.status != http.StatusOK {
			t.Fatalf("userinfo: %d", res.status)
		}
		if n := ft.discovery.Load(); n != 2 {
			t.Fatalf("discoveries = %d", n)
		}
	})
}

func TestRequireAnonymous(t *testing.T) {
	e := newEnv(t, envOptions{})
	html := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	self := "/app/book?show=1&seat=2"
	for _, tc := range []struct {
		name, method string
		header       http.Header
		status       int    // 302/303 to login, or 401 JSON
		back         string // return_to
	}{
		{"browser navigation", "GET", http.Header{"Accept": {html}, "Sec-Fetch-Mode": {"navigate"}}, http.StatusFound, self},
		{"old browser", "GET", http.Header{"Accept": {html}}, http.StatusFound, self},
		{"fetch", "GET", http.Header{"Accept": {html}, "Sec-Fetch-Mode": {"cors"}}, http.StatusUnauthorized, self},
		{"xhr", "GET", http.Header{"Accept": {html}, "X-Requested-With": {"XMLHttpRequest"}}, http.StatusUnauthorized, self},
		{"json", "GET", http.Header{"Accept": {"application/json"}}, http.StatusUnauthorized, self},
		{"json preferred", "GET", http.Header{"Accept": {"application/json, text/html;q=0.5"}}, http.StatusUnauthorized, self},
		{"any", "GET", http.Header{"Accept": {"*/*"}}, http.StatusUnauthorized, self},
		{"form post comes back to its page", "POST", http.Header{"Accept": {html}, "Referer": {"SELF/show/7"}}, http.StatusSeeOther, "/show/7"},
		{"form post without referer", "POST", http.Header{"Accept": {html}}, http.StatusSeeOther, "/"},
		{"fetch post comes back to its page", "POST", http.Header{"Accept": {"application/json"}, "Referer": {"SELF/show/7?x=1"}}, http.StatusUnauthorized, "/show/7?x=1"},
		{"foreign referer is ignored", "POST", http.Header{"Accept": {"application/json"}, "Referer": {"https://evil.example/x"}}, http.StatusUnauthorized, "/"},
	} {
		if ref := tc.header.Get("Referer"); strings.HasPrefix(ref, "SELF") {
			tc.header.Set("Referer", e.srv.URL+strings.TrimPrefix(ref, "SELF"))
		}
		res := e.do(e.browser, tc.method, self, tc.header)
		want := "/auth/login?return_to=" + url.QueryEscape(tc.back)
		if tc.status != http.StatusUnauthorized {
			if res.status != tc.status || res.header.Get("Location") != want {
				t.Errorf("%s: %d %v, want %d to %s", tc.name, res.status, res.header, tc.status, want)
			}
			continue
		}
		if res.status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", tc.name, res.status, res.body)
			continue
		}
		if j := res.json(t); j["error"] != "login_required" || j["login_url"] != want || j["message"] == "" {
			t.Errorf("%s: %v, want login_url %s", tc.name, j, want)
		}
	}
}

func TestSecureCookiesBehindTLSProxy(t *testing.T) {
	e := newEnv(t, envOptions{})
	req := httptest.NewRequest(http.MethodGet, "http://shop.example/auth/login?return_to=/x", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	rec := httptest.NewRecorder()
	e.rp.ServeHTTP(rec, req)
	res := rec.Result()
	loc, _ := url.Parse(res.Header.Get("Location"))
	if got := loc.Query().Get("redirect_uri"); got != "https://shop.example/auth/callback" {
		t.Fatalf("redirect_uri %q", got)
	}
	if c := res.Cookies(); len(c) != 1 || !c[0].Secure {
		t.Fatalf("cookies %+v", c)
	}
}

func TestSessionCookieSizeLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		s := session{ID: "id", Sub: "sub", Exp: time.Now().Add(time.Hour).Unix(), TokExp: time.Now().Add(time.Minute).Unix(),
			RT: strings.Repeat("r", 500), IDT: strings.Repeat("i", 4000)}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, tc := range []struct {
			name       string
			s          session
			keepRT     bool
			keepIDT    bool
			wantFitted bool
		}{
			{"small", session{ID: "id", Sub: "sub", Exp: s.Exp, TokExp: s.TokExp, RT: "rt", IDT: "idt"}, true, true, true},
			{"big ID token", s, true, false, true},
			{"big both", session{ID: "id", Sub: "sub", Exp: s.Exp, TokExp: s.TokExp, RT: strings.Repeat("r", 4000), IDT: "x"}, false, false, true},
		} {
			rec := httptest.NewRecorder()
			if err := e.rp.setSession(rec, req, tc.s); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			c := rec.Result().Cookies()[0]
			if len(c.String()) >= 4096 {
				t.Fatalf("%s: cookie is %d bytes", tc.name, len(c.String()))
			}
			got, err := e.rp.readSession(c.Value)
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
	ok := Config{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", CookieSecret: string(testSecret)}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no issuer":       func(c *Config) { c.Issuer = "" },
		"relative issuer": func(c *Config) { c.Issuer = "idp.example" },
		"no client":       func(c *Config) { c.ClientID = "" },
		"no secret":       func(c *Config) { c.ClientSecret = "" },
		"short cookie":    func(c *Config) { c.CookieSecret = "too short" },
		"relative redir":  func(c *Config) { c.RedirectURL = "/auth/callback" },
		"bad path":        func(c *Config) { c.LoginPath = "auth/login" },
		"same paths":      func(c *Config) { c.LogoutPath = DefaultLoginPath },
		"bad cookie name": func(c *Config) { c.CookieName = "a b" },
	} {
		c := ok
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err := New(Config{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", CookieSecret: "short"})
	if err == nil || !strings.Contains(err.Error(), "cookie_secret: too short; set it to at least 32 random characters") {
		t.Fatalf("short secret error %v", err)
	}
	// Every error names its setting, as the Caddyfile spells it, for the
	// caller to name the block it sits in.
	_, err = New(Config{RedirectURL: "/cb", TokenAuth: "x", Protect: []string{"account"}})
	var names []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *field.Error
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *field.Error", e)
		}
		names = append(names, fe.Name)
	}
	if got := strings.Join(names, " "); got != "issuer client_id client_secret cookie_secret redirect_url token_auth protect" {
		t.Fatalf("errors of %s, in %v", got, err)
	}
	if !strings.Contains(err.Error(), "cookie_secret: missing;") {
		t.Fatalf("an empty cookie secret is not reported missing: %v", err)
	}
}

func TestCallbackNonceMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		cb := e.startLogin(e.browser, "/")
		// Rewrite the sealed login state with another nonce, as if the ID token
		// had been minted for a different login.
		u, _ := url.Parse(e.srv.URL + "/auth/callback")
		var st loginState
		for _, ck := range e.browser.Jar.Cookies(u) {
			if ck.Name == "s360_session_state" {
				payload, err := e.rp.state.decode(ck.Value, time.Now())
				if err != nil || json.Unmarshal(payload, &st) != nil {
					t.Fatalf("state cookie: %v", err)
				}
			}
		}
		st.Nonce = "another-nonce"
		payload, _ := json.Marshal(st)
		v, err := e.rp.state.encode(payload, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		e.browser.Jar.SetCookies(u, []*http.Cookie{{Name: "s360_session_state", Value: v, Path: "/auth/callback"}})
		res := e.get(e.browser, cb.String())
		if res.status != http.StatusBadGateway || res.json(t)["error"] != "invalid_id_token" || res.cookie[DefaultCookieName] != nil {
			t.Fatalf("nonce mismatch: %d %s", res.status, res.body)
		}
	})
}
