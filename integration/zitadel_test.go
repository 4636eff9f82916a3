package integration

import (
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The second, independent OpenID provider: zitadel/oidc's example OP,
// built from its pinned module and run as a process. It is stricter than
// mockoidc: redirect URIs must match exactly, the client authenticates with
// client_secret_basic (post is accepted too), and the ID token carries only
// the subject when an access token is issued: email and name come from its
// UserInfo endpoint.
const (
	zitadelModule = "github.com/zitadel/oidc/v3/example/server@v3.52.0"
	// The example's web client and seeded user.
	zitadelClient, zitadelSecret          = "web", "secret"
	zitadelPassword                       = "verysecure"
	zitadelSub, zitadelEmail, zitadelName = "id1", "test-user@zitadel.ch", "Test User"
)

var (
	zitadelOnce sync.Once
	zitadelErr  error
)

// zitadelBinary builds the example OP once per test run.
func zitadelBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(binDir, "zitadel")
	zitadelOnce.Do(func() {
		cmd := exec.Command("go", "install", zitadelModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			zitadelErr = err
			t.Logf("go install %s:\n%s", zitadelModule, out)
		}
	})
	if zitadelErr != nil {
		t.Fatalf("building zitadel's example OP: %v", zitadelErr)
	}
	return filepath.Join("zitadel", "server") // relative to binDir, for start
}

func zitadelCaddyfile(s *sim, issuer, tokenAuth, website string) string {
	return pollsOffCaddyfile(s.URL, oidcLogin(issuer, zitadelClient, "token_auth "+tokenAuth, "protect /account*"),
		"reverse_proxy "+strings.TrimPrefix(website, "http://"))
}

// TestOIDCZitadelUserinfoClaims logs in through zitadel's example OP with
// each client authentication method and checks that email and name, absent
// from its ID tokens, reach /auth/userinfo and the website.
func TestOIDCZitadelUserinfoClaims(t *testing.T) {
	bin := zitadelBinary(t)
	s := startSim(t)
	web := startRecordingWebsite(t)
	for _, tokenAuth := range []string{"basic", "post"} {
		t.Run("client_secret_"+tokenAuth, func(t *testing.T) {
			_, port, _ := strings.Cut(freeAddr(t), ":")
			// The example OP names itself http://localhost:<port>/.
			issuer := "http://localhost:" + port + "/"
			env := oidcEnvSecret(t, zitadelSecret)
			e := startEdge(t, zitadelCaddyfile(s, issuer, tokenAuth, web.URL), env...)
			// Discovery is lazy, so the provider can start after the edge:
			// it needs the edge's exact callback URL.
			op := start(t, bin, []string{"PORT=" + port, "REDIRECT_URI=" + e.URL + "/auth/callback"})
			waitFor(t, "the zitadel OP to serve discovery", 30*time.Second, func() bool {
				resp, err := http.Get(issuer + ".well-known/openid-configuration")
				if err == nil {
					resp.Body.Close()
				}
				return err == nil && resp.StatusCode == 200
			})

			var disco struct {
				Authorize string `json:"authorization_endpoint"`
			}
			getJSON(t, issuer+".well-known/openid-configuration", &disco)

			c := newClient("zitadel buyer")
			zitadelLogin(t, c, e, issuer, disco.Authorize, "/account/orders")

			r, info := c.userinfo(t, e)
			if r.status != 200 || info["sub"] != zitadelSub || info["email"] != zitadelEmail || info["name"] != zitadelName {
				t.Fatalf("userinfo after login: %s, want sub %q, email %q, name %q", r, zitadelSub, zitadelEmail, zitadelName)
			}
			// The OP logs each request's path: the claims came from UserInfo,
			// once, at login.
			if n := len(lines(op, "path=/userinfo")); n != 1 {
				t.Errorf("the OP served UserInfo %d times, want once", n)
			}
			n := web.count()
			if r := c.get(t, e.URL+"/account/orders", "Accept", "application/json"); r.status != 200 {
				t.Fatalf("protected page: %s", r)
			}
			want := seen{uri: "/account/orders", user: zitadelSub, email: zitadelEmail, name: zitadelName}
			if got := web.since(n); len(got) != 1 || got[0] != want {
				t.Errorf("the website got %v, want %v", got, want)
			}

			// Logout goes on to the provider's end_session_endpoint.
			r = c.do(t, "POST", e.URL+"/auth/logout", "", "Sec-Fetch-Site", "same-origin", "Origin", e.URL)
			if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), issuer) {
				t.Errorf("logout: %s, want 302 to the provider", r)
			}
			if r, _ := c.userinfo(t, e); r.status != http.StatusUnauthorized {
				t.Errorf("userinfo after logout: %s, want 401", r)
			}
			op.Stop(t)
			e.Stop(t)
			if errs := lines(e.proc, `"level":"error"`); len(errs) > 0 {
				t.Errorf("s360edge logged errors:\n%s", strings.Join(errs, "\n"))
			}
			if strings.Contains(e.Output(), "eyJ") {
				t.Error("s360edge logged a token")
			}
		})
	}
}

// zitadelLogin drives the example OP's code flow hop by hop: the edge's
// login, the OP's authorize, its username/password form, its callback,
// and the edge's callback, which must land on returnTo.
func zitadelLogin(t *testing.T, c *client, e *edge, issuer, authorize, returnTo string) {
	t.Helper()
	r := c.get(t, e.URL+"/auth/login?return_to="+url.QueryEscape(returnTo), "Accept", browserAccept)
	if r.status != http.StatusFound || !strings.HasPrefix(r.hdr.Get("Location"), authorize+"?") {
		t.Fatalf("login should redirect to the OP's authorize endpoint: %s", r)
	}
	r = c.get(t, r.hdr.Get("Location"), "Accept", browserAccept)
	loginPage, err := url.Parse(issuer)
	if err == nil {
		loginPage, err = loginPage.Parse(r.hdr.Get("Location"))
	}
	id := loginPage.Query().Get("authRequestID")
	if err != nil || r.status != http.StatusFound || id == "" {
		t.Fatalf("the OP should send the browser to its login page: %s", r)
	}
	form := url.Values{"id": {id}, "username": {"test-user@localhost"}, "password": {zitadelPassword}}
	req, _ := http.NewRequest("POST", issuer+"login/username", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	next, _ := url.Parse(issuer)
	next, _ = next.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("OP login form: %d, want 302", resp.StatusCode)
	}
	r = c.get(t, next.String(), "Accept", browserAccept)
	cb := r.hdr.Get("Location")
	if r.status != http.StatusFound || !strings.HasPrefix(cb, e.URL+"/auth/callback?") {
		t.Fatalf("the OP should send the browser back to the edge's callback: %s", r)
	}
	c.finishLogin(t, cb, returnTo)
}
