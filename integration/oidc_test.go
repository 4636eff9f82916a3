package integration

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// The buyer-login tests run the real sidecar binary against mockoidc, a
// real OIDC provider implementation started in the test process on a
// loopback port: discovery, JWKS, the code exchange and the token
// verification all go over HTTP between the two processes. The test plays
// the browser with a cookie jar and drives every redirect by hand, so each
// hop of the authorization code flow is asserted.

const (
	orderPath    = api + "externalOrderFacade/v1_33/createOrUpdateOrder"
	orderCounter = "externalOrderFacade/createOrUpdateOrder"
	// browserAccept is what Chromium sends on a page navigation.
	browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)

// oidcCaddyfile is the sidecar with buyer login, in front of the simulator
// (also the shop) and the provider p. Orders need a logged-in buyer. The
// website is the static files under root; when echo is not empty, /echo*
// goes to that backend instead (reverse_proxy runs after s360, so it sees
// the identity headers s360 sets, as a real website backend would).
func oidcCaddyfile(s *sim, p *mockoidc.MockOIDC, root, echo string) string {
	site := []string{"root * " + root, "file_server"}
	if echo != "" {
		site = append(site, "reverse_proxy /echo* "+strings.TrimPrefix(echo, "http://"))
	}
	return pollsOffCaddyfile(s.URL, oidcLogin(p.Issuer(), p.ClientID, "protect /tnseb/backend-apis/externalOrderFacade/*"), site...)
}

// oidcEnv is the environment that carries the secrets of oidcCaddyfile.
func oidcEnv(t *testing.T, p *mockoidc.MockOIDC) []string {
	t.Helper()
	return oidcEnvSecret(t, p.ClientSecret)
}

// oidcEnvSecret is that environment for a provider whose client secret is
// clientSecret, with a fresh cookie key.
func oidcEnvSecret(t *testing.T, clientSecret string) []string {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	return []string{"OIDC_CLIENT_SECRET=" + clientSecret, "S360_COOKIE_KEY=" + base64.StdEncoding.EncodeToString(key)}
}

// startProvider runs mockoidc on a random loopback port until the test ends.
func startProvider(t *testing.T) *mockoidc.MockOIDC {
	t.Helper()
	p, err := mockoidc.Run()
	if err != nil {
		t.Fatalf("starting mockoidc: %v", err)
	}
	t.Cleanup(func() { p.Shutdown() })
	return p
}

// echoWebsite is a website backend that answers every request with the
// X-S360-* headers it received, as JSON.
func echoWebsite(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := map[string][]string{}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-s360-") {
				got[k] = v
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(got)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// client is one browser: its own cookie jar, redirects not followed.
type client struct {
	name string
	jar  *cookiejar.Jar
	http *http.Client
}

func newClient(name string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{name: name, jar: jar, http: &http.Client{
		Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type reply struct {
	method, url string
	status      int
	hdr         http.Header
	body        []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%s %s → %d Location=%q %.500s", r.method, r.url, r.status, r.hdr.Get("Location"), r.body)
}

// cookie returns the Set-Cookie of the reply named name, or nil.
func (r reply) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: r.hdr}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// apiError decodes the sidecar's JSON error body, failing the test when
// the reply is not one.
func (r reply) apiError(t *testing.T) (e struct {
	Error, Message string
	LoginURL       string `json:"login_url"`
}) {
	t.Helper()
	if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want a JSON error", r, ct)
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" || e.Message == "" {
		t.Errorf("%s: not a JSON error {error, message}: %v", r, err)
	}
	return e
}

// do sends a request; hdr is name, value pairs.
func (c *client) do(t *testing.T, method, target, body string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s: %s %s: %v", c.name, method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{method: method, url: target, status: resp.StatusCode, hdr: resp.Header, body: b}
}

func (c *client) get(t *testing.T, target string, hdr ...string) reply {
	t.Helper()
	return c.do(t, "GET", target, "", hdr...)
}

// userinfo returns the sidecar's /auth/userinfo answer.
func (c *client) userinfo(t *testing.T, e *edge) (reply, map[string]any) {
	t.Helper()
	r := c.get(t, e.URL+"/auth/userinfo", "Accept", "application/json")
	var v map[string]any
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatalf("%s: %s: %v", c.name, r, err)
		}
	}
	return r, v
}

