package oidcrp

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/session"
)

// fakeRevocations is a Revocations whose store can be made to fail.
type fakeRevocations struct {
	mu    sync.Mutex
	ids   map[string]time.Time
	fail  error
	calls int
}

func (f *fakeRevocations) Revoke(id string, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.ids[id] = until
	return nil
}

func (f *fakeRevocations) Revoked(id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return false, f.fail
	}
	_, ok := f.ids[id]
	return ok, nil
}

func (f *fakeRevocations) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func newRevocationEnv(t *testing.T) (*env, *fakeRevocations) {
	rev := &fakeRevocations{ids: map[string]time.Time{}}
	return newEnv(t, envOptions{sessions: func(c *session.Config) { c.Revocations = rev }}), rev
}

// copyBrowser is a second browser holding a copy of c's cookies, as an
// attacker who stole them (or a second tab of a shared computer) would.
func (e *env) copyBrowser(c *http.Client) *http.Client {
	cp := e.newBrowser()
	u, _ := url.Parse(e.srv.URL)
	cp.Jar.SetCookies(u, c.Jar.Cookies(u))
	return cp
}

func TestLogoutCrossSite(t *testing.T) {
	html := "text/html,application/xhtml+xml"
	for _, tc := range []struct {
		name, method string
		header       http.Header
		refused      bool
	}{
		{"same-origin link", "GET", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Accept": {html}}, false},
		{"same-origin form post", "POST", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"SELF"}}, false},
		{"typed URL", "GET", http.Header{"Sec-Fetch-Site": {"none"}, "Accept": {html}}, false},
		{"no browser headers (curl, old browser)", "GET", nil, false},
		{"old browser same-origin post", "POST", http.Header{"Origin": {"SELF"}, "Referer": {"SELF/account"}}, false},
		{"old browser same-origin link", "GET", http.Header{"Referer": {"SELF/account"}}, false},
		{"cross-site link", "GET", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Accept": {html}}, true},
		{"cross-site image", "GET", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Dest": {"image"}}, true},
		{"cross-site form post", "POST", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, true},
		{"sibling subdomain", "GET", http.Header{"Sec-Fetch-Site": {"same-site"}}, true},
		{"same-origin claim with a foreign Origin", "POST", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"https://evil.example"}}, true},
		{"old browser cross-site post", "POST", http.Header{"Origin": {"https://evil.example"}}, true},
		{"opaque origin", "POST", http.Header{"Origin": {"null"}}, true},
		{"old browser cross-site link", "GET", http.Header{"Referer": {"https://evil.example/page"}}, true},
		{"unknown Sec-Fetch-Site value", "GET", http.Header{"Sec-Fetch-Site": {"bogus"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rev := newRevocationEnv(t)
			e.login(e.browser, "/")
			for k, v := range tc.header {
				tc.header[k] = []string{strings.Replace(v[0], "SELF", e.srv.URL, 1)}
			}
			res := e.do(e.browser, tc.method, "/auth/logout", tc.header)
			after := e.get(e.browser, "/auth/userinfo")
			if tc.refused {
				if res.status != http.StatusForbidden || res.json(t)["error"] != "cross_site" || res.json(t)["message"] == "" {
					t.Fatalf("logout: %d %s, want 403 cross_site", res.status, res.body)
				}
				if c := res.cookie[session.DefaultCookieName]; c != nil {
					t.Errorf("a refused logout touched the session cookie: %+v", c)
				}
				if after.status != http.StatusOK || len(rev.ids) != 0 {
					t.Errorf("after a refused logout: userinfo %d, %d revocations; want the session intact", after.status, len(rev.ids))
				}
				return
			}
			if res.status != http.StatusFound {
				t.Fatalf("logout: %d %s, want 302", res.status, res.body)
			}
			if after.status != http.StatusUnauthorized || len(rev.ids) != 1 {
				t.Errorf("after logout: userinfo %d, %d revocations; want 401 and the session revoked", after.status, len(rev.ids))
			}
		})
	}
}

