package oidcrp

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/s360edge/s360edge/session"
)

// thinUser is a provider account whose ID token carries only the standard
// claims (as with stricter providers); the rest is served by UserInfo.
type thinUser struct {
	sub  string
	info map[string]any
}

func (u thinUser) ID() string { return u.sub }

func (u thinUser) Userinfo([]string) ([]byte, error) { return json.Marshal(u.info) }

func (u thinUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	base.Subject = u.sub
	return base, nil
}

func TestClaimsFromUserinfo(t *testing.T) {
	for _, tc := range []struct {
		name        string
		user        mockoidc.User
		cfg         func(*Config)
		down        bool // UserInfo answers 500
		wantStatus  int  // of the callback
		wantEmail   string
		wantName    string
		wantFetches int32
	}{
		{name: "ID token lacks the claims", user: thinUser{"u1", map[string]any{"sub": "u1", "email": "a@example.com", "name": "Ada L"}},
			wantStatus: http.StatusFound, wantEmail: "a@example.com", wantName: "Ada L", wantFetches: 1},
		{name: "preferred_username stands in for name", user: thinUser{"u1", map[string]any{"sub": "u1", "email": "a@example.com", "preferred_username": "ada"}},
			wantStatus: http.StatusFound, wantEmail: "a@example.com", wantName: "ada", wantFetches: 1},
		{name: "configured claim names", user: thinUser{"u1", map[string]any{"sub": "u1", "email": "wrong@example.com", "mail": "a@example.com", "displayName": "Ada L"}},
			cfg:        func(c *Config) { c.EmailClaim, c.NameClaim = "mail", "displayName" },
			wantStatus: http.StatusFound, wantEmail: "a@example.com", wantName: "Ada L", wantFetches: 1},
		{name: "claims that are not strings count as missing", user: thinUser{"u1", map[string]any{"sub": "u1", "email": 7, "name": []string{"x"}}},
			wantStatus: http.StatusFound, wantFetches: 1},
		{name: "ID token has the claims", user: namedUser{MockUser: mockoidc.DefaultUser(), name: "Zoë"},
			wantStatus: http.StatusFound, wantEmail: "jane.doe@example.com", wantName: "Zoë", wantFetches: 0},
		{name: "UserInfo about another subject fails the login", user: thinUser{"u1", map[string]any{"sub": "u2", "email": "b@example.com"}},
			wantStatus: http.StatusBadGateway, wantFetches: 1},
		{name: "UserInfo down leaves the claims empty", user: thinUser{"u1", map[string]any{"sub": "u1", "email": "a@example.com"}}, down: true,
			wantStatus: http.StatusFound, wantFetches: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fetches atomic.Int32
			e := newEnv(t, envOptions{cfg: tc.cfg, provider: func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == mockoidc.UserinfoEndpoint {
						fetches.Add(1)
						if tc.down {
							http.Error(w, "down", http.StatusInternalServerError)
							return
						}
					}
					next.ServeHTTP(w, r)
				})
			}})
			e.m.QueueUser(tc.user)
			res := e.get(e.browser, e.startLogin(e.browser, "/").String())
			if res.status != tc.wantStatus {
				t.Fatalf("callback: %d %s, want %d", res.status, res.body, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusFound {
				if res.json(t)["error"] != "invalid_userinfo" || res.cookie[session.DefaultCookieName] != nil {
					t.Fatalf("callback: %s %v, want invalid_userinfo and no session", res.body, res.cookie)
				}
				return
			}
			for range 2 { // the second request reads the session, not UserInfo
				ui := e.get(e.browser, "/auth/userinfo").json(t)
				if ui["email"] != tc.wantEmail || ui["name"] != tc.wantName {
					t.Fatalf("userinfo %v, want email %q name %q", ui, tc.wantEmail, tc.wantName)
				}
			}
			if n := fetches.Load(); n != tc.wantFetches {
				t.Errorf("UserInfo fetched %d times, want %d", n, tc.wantFetches)
			}
		})
	}
}

func TestRefreshKeepsUserinfoClaims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.m.QueueUser(thinUser{"u1", map[string]any{"sub": "u1", "email": "a@example.com", "name": "Ada L"}})
		e.login(e.browser, "/")
		before := e.sessionOf(e.browser)
		step := 9*time.Minute + 30*time.Second
		time.Sleep(step)
		ui := e.get(e.browser, "/auth/userinfo").json(t)
		after := e.sessionOf(e.browser)
		if after.TokExp <= before.TokExp || ui["email"] != "a@example.com" || ui["name"] != "Ada L" {
			t.Fatalf("after refresh: TokExp %d→%d, userinfo %v; want refreshed with the claims kept", before.TokExp, after.TokExp, ui)
		}
	})
}

func TestTokenAuth(t *testing.T) {
	for _, tc := range []struct{ name, cfg, want string }{
		{"basic", "basic", "basic"},
		{"post", "post", "post"},
		// mockoidc accepts only post though it lists basic: the default
		// tries basic, then falls back.
		{"default", "", "basic post"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			e := newEnv(t, envOptions{cfg: func(c *Config) { c.TokenAuth = tc.cfg }, provider: func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path != mockoidc.TokenEndpoint {
						next.ServeHTTP(w, r)
						return
					}
					_ = r.ParseForm()
					id, secret, basic := r.BasicAuth()
					mu.Lock()
					switch {
					case basic && r.PostForm.Get("client_secret") == "":
						seen = append(seen, "basic")
					case !basic && r.PostForm.Get("client_secret") != "":
						seen = append(seen, "post")
					default:
						seen = append(seen, "mixed")
					}
					mu.Unlock()
					if basic && tc.cfg == "basic" {
						// mockoidc reads the credentials from the form only.
						id, _ = url.QueryUnescape(id)
						secret, _ = url.QueryUnescape(secret)
						r.PostForm.Set("client_id", id)
						r.PostForm.Set("client_secret", secret)
						r.Form = r.PostForm
					}
					next.ServeHTTP(w, r)
				})
			}})
			e.login(e.browser, "/")
			mu.Lock()
			got := strings.Join(seen, " ")
			mu.Unlock()
			if got != tc.want {
				t.Errorf("token requests authenticated as %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := New(Config{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", TokenAuth: "jwt"}); err == nil || !strings.Contains(err.Error(), "token_auth") {
		t.Errorf("token_auth jwt accepted: %v", err)
	}
}
