package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
)

// identityCaddyfile is the sidecar with buyer login in front of a website
// that gets every path s360 passes on (reverse_proxy runs after s360).
func identityCaddyfile(s *sim, p *mockoidc.MockOIDC, website string) string {
	return pollsOffCaddyfile(s.URL,
		oidcLogin(p.Issuer(), p.ClientID, "protect /account* /checkout /tnseb/backend-apis/externalOrderFacade/*"),
		"reverse_proxy "+strings.TrimPrefix(website, "http://"))
}

// seen is one request that reached the website.
type seen struct{ uri, user, email, name string }

// recordingWebsite answers 200 to everything and records what reached it.
type recordingWebsite struct {
	URL string
	mu  sync.Mutex
	got []seen
}

func startRecordingWebsite(t *testing.T) *recordingWebsite {
	t.Helper()
	w := &recordingWebsite{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.got = append(w.got, seen{uri: r.RequestURI, user: r.Header.Get("X-S360-User"),
			email: r.Header.Get("X-S360-Email"), name: r.Header.Get("X-S360-Name")})
		w.mu.Unlock()
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(rw, "website page %s", r.RequestURI)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	w.URL = "http://" + l.Addr().String()
	return w
}

// since returns the requests that reached the website after the first n.
func (w *recordingWebsite) since(n int) []seen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]seen(nil), w.got[n:]...)
}

func (w *recordingWebsite) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

// rawGet sends target byte for byte as the request-target (Go's client
// would normalise some of the tricks), with hdr as name, value pairs.
func rawGet(t *testing.T, base, target string, hdr ...string) reply {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, host)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{method: "GET", url: target, status: resp.StatusCode, hdr: resp.Header, body: body}
}

// sessionCookie is c's session cookie as a Cookie header value.
func (c *client) sessionCookie(t *testing.T, e *edge) string {
	t.Helper()
	u, _ := url.Parse(e.URL)
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == "s360_session" {
			return ck.Name + "=" + ck.Value
		}
	}
	t.Fatalf("%s has no session cookie", c.name)
	return ""
}

// TestOIDCProtectPathTricks sends every known way of spelling a protected
// path to the real sidecar, byte for byte, and checks that none reaches
// the website without a login, while a logged-in buyer gets through.
func TestOIDCProtectPathTricks(t *testing.T) {
	p := startProvider(t)
	s := startSim(t)
	web := startRecordingWebsite(t)
	e := startEdge(t, identityCaddyfile(s, p, web.URL), oidcEnv(t, p)...)

	// The control: an open page reaches the website, anonymously.
	n := web.count()
	if r := rawGet(t, e.URL, "/shop"); r.status != 200 {
		t.Fatalf("open page: %s, want 200 from the website", r)
	}
	if got := web.since(n); len(got) != 1 || got[0].uri != "/shop" || got[0].user != "" {
		t.Fatalf("open page: the website got %v, want one anonymous /shop", got)
	}

	tricks := []struct{ name, target string }{
		{"plain", "/account"},
		{"below", "/account/orders"},
		{"double slash", "//account"},
		{"triple slash", "///account"},
		{"dot segment", "/./account"},
		{"dot segment and slashes", "/.//account"},
		{"dot-dot segment", "/x/../account"},
		{"dot-dot above the root", "/../account"},
		{"encoded slash", "/x%2F..%2Faccount"},
		{"encoded slash, lower case", "/x%2f..%2faccount"},
		{"encoded dot", "/%2E/account"},
		{"encoded dot-dot", "/x/%2E%2E/account"},
		{"encoded dot-dot above the root", "/%2e%2e/account"},
		{"encoded letter", "/%61ccount"},
		{"double-encoded slash", "/x%252F..%252Faccount"},
		{"double-encoded letter", "/%2561ccount"},
		{"encoded backslash", "/x%5C..%5Caccount"},
		{"path parameter", "/..;/account"},
		{"trailing path parameter", "/account;jsessionid=1"},
		{"upper case", "/ACCOUNT"},
		{"trailing slash", "/account/"},
		{"with query", "/account?tab=orders"},
		{"exact path with trailing slash", "/checkout/"},
		{"exact path with double slash", "//checkout"},
		{"exact path cleaned", "/x/../checkout"},
		{"exact path encoded", "/%63heckout"},
	}
	t.Run("anonymous", func(t *testing.T) {
		for _, tc := range tricks {
			t.Run(tc.name, func(t *testing.T) {
				n := web.count()
				r := rawGet(t, e.URL, tc.target, "Accept", "application/json")
				if got := web.since(n); len(got) != 0 {
					t.Fatalf("%s reached the website without a login: %v", tc.target, got)
				}
				if r.status != http.StatusUnauthorized || r.apiError(t).Error != "login_required" {
					t.Errorf("%s: %s, want 401 login_required", tc.target, r)
				}
				// A browser navigation is sent to the login instead.
				r = rawGet(t, e.URL, tc.target, "Accept", browserAccept, "Sec-Fetch-Mode", "navigate")
				if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), "/auth/login?return_to=") {
					t.Errorf("%s navigation: %s, want 302 to the login", tc.target, r)
				}
				if got := web.since(n); len(got) != 0 {
					t.Fatalf("%s reached the website without a login: %v", tc.target, got)
				}
			})
		}
	})

	buyer := newClient("buyer")
	p.QueueUser(&mockoidc.MockUser{Subject: "buyer-77", Email: "b@example.com"})
	buyer.login(t, e, p, "/", "/")
	cookie := buyer.sessionCookie(t, e)
	t.Run("logged in", func(t *testing.T) {
		for _, tc := range tricks {
			t.Run(tc.name, func(t *testing.T) {
				n := web.count()
				r := rawGet(t, e.URL, tc.target, "Accept", "application/json", "Cookie", cookie)
				got := web.since(n)
				if r.status != 200 || len(got) != 1 || got[0].user != "buyer-77" {
					t.Errorf("%s with a session: %s, website got %v; want it passed on with X-S360-User buyer-77", tc.target, r, got)
				}
			})
		}
	})
}