// startLogin runs the first two hops of the authorization code flow: the
// sidecar's login endpoint sends the browser to the provider, whose
// authorization endpoint sends it back with a code. It returns the callback
// URL, not yet visited.
func (c *client) startLogin(t *testing.T, e *edge, p *mockoidc.MockOIDC, returnTo string) string {
	t.Helper()
	r := c.get(t, e.URL+"/auth/login?return_to="+url.QueryEscape(returnTo), "Accept", browserAccept)
	if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), p.AuthorizationEndpoint()+"?") {
		t.Fatalf("%s: login should redirect to the provider's authorization endpoint %s: %s", c.name, p.AuthorizationEndpoint(), r)
	}
	auth, _ := url.Parse(r.hdr.Get("Location"))
	q := auth.Query()
	for k, want := range map[string]string{
		"client_id": p.ClientID, "response_type": "code", "redirect_uri": e.URL + "/auth/callback", "code_challenge_method": "S256",
	} {
		if q.Get(k) != want {
			t.Errorf("%s: authorization request %s = %q, want %q", c.name, k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 16 {
			t.Errorf("%s: authorization request %s = %q, want a random value", c.name, k, q.Get(k))
		}
	}
	if scopes := strings.Fields(q.Get("scope")); !slices.Contains(scopes, "openid") || !slices.Contains(scopes, "email") || !slices.Contains(scopes, "profile") {
		t.Errorf("%s: authorization request scope %q, want openid profile email", c.name, q.Get("scope"))
	}
	st := r.cookie("s360_session_state")
	if st == nil || st.Value == "" || !st.HttpOnly || st.SameSite != http.SameSiteLaxMode || st.Path != "/auth/callback" {
		t.Errorf("%s: login state cookie %+v, want HttpOnly, SameSite=Lax, Path=/auth/callback", c.name, st)
	}

	r = c.get(t, auth.String(), "Accept", browserAccept)
	cb := r.hdr.Get("Location")
	if r.status != http.StatusFound || !strings.HasPrefix(cb, e.URL+"/auth/callback?") {
		t.Fatalf("%s: the provider should send the browser back to the sidecar's callback: %s", c.name, r)
	}
	back, _ := url.Parse(cb)
	if back.Query().Get("state") != q.Get("state") || back.Query().Get("code") == "" {
		t.Fatalf("%s: provider answer %s does not carry a code and the state %q", c.name, cb, q.Get("state"))
	}
	return cb
}

// finishLogin visits the callback and checks that it sets the session
// cookie and sends the browser to wantLocation.
func (c *client) finishLogin(t *testing.T, callback, wantLocation string) {
	t.Helper()
	r := c.get(t, callback, "Accept", browserAccept)
	if r.status != http.StatusFound || r.hdr.Get("Location") != wantLocation {
		t.Fatalf("%s: callback should complete the login and redirect to %q: %s", c.name, wantLocation, r)
	}
	s := r.cookie("s360_session")
	if s == nil || s.Value == "" || !s.HttpOnly || s.SameSite != http.SameSiteLaxMode || s.Path != "/" || s.Secure || s.MaxAge <= 0 {
		t.Errorf("%s: session cookie %+v, want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP, with a Max-Age", c.name, s)
	}
	if st := r.cookie("s360_session_state"); st == nil || st.MaxAge >= 0 {
		t.Errorf("%s: the callback should delete the login state cookie, got %+v", c.name, st)
	}
}

func (c *client) login(t *testing.T, e *edge, p *mockoidc.MockOIDC, returnTo, wantLocation string) {
	t.Helper()
	c.finishLogin(t, c.startLogin(t, e, p, returnTo), wantLocation)
}

// orderBody books quantity 1 of the first seat category of perf.
func orderBody(fx fixtures, pi, qi int) string {
	perf := fx.Products[pi].Performances[qi]
	return fmt.Sprintf(`{"pointOfSalesId":%d,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,
		"singleEntryAttributionOperations":[{"performanceId":%d,"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":1}]}`,
		fx.PosID, perf.ID, perf.SeatCategoryIDs[0], perf.AudienceSubCategoryIDs[0])
}

type simOrder struct {
	OrderID int64  `json:"orderId"`
	Ref     string `json:"externalReference"`
	Lines   []struct {
		PerformanceID int64 `json:"performanceId"`
		Quantity      int   `json:"quantity"`
	} `json:"lines"`
}

func (s *sim) Orders(t *testing.T) []simOrder {
	t.Helper()
	var o []simOrder
	getJSON(t, s.URL+"/_sim/orders", &o)
	return o
}

// providerToken gets an ID token from the provider the way an API client
// of the website would, with its own code flow that never touches the
// sidecar; the sidecar must accept it as `Authorization: Bearer`.
func providerToken(t *testing.T, p *mockoidc.MockOIDC) string {
	t.Helper()
	q := url.Values{"client_id": {p.ClientID}, "response_type": {"code"}, "scope": {"openid email profile"},
		"state": {"api-client-state"}, "nonce": {"api-client-nonce"}, "redirect_uri": {"http://127.0.0.1/api-client/callback"}}
	resp, err := noRedirect.Get(p.AuthorizationEndpoint() + "?" + q.Encode())
	if err != nil {
		t.Fatalf("provider authorize: %v", err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if resp.StatusCode != http.StatusFound || code == "" {
		t.Fatalf("provider authorize: %d Location=%q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = http.PostForm(p.TokenEndpoint(), url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"client_id": {p.ClientID}, "client_secret": {p.ClientSecret}, "redirect_uri": {"http://127.0.0.1/api-client/callback"}})
	if err != nil {
		t.Fatalf("provider token: %v", err)
	}
	defer resp.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 || tok.IDToken == "" {
		t.Fatalf("provider token: %d %v", resp.StatusCode, err)
	}
	return tok.IDToken
}

// TestOIDCLoginAndProtectedOrders is buyer login against a real provider:
// the code flow hop by hop, the protected order call, the identity headers
// the website gets, Bearer tokens, logout, and the attacks the RP must
// refuse (forged state, replayed code, forged headers, tampered cookie).
func TestOIDCLoginAndProtectedOrders(t *testing.T) {
	p := startProvider(t)
	s := startSim(t)
	web := echoWebsite(t)
	e := startEdge(t, oidcCaddyfile(s, p, "{env.XDG_DATA_HOME}", web.URL), oidcEnv(t, p)...)
	fx := s.Fixtures(t)
	order := orderBody(fx, 0, 0)
	ordersBefore := func() int { return s.Counters(t).Calls[orderCounter] }

	ada := &mockoidc.MockUser{Subject: "buyer-4711", Email: "ada@example.com", EmailVerified: true, PreferredUsername: "ada.lovelace"}
	buyer := newClient("ada")

	t.Run("anonymous buyer is asked to log in", func(t *testing.T) {
		anon := newClient("anonymous")
		n := ordersBefore()

		r, _ := anon.userinfo(t, e)
		if r.status != http.StatusUnauthorized {
			t.Errorf("userinfo without a session: %s, want 401", r)
		} else if ae := r.apiError(t); ae.Error != "unauthenticated" || ae.LoginURL == "" {
			t.Errorf("userinfo without a session: %s, want error unauthenticated with a login_url", r)
		}

		// An API call (fetch from the page) gets 401 JSON it can act on.
		r = anon.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json")
		if r.status != http.StatusUnauthorized {
			t.Fatalf("order without a session: %s, want 401 login_required", r)
		}
		ae := r.apiError(t)
		if ae.Error != "login_required" || !strings.HasPrefix(ae.LoginURL, "/auth/login?return_to=") {
			t.Errorf("order without a session: %s, want error login_required and a login_url on /auth/login", r)
		}

		// A page navigation is sent to the login, and back here afterwards.
		r = anon.get(t, e.URL+orderPath+"?lang=en", "Accept", browserAccept, "Sec-Fetch-Mode", "navigate")
		if want := "/auth/login?return_to=" + url.QueryEscape(orderPath+"?lang=en"); r.status != http.StatusFound || r.hdr.Get("Location") != want {
			t.Errorf("navigation without a session: %s, want 302 to %s", r, want)
		}
		if got := ordersBefore(); got != n {
			t.Errorf("an order without a login reached S-360 (%d createOrUpdateOrder calls, want %d)", got, n)
		}
	})

	if !t.Run("login through the provider", func(t *testing.T) {
		p.QueueUser(ada)
		buyer.login(t, e, p, "/echo/after-login?x=1", "/echo/after-login?x=1")
		r, info := buyer.userinfo(t, e)
		if r.status != 200 {
			t.Fatalf("userinfo after login: %s, want 200", r)
		}
		if info["sub"] != ada.Subject || info["email"] != ada.Email || info["name"] != ada.PreferredUsername {
			t.Errorf("userinfo after login = %v, want sub %q, email %q, name %q (preferred_username)", info, ada.Subject, ada.Email, ada.PreferredUsername)
		}
		if exp, err := time.Parse(time.RFC3339, fmt.Sprint(info["expires_at"])); err != nil || !exp.After(time.Now()) {
			t.Errorf("userinfo expires_at = %v, want a time in the future", info["expires_at"])
		}
		if cc := r.hdr.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
			t.Errorf("userinfo Cache-Control = %q, want no-store (it is personal)", cc)
		}
	}) {
		t.FailNow()
	}

	t.Run("return_to never leaves the site", func(t *testing.T) {
		for _, evil := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"} {
			c := newClient("return_to " + evil)
			c.login(t, e, p, evil, "/")
		}
	})

	t.Run("order with the session goes to the shop", func(t *testing.T) {
		n := ordersBefore()
		r := buyer.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json")
		var out struct {
			RedirectURL string `json:"redirectUrl"`
			Data        struct {
				OrderID int64 `json:"orderId"`
			} `json:"orderUpdateData"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil || r.status != 200 || out.Data.OrderID == 0 {
			t.Fatalf("order with a session: %s, want 200 with orderUpdateData.orderId", r)
		}
		if want := fmt.Sprintf("%s/api/1/redirect/cart?orderId=%d", s.URL, out.Data.OrderID); out.RedirectURL != want {
			t.Errorf("redirectUrl = %q, want %q (the configured shop)", out.RedirectURL, want)
		}
		if got := ordersBefore(); got != n+1 {
			t.Errorf("createOrUpdateOrder calls went from %d to %d, want exactly one", n, got)
		}
		if !slices.ContainsFunc(s.Orders(t), func(o simOrder) bool { return o.OrderID == out.Data.OrderID }) {
			t.Errorf("order %d is not in the simulator's /_sim/orders", out.Data.OrderID)
		}
		// Following the redirect lands on the shop's cart with the order.
		resp, err := http.Get(out.RedirectURL)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf(`<span id="order-id">%d</span>`, out.Data.OrderID); resp.StatusCode != 200 || !strings.Contains(string(page), want) {
			t.Errorf("cart page: %d, want 200 containing %s: %.300s", resp.StatusCode, want, page)
		}

		// A form post from a page (Accept prefers HTML) gets a 303 to the cart.
		r = buyer.do(t, "POST", e.URL+orderPath, order, "Accept", browserAccept)
		if r.status != http.StatusSeeOther || !strings.HasPrefix(r.hdr.Get("Location"), s.URL+"/api/1/redirect/cart?orderId=") {
			t.Errorf("HTML order with a session: %s, want 303 to the shop's cart", r)
		}
	})

	t.Run("identity headers reach the website and cannot be forged", func(t *testing.T) {
		forged := []string{"X-S360-User", "admin", "X-S360-Email", "boss@example.com", "X-S360-Name", "Mallory", "X-S360-Role", "root", "x-s360-user", "second"}
		anon := newClient("forger")
		r := anon.get(t, e.URL+"/echo/whoami", forged...)
		if r.status != 200 || strings.TrimSpace(string(r.body)) != "{}" {
			t.Errorf("anonymous request with forged X-S360-* headers: the website got %s, want none of them", r)
		}

		r = buyer.get(t, e.URL+"/echo/whoami", forged...)
		var got map[string][]string
		if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
			t.Fatalf("logged-in request to the website: %s", r)
		}
		want := map[string][]string{"X-S360-User": {ada.Subject}, "X-S360-Email": {ada.Email}, "X-S360-Name": {ada.PreferredUsername}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logged-in request with forged headers: the website got %v, want exactly %v", got, want)
		}
	})

	t.Run("bearer tokens from API clients", func(t *testing.T) {
		n := ordersBefore()
		valid := providerToken(t, p)
		anon := newClient("api client")
		r := anon.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json", "Authorization", "Bearer "+valid)
		if r.status != 200 || !strings.Contains(string(r.body), `"redirectUrl"`) {
			t.Errorf("order with a valid provider-issued ID token: %s, want 200 with redirectUrl", r)
		}

		// A token the provider issued an hour ago (it lives 10 minutes).
		p.FastForward(-time.Hour)
		expired := providerToken(t, p)
		p.FastForward(time.Hour)
		// Tokens signed with the provider's key but for another client, and
		// tokens signed with another key.
		now := time.Now()
		claims := jwt.MapClaims{"iss": p.Issuer(), "aud": p.ClientID, "sub": "intruder", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
		otherAud := jwt.MapClaims{}
		for k, v := range claims {
			otherAud[k] = v
		}
		otherAud["aud"] = "another-client"
		wrongAud, err := p.Keypair.SignJWT(otherAud)
		if err != nil {
			t.Fatal(err)
		}
		otherKey, err := mockoidc.RandomKeypair(2048)
		if err != nil {
			t.Fatal(err)
		}
		wrongKey, err := otherKey.SignJWT(claims)
		if err != nil {
			t.Fatal(err)
		}
		sig := []byte(valid)
		sig[len(sig)-3] = map[bool]byte{true: 'A', false: 'B'}[sig[len(sig)-3] != 'A']
		tampered := string(sig)
		for name, tok := range map[string]string{
			"garbage": "not-a-jwt", "expired": expired, "other audience": wrongAud, "other signing key": wrongKey,
			"valid token with its signature changed": tampered,
		} {
			r := anon.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json", "Authorization", "Bearer "+tok)
			if r.status != http.StatusUnauthorized {
				t.Errorf("order with a %s bearer token: %s, want 401", name, r)
				continue
			}
			if ae := r.apiError(t); ae.Error != "invalid_token" || !strings.Contains(r.hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("order with a %s bearer token: %s WWW-Authenticate=%q, want invalid_token", name, r, r.hdr.Get("WWW-Authenticate"))
			}
		}
		if got := ordersBefore(); got != n+1 {
			t.Errorf("createOrUpdateOrder calls went from %d to %d, want one (only the valid token's order)", n, got)
		}
	})

	t.Run("forged state is refused", func(t *testing.T) {
		c := newClient("victim")
		cb := c.startLogin(t, e, p, "/")
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Set("state", "forged-"+q.Get("state"))
		u.RawQuery = q.Encode()
		r := c.get(t, u.String(), "Accept", browserAccept)
		if r.status != http.StatusBadRequest || r.apiError(t).Error != "invalid_state" {
			t.Errorf("callback with a forged state: %s, want 400 invalid_state", r)
		}
		if r.cookie("s360_session") != nil {
			t.Errorf("callback with a forged state set a session cookie")
		}
		if r, _ := c.userinfo(t, e); r.status != http.StatusUnauthorized {
			t.Errorf("userinfo after a forged state: %s, want 401", r)
		}

		// No login started in this browser at all (login CSRF).
		other := newClient("no login started")
		r = other.get(t, cb, "Accept", browserAccept)
		if r.status != http.StatusBadRequest || r.apiError(t).Error != "invalid_state" || r.cookie("s360_session") != nil {
			t.Errorf("callback in a browser that started no login: %s, want 400 invalid_state and no session", r)
		}

		// The refused answers spent neither the state nor the code: the
		// genuine answer still completes the login.
		c.finishLogin(t, cb, "/")
	})

	t.Run("replayed code is refused", func(t *testing.T) {
		// The attacker has captured both the callback URL and the state
		// cookie; the victim's browser uses the code first.
		victim := newClient("victim")
		cb := victim.startLogin(t, e, p, "/")
		u, _ := url.Parse(cb)
		attacker := newClient("attacker")
		attacker.jar.SetCookies(u, victim.jar.Cookies(u))
		victim.finishLogin(t, cb, "/")

		r := attacker.get(t, cb, "Accept", browserAccept)
		if r.status < 400 || r.status > 499 {
			t.Errorf("replayed authorization code: %s, want a 4xx", r)
		} else if ae := r.apiError(t); ae.Error != "code_rejected" {
			t.Errorf("replayed authorization code: %s, want error code_rejected", r)
		}
		if c := r.cookie("s360_session"); c != nil && c.MaxAge >= 0 {
			t.Errorf("replayed authorization code set a session cookie")
		}
		if r, _ := attacker.userinfo(t, e); r.status != http.StatusUnauthorized {
			t.Errorf("userinfo after a replayed code: %s, want 401", r)
		}
		// The victim's own browser replaying it: its state cookie is spent.
		r = victim.get(t, cb, "Accept", browserAccept)
		if r.status != http.StatusBadRequest || r.apiError(t).Error != "invalid_state" {
			t.Errorf("callback visited twice: %s, want 400 invalid_state", r)
		}
		if r, _ := victim.userinfo(t, e); r.status != 200 {
			t.Errorf("victim's session after the replay attempts: %s, want still logged in", r)
		}
	})

	t.Run("tampered session cookie", func(t *testing.T) {
		c := newClient("tamperer")
		c.login(t, e, p, "/", "/")
		u, _ := url.Parse(e.URL)
		var val string
		for _, ck := range c.jar.Cookies(u) {
			if ck.Name == "s360_session" {
				val = ck.Value
			}
		}
		b := []byte(val)
		b[len(b)/2] ^= 1
		c.jar.SetCookies(u, []*http.Cookie{{Name: "s360_session", Value: string(b), Path: "/"}})
		r, _ := c.userinfo(t, e)
		if r.status != http.StatusUnauthorized {
			t.Errorf("userinfo with a tampered session cookie: %s, want 401", r)
		}
		if ck := r.cookie("s360_session"); ck == nil || ck.MaxAge >= 0 {
			t.Errorf("a tampered session cookie should be deleted, got Set-Cookie %+v", ck)
		}
		r = c.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json")
		if r.status != http.StatusUnauthorized || r.apiError(t).Error != "login_required" {
			t.Errorf("order with a tampered session cookie: %s, want 401 login_required", r)
		}
	})

	t.Run("logout ends the session", func(t *testing.T) {
		n := ordersBefore()
		r := buyer.get(t, e.URL+"/auth/logout", "Accept", browserAccept)
		// mockoidc has no end_session_endpoint, so logout ends on the site.
		if r.status != http.StatusFound || r.hdr.Get("Location") != "/" {
			t.Errorf("logout: %s, want 302 to /", r)
		}
		if ck := r.cookie("s360_session"); ck == nil || ck.MaxAge >= 0 {
			t.Errorf("logout should delete the session cookie, got Set-Cookie %+v", ck)
		}
		if r, _ := buyer.userinfo(t, e); r.status != http.StatusUnauthorized {
			t.Errorf("userinfo after logout: %s, want 401", r)
		}
		r = buyer.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json")
		if r.status != http.StatusUnauthorized || r.apiError(t).Error != "login_required" {
			t.Errorf("order after logout: %s, want 401 login_required", r)
		}
		r = buyer.get(t, e.URL+"/echo/whoami")
		if strings.TrimSpace(string(r.body)) != "{}" {
			t.Errorf("after logout the website still gets identity headers: %s", r)
		}
		if got := ordersBefore(); got != n {
			t.Errorf("orders after logout reached S-360")
		}
	})

	e.Stop(t)
	if errs := lines(e.proc, `"level":"error"`); len(errs) > 0 {
		t.Errorf("s360edge logged errors:\n%s", strings.Join(errs, "\n"))
	}
	for _, secret := range []string{p.ClientSecret, "eyJ"} {
		if strings.Contains(e.Output(), secret) {
			t.Errorf("s360edge logged a secret or a token (%.8s...)", secret)
		}
	}
}
