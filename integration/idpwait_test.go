package integration

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/s360edge/s360edge/internal/oidctest"
)

// hangingIdP accepts connections and never answers on them, as an identity
// provider that hangs; it holds them until the test ends.
type hangingIdP struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	open     atomic.Int32 // connections the client has not closed yet
}

func startHangingIdP(t *testing.T) *hangingIdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangingIdP{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			h.open.Add(1)
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			// Read until the client gives up: never answer.
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						h.open.Add(-1)
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			c.Close()
		}
	})
	return h
}

func (h *hangingIdP) Issuer() string { return "http://" + h.ln.Addr().String() }

// localToken gets a token from the sidecar's own token endpoint, as an
// S-360 client does before its calls.
func localToken(t *testing.T, e *edge) string {
	t.Helper()
	status, _, body := post(t, e.URL+"/tnai/backend-apis/v1/auth", `{"operator":"`+simOperator+`","secret":"`+simSecret+`"}`)
	var tok struct{ Token string }
	if err := json.Unmarshal(body, &tok); status != 200 || tok.Token == "" {
		t.Fatalf("local token: %d %s %v", status, body, err)
	}
	return tok.Token
}

// TestHangingIdentityProvider: with a provider that accepts and never
// answers, S-360 calls (a cached hit with a forged JWT or the local token
// as Bearer), the token endpoint and a website page with the local token
// are answered at once without contacting it; a website page with a JWT
// goes on anonymously, and a protected page answers 503, both while the
// provider still hangs.
func TestHangingIdentityProvider(t *testing.T) {
	idp := startHangingIdP(t)
	s := startSim(t)
	web := echoWebsite(t)
	e := startEdge(t, pollsOffCaddyfile(s.URL, oidcLogin(idp.Issuer(), "website", "protect /account*"),
		"reverse_proxy "+strings.TrimPrefix(web.URL, "http://")), oidcEnvSecret(t, "client-secret")...)
	catalog := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
	if status, hdr, body := post(t, catalog, `{}`); status != 200 || !strings.Contains(hdr.Get("Cache-Status"), "stored") {
		t.Fatalf("catalog miss: %d %q %.300s", status, hdr.Get("Cache-Status"), body)
	}
	local := localToken(t, e)
	forged := oidctest.Token(t, oidctest.ForeignKey(t), idp.Issuer(), "website", "intruder", time.Now())

	// The sidecar gives the provider 10 s; these requests get 1 s.
	fast := &http.Client{Timeout: time.Second}
	send := func(c *http.Client, method, target, body string, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.URL+target, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, target, err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	for name, tok := range map[string]string{"forged JWT": forged, "local token": local} {
		status, hdr, _ := send(fast, "POST", api+"catalogService/v1_33/getCatalogDetailed", `{}`, "Authorization", "Bearer "+tok)
		if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit") {
			t.Errorf("cached catalog with a %s as Bearer: %d %q, want a hit", name, status, hdr.Get("Cache-Status"))
		}
		if status, _, body := send(fast, "POST", "/tnai/backend-apis/v1/auth", "", "Authorization", "Bearer "+tok); status != 200 {
			t.Errorf("token endpoint with a %s as Bearer: %d %s", name, status, body)
		}
	}
	if status, _, body := send(fast, "GET", "/page", "", "Authorization", "Bearer "+local, "X-S360-User", "admin"); status != 200 || strings.TrimSpace(body) != "{}" {
		t.Errorf("website page with the local token: %d %s, want it passed on without identity", status, body)
	}
	if n := idp.accepted.Load(); n != 0 {
		t.Fatalf("the sidecar opened %d connections to the identity provider for S-360 calls, the token endpoint and the local token; want none", n)
	}

	// Where identity is used, the sidecar waits at most 2 s for the
	// provider; the provider keeps hanging for 10 s.
	patient := &http.Client{Timeout: 5 * time.Second}
	if status, _, body := send(patient, "GET", "/page", "", "Authorization", "Bearer "+forged, "X-S360-User", "admin"); status != 200 || strings.TrimSpace(body) != "{}" {
		t.Errorf("website page with a JWT, provider hanging: %d %s, want it passed on without identity", status, body)
	}
	status, hdr, body := send(patient, "GET", "/account", "", "Authorization", "Bearer "+forged, "Accept", "application/json")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"provider_unavailable"`) || hdr.Get("Retry-After") == "" {
		t.Errorf("protected page with a JWT, provider hanging: %d %s, want 503 provider_unavailable with Retry-After", status, body)
	}
	if idp.accepted.Load() == 0 || idp.open.Load() == 0 {
		t.Errorf("the provider was not asked, or no longer hangs (%d connections, %d open): the answers above prove nothing", idp.accepted.Load(), idp.open.Load())
	}
}

// TestUnknownKeyFetchesKeysOnce: tokens signed by a key the provider does
// not publish, on protected and website paths, make at most one key set
// fetch, and the provider's own tokens still verify without another.
func TestUnknownKeyFetchesKeysOnce(t *testing.T) {
	var jwks atomic.Int32
	p := oidctest.Start(t, oidctest.Count(&jwks, func(path string) bool { return path == mockoidc.JWKSEndpoint }))
	s := startSim(t)
	web := echoWebsite(t)
	e := startEdge(t, identityCaddyfile(s, p, web.URL), oidcEnv(t, p)...)
	forged := oidctest.Token(t, oidctest.ForeignKey(t), p.Issuer(), p.ClientID, "intruder", time.Now())
	c := newClient("forger")

	const n = 20
	for i := range n {
		r := c.get(t, e.URL+"/account", "Authorization", "Bearer "+forged, "Accept", "application/json")
		if r.status != http.StatusUnauthorized || r.apiError(t).Error != "invalid_token" {
			t.Fatalf("protected page with a forged token (%d): %s, want 401 invalid_token", i, r)
		}
		r = c.get(t, e.URL+"/page", "Authorization", "Bearer "+forged)
		if r.status != 200 || strings.TrimSpace(string(r.body)) != "{}" {
			t.Fatalf("website page with a forged token (%d): %s, want it passed on without identity", i, r)
		}
	}
	if got := jwks.Load(); got > 1 {
		t.Fatalf("%d requests with tokens of an unknown key made %d key set fetches, want at most 1", 2*n, got)
	}
	r := c.get(t, e.URL+"/account", "Authorization", "Bearer "+providerToken(t, p))
	if r.status != 200 || !strings.Contains(string(r.body), `"X-S360-User"`) {
		t.Fatalf("protected page with the provider's token: %s, want it passed on with the identity", r)
	}
	if got := jwks.Load(); got != 1 {
		t.Fatalf("%d key set fetches in all, want 1: the provider's token is signed by a key the first fetch brought", got)
	}
}