func TestLogoutRevokesCopies(t *testing.T) {
	e, rev := newRevocationEnv(t)
	e.login(e.browser, "/")
	s := e.sessionOf(e.browser)
	if len(s.ID) < 20 {
		t.Fatalf("session id %q, want a random one", s.ID)
	}
	// copied keeps the cookie untouched; stolen is used, and loses it.
	copied := e.copyBrowser(e.browser)
	stolen := e.copyBrowser(e.browser)
	other := e.newBrowser()
	e.login(other, "/")
	if e.sessionOf(other).ID == s.ID {
		t.Fatal("two logins share a session id")
	}
	if res := e.get(stolen, "/auth/userinfo"); res.status != http.StatusOK {
		t.Fatalf("copied cookie before logout: %d, want 200", res.status)
	}

	if res := e.do(e.browser, http.MethodPost, "/auth/logout", nil); res.status != http.StatusFound {
		t.Fatalf("logout: %d %s", res.status, res.body)
	}
	if until := rev.ids[s.ID]; until.Unix() != s.Exp {
		t.Errorf("revoked until %v, want the session's end %v", until, time.Unix(s.Exp, 0))
	}

	t.Run("userinfo", func(t *testing.T) {
		res := e.get(stolen, "/auth/userinfo")
		if res.status != http.StatusUnauthorized || res.json(t)["error"] != "unauthenticated" {
			t.Fatalf("copied cookie after logout: %d %s, want 401", res.status, res.body)
		}
		if c := res.cookie[session.DefaultCookieName]; c == nil || c.MaxAge >= 0 {
			t.Errorf("a revoked cookie should be deleted, got %+v", c)
		}
	})
	t.Run("protected page", func(t *testing.T) {
		res := e.do(e.copyBrowser(copied), http.MethodGet, "/app/orders", http.Header{"Accept": {"application/json"}})
		if res.status != http.StatusUnauthorized || res.json(t)["error"] != "login_required" {
			t.Fatalf("protected page with the copied cookie: %d %s, want 401 login_required", res.status, res.body)
		}
	})
	t.Run("open page gets no identity", func(t *testing.T) {
		res := e.get(e.copyBrowser(copied), "/open")
		if h := res.json(t); len(h) != 0 {
			t.Fatalf("identity headers %v from a revoked session", h)
		}
	})
	t.Run("other sessions are untouched", func(t *testing.T) {
		if res := e.get(other, "/auth/userinfo"); res.status != http.StatusOK {
			t.Fatalf("another buyer's session after a logout: %d", res.status)
		}
	})
}

// After another buyer's logout, a refresh keeps the session's id (the revocation list is by id).
func TestRefreshKeepsSessionID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := newRevocationEnv(t)
		e.login(e.browser, "/")
		other := e.newBrowser()
		e.login(other, "/")
		if res := e.do(e.browser, http.MethodPost, "/auth/logout", nil); res.status != http.StatusFound {
			t.Fatalf("logout: %d %s", res.status, res.body)
		}
		before := e.sessionOf(other)
		time.Sleep(9*time.Minute + 30*time.Second) // shortly before the 10-minute ID token expires
		if res := e.get(other, "/auth/userinfo"); res.status != http.StatusOK {
			t.Fatalf("userinfo at refresh time: %d %s", res.status, res.body)
		}
		after := e.sessionOf(other)
		if after.TokExp == before.TokExp || after.ID != before.ID {
			t.Fatalf("after refresh: TokExp %d→%d, ID %q→%q; want refreshed with the same ID", before.TokExp, after.TokExp, before.ID, after.ID)
		}
	})
}

func TestRevocationListDown(t *testing.T) {
	e, rev := newRevocationEnv(t)
	e.login(e.browser, "/")
	rev.setFail(errors.New("disk on fire"))

	t.Run("userinfo fails closed", func(t *testing.T) {
		res := e.get(e.browser, "/auth/userinfo")
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "session_check_unavailable" || res.header.Get("Retry-After") == "" {
			t.Fatalf("userinfo: %d %v %s, want 503 session_check_unavailable", res.status, res.header, res.body)
		}
	})
	t.Run("protected page fails closed", func(t *testing.T) {
		res := e.do(e.browser, http.MethodGet, "/app/orders", http.Header{"Accept": {"text/html"}})
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "session_check_unavailable" {
			t.Fatalf("protected page: %d %s, want 503", res.status, res.body)
		}
	})
	t.Run("open page is anonymous", func(t *testing.T) {
		res := e.get(e.browser, "/open")
		if h := res.json(t); res.status != http.StatusOK || len(h) != 0 {
			t.Fatalf("open page: %d %v, want 200 without identity headers", res.status, h)
		}
	})
	t.Run("logout says it is incomplete", func(t *testing.T) {
		stolen := e.copyBrowser(e.browser)
		res := e.do(e.browser, http.MethodPost, "/auth/logout", nil)
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "logout_incomplete" {
			t.Fatalf("logout: %d %s, want 503 logout_incomplete", res.status, res.body)
		}
		if c := res.cookie[session.DefaultCookieName]; c == nil || c.MaxAge >= 0 {
			t.Errorf("logout should still delete the cookie, got %+v", c)
		}
		// The list is back: the session was never revoked, and the cookie
		// kept through the outage works again.
		rev.setFail(nil)
		if res := e.get(stolen, "/auth/userinfo"); res.status != http.StatusOK {
			t.Errorf("userinfo once the list answers: %d", res.status)
		}
	})
}