// TestOIDCLogoutRevokesAndRefusesCrossSite: logout is refused from other
// sites, and a real logout makes every copy of the cookie useless, also
// after a restart.
func TestOIDCLogoutRevokesAndRefusesCrossSite(t *testing.T) {
	p := startProvider(t)
	s := startSim(t)
	web := startRecordingWebsite(t)
	env := oidcEnv(t, p)
	e := startEdge(t, identityCaddyfile(s, p, web.URL), env...)
	order := orderBody(s.Fixtures(t), 0, 0)

	buyer := newClient("buyer")
	p.QueueUser(&mockoidc.MockUser{Subject: "buyer-42", Email: "b42@example.com"})
	buyer.login(t, e, p, "/", "/")
	u, _ := url.Parse(e.URL)
	thief := newClient("thief")
	thief.jar.SetCookies(u, buyer.jar.Cookies(u))

	t.Run("cross-site logout is refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, method string
			hdr          []string
		}{
			{"link from another site", "GET", []string{"Accept", browserAccept, "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"}},
			{"image on another site", "GET", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Dest", "image"}},
			{"form on another site", "POST", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
			{"form on another site, old browser", "POST", []string{"Origin", "https://evil.example"}},
			{"sibling subdomain", "GET", []string{"Sec-Fetch-Site", "same-site"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := buyer.do(t, tc.method, e.URL+"/auth/logout", "", tc.hdr...)
				if r.status != http.StatusForbidden || r.apiError(t).Error != "cross_site" {
					t.Errorf("%s: %s, want 403 cross_site", tc.name, r)
				}
				if ck := r.cookie("s360_session"); ck != nil {
					t.Errorf("a refused logout touched the session cookie: %+v", ck)
				}
				if r, _ := buyer.userinfo(t, e); r.status != 200 {
					t.Errorf("after a refused logout the session no longer works: %s", r)
				}
			})
		}
	})

	t.Run("same-origin logout", func(t *testing.T) {
		if r, _ := thief.userinfo(t, e); r.status != 200 {
			t.Fatalf("the copied cookie before logout: %s, want 200", r)
		}
		r := buyer.do(t, "POST", e.URL+"/auth/logout", "", "Sec-Fetch-Site", "same-origin", "Origin", e.URL)
		if r.status != http.StatusFound || r.hdr.Get("Location") != "/" {
			t.Fatalf("logout: %s, want 302 to /", r)
		}
		if ck := r.cookie("s360_session"); ck == nil || ck.MaxAge >= 0 {
			t.Errorf("logout should delete the session cookie, got %+v", ck)
		}
	})

	copied := thief.sessionCookie(t, e)
	refused := func(t *testing.T, e *edge) {
		t.Helper()
		c := newClient("thief copy")
		c.jar.SetCookies(u, []*http.Cookie{{Name: "s360_session", Value: strings.TrimPrefix(copied, "s360_session="), Path: "/"}})
		if r, _ := c.userinfo(t, e); r.status != http.StatusUnauthorized {
			t.Errorf("userinfo with the copied cookie after logout: %s, want 401", r)
		}
		n := web.count()
		r := c.get(t, e.URL+"/account", "Accept", browserAccept, "Sec-Fetch-Mode", "navigate")
		if r.status != http.StatusFound || r.hdr.Get("Location") != "/auth/login?return_to=%2Faccount" {
			t.Errorf("protected page with the copied cookie: %s, want 302 to the login", r)
		}
		if got := web.since(n); len(got) != 0 {
			t.Errorf("the website got %v from a logged-out cookie", got)
		}
		r = c.do(t, "POST", e.URL+orderPath, order, "Accept", "application/json")
		if r.status != http.StatusUnauthorized || r.apiError(t).Error != "login_required" {
			t.Errorf("order with the copied cookie: %s, want 401 login_required", r)
		}
		r = rawGet(t, e.URL, "/shop", "Cookie", copied)
		if got := web.since(n); r.status != 200 || len(got) != 1 || got[0].user != "" {
			t.Errorf("open page with the copied cookie: %s, website got %v, want it anonymous", r, got)
		}
	}
	t.Run("the copied cookie is refused", func(t *testing.T) { refused(t, e) })

	e.Stop(t)
	e = restartEdge(t, e, env...)
	t.Run("the copied cookie is refused after a restart", func(t *testing.T) { refused(t, e) })

	t.Run("a new login works", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "buyer-42", Email: "b42@example.com"})
		again := newClient("buyer again")
		again.login(t, e, p, "/", "/")
		r, info := again.userinfo(t, e)
		if r.status != 200 || info["sub"] != "buyer-42" {
			t.Errorf("userinfo after logging in again: %s", r)
		}
	})

	e.Stop(t)
	if errs := lines(e.proc, `"level":"error"`); len(errs) > 0 {
		t.Errorf("s360edge logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
