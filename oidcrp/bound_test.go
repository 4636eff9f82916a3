package oidcrp

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/s360edge/s360edge/internal/oidctest"
)

// hangingProvider makes the provider's answers at the paths for which hang
// says so wait until release is closed (or their client gives up), and
// counts the requests to discovery, the key set and the token endpoint.
type hangingProvider struct {
	hang    func(path string) bool
	release chan struct{}
	counts  map[string]*atomic.Int32 // fixed at creation
}

func newHangingProvider(hang func(path string) bool) *hangingProvider {
	h := &hangingProvider{hang: hang, release: make(chan struct{}), counts: map[string]*atomic.Int32{}}
	for _, p := range []string{mockoidc.DiscoveryEndpoint, mockoidc.JWKSEndpoint, mockoidc.TokenEndpoint} {
		h.counts[p] = new(atomic.Int32)
	}
	return h
}

func (h *hangingProvider) count(path string) int32 { return h.counts[path].Load() }

func (h *hangingProvider) total() (n int32) {
	for _, c := range h.counts {
		n += c.Load()
	}
	return n
}

func (h *hangingProvider) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := h.counts[r.URL.Path]; c != nil {
			c.Add(1)
		}
		if h.hang != nil && h.hang(r.URL.Path) {
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// signedBy is an ID token for the env's client, signed by k.
func (e *env) signedBy(k *mockoidc.Keypair) string {
	return oidctest.Token(e.t, k, e.m.Issuer(), e.m.ClientID, "bearer-buyer", e.m.Now())
}

// timed runs e.do and returns how long it took (fake time in a bubble).
func (e *env) timed(c *http.Client, method, path string, h http.Header) (result, time.Duration) {
	e.t.Helper()
	start := time.Now()
	res := e.do(c, method, path, h)
	return res, time.Since(start)
}

// TestIdentifyWaitsForDiscoveryAtMostTheBound: with a provider that does
// not answer discovery, a Bearer token gets the unavailable answer on a
// protected path, and goes on anonymously elsewhere, within identifyTimeout;
// the discovery goes on and serves the requests after it.
func TestIdentifyWaitsForDiscoveryAtMostTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hp := newHangingProvider(func(p string) bool { return p == mockoidc.DiscoveryEndpoint })
		e := newEnv(t, envOptions{provider: hp.wrap})
		api := &http.Client{Transport: e.net}
		bearer := http.Header{"Authorization": {"Bearer " + e.signedBy(e.m.Keypair)}, "Accept": {"application/json"}}

		res, took := e.timed(api, http.MethodGet, "/app/orders", bearer)
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "provider_unavailable" || took > identifyTimeout {
			t.Fatalf("protected path, provider hanging: %d %s after %s, want 503 provider_unavailable within %s", res.status, res.body, took, identifyTimeout)
		}
		// The discovery has made a request wait the bound: the ones after
		// it do not wait at all.
		res, took = e.timed(api, http.MethodGet, "/page", bearer)
		if res.status != http.StatusOK || len(res.json(t)) != 0 || took != 0 {
			t.Fatalf("open path, provider hanging: %d %s after %s, want 200 without identity at once", res.status, res.body, took)
		}
		res, took = e.timed(api, http.MethodGet, "/auth/userinfo", bearer)
		if res.status != http.StatusServiceUnavailable || took != 0 {
			t.Fatalf("userinfo, provider hanging: %d %s after %s, want 503 at once", res.status, res.body, took)
		}
		if n := hp.count(mockoidc.DiscoveryEndpoint); n != 1 {
			t.Fatalf("%d discovery requests, want the one still running", n)
		}

		close(hp.release)
		synctest.Wait()
		res = e.do(api, http.MethodGet, "/app/orders", bearer)
		if res.status != http.StatusOK || res.json(t)["X-S360-User"] != "bearer-buyer" {
			t.Fatalf("once the provider answers: %d %s", res.status, res.body)
		}
		if n := hp.count(mockoidc.DiscoveryEndpoint); n != 1 {
			t.Fatalf("%d discovery requests, want 1: the one the first request started", n)
		}
	})
}

// TestIdentifyWaitsForRefreshAtMostTheBound: a session whose refresh does
// not answer is not usable (unavailable on a protected path, anonymous
// elsewhere) past identifyTimeout once its ID token has expired, but it is
// not ended: the refresh goes on, and the next request gets its result.
// Before the ID token expires, the session goes on while the refresh hangs.
func TestIdentifyWaitsForRefreshAtMostTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hang atomic.Bool
		hp := newHangingProvider(func(p string) bool { return p == mockoidc.TokenEndpoint && hang.Load() })
		e := newEnv(t, envOptions{provider: hp.wrap})
		e.login(e.browser, "/")
		hang.Store(true)

		// Shortly before the ID token expires: the session goes on.
		time.Sleep(9*time.Minute + 30*time.Second)
		accept := http.Header{"Accept": {"application/json"}}
		res, took := e.timed(e.browser, http.MethodGet, "/app/orders", accept)
		if res.status != http.StatusOK || res.json(t)["X-S360-User"] == nil || took > identifyTimeout {
			t.Fatalf("near expiry, refresh hanging: %d %s after %s, want 200 with the identity within %s", res.status, res.body, took, identifyTimeout)
		}

		// Past it: not usable, not ended.
		time.Sleep(time.Minute)
		res, took = e.timed(e.browser, http.MethodGet, "/app/orders", accept)
		if res.status != http.StatusServiceUnavailable || res.json(t)["error"] != "provider_unavailable" || took > identifyTimeout {
			t.Fatalf("expired, refresh hanging: %d %s after %s, want 503 provider_unavailable within %s", res.status, res.body, took, identifyTimeout)
		}
		if c := res.cookie[DefaultCookieName]; c != nil {
			t.Fatalf("the session cookie was touched while the refresh hangs: %+v", c)
		}
		res, took = e.timed(e.browser, http.MethodGet, "/page", accept)
		if res.status != http.StatusOK || len(res.json(t)) != 0 || took > identifyTimeout {
			t.Fatalf("open path, refresh hanging: %d %s after %s, want 200 without identity within %s", res.status, res.body, took, identifyTimeout)
		}

		hang.Store(false)
		close(hp.release)
		synctest.Wait()
		refreshes := hp.count(mockoidc.TokenEndpoint)
		res = e.get(e.browser, "/app/orders")
		if res.status != http.StatusOK || res.json(t)["X-S360-User"] == nil || res.cookie[DefaultCookieName] == nil {
			t.Fatalf("once the provider answers: %d %s, want the refreshed session", res.status, res.body)
		}
		if n := hp.count(mockoidc.TokenEndpoint); n != refreshes {
			t.Fatalf("the request after the hang made a refresh of its own (%d token requests, were %d), want the result of the one that hung", n, refreshes)
		}
	})
}

// TestUnknownKeyFetchesKeysOncePerMinute: tokens signed by a key the
// provider does not have make at most one key set fetch a minute, and a
// token signed by a known key verifies without one.
func TestUnknownKeyFetchesKeysOncePerMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hp := newHangingProvider(nil)
		e := newEnv(t, envOptions{provider: hp.wrap})
		api := &http.Client{Transport: e.net}
		forged := http.Header{"Authorization": {"Bearer " + e.signedBy(oidctest.ForeignKey(t))}, "Accept": {"application/json"}}
		good := http.Header{"Authorization": {"Bearer " + e.signedBy(e.m.Keypair)}, "Accept": {"application/json"}}
		jwks := func() int32 { return hp.count(mockoidc.JWKSEndpoint) }

		for i := range 50 {
			res := e.do(api, http.MethodGet, "/app/orders", forged)
			if res.status != http.StatusUnauthorized || res.json(t)["error"] != "invalid_token" {
				t.Fatalf("forged token %d: %d %s, want 401 invalid_token", i, res.status, res.body)
			}
		}
		if n := jwks(); n != 1 {
			t.Fatalf("50 tokens of an unknown key made %d key set fetches, want 1", n)
		}
		// Tampered signatures under the known kid are throttled too.
		parts := strings.Split(good.Get("Authorization"), ".")
		tampered := http.Header{"Authorization": {parts[0] + "." + parts[1] + ".AAAA" + parts[2][4:]}}
		for range 10 {
			if res := e.do(api, http.MethodGet, "/app/orders", tampered); res.status != http.StatusUnauthorized {
				t.Fatalf("tampered token: %d %s", res.status, res.body)
			}
		}
		if res := e.do(api, http.MethodGet, "/app/orders", good); res.status != http.StatusOK || res.json(t)["X-S360-User"] != "bearer-buyer" {
			t.Fatalf("known key: %d %s", res.status, res.body)
		}
		if n := jwks(); n != 1 {
			t.Fatalf("%d key set fetches after the tampered and the good tokens, want still 1", n)
		}

		time.Sleep(keyRefresh)
		for range 10 {
			e.do(api, http.MethodGet, "/app/orders", forged)
		}
		if n := jwks(); n != 2 {
			t.Fatalf("%d key set fetches a minute later, want 2", n)
		}
	})
}

// TestKeyGateRetriesBeforeTheFirstKeys: while no key set has arrived, a
// failed fetch may be retried after discoveryRetry, not a minute later.
func TestKeyGateRetriesBeforeTheFirstKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		status := http.StatusServiceUnavailable
		srv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(status)
		})
		c := gatedClient(&http.Client{Transport: memNet{"idp.test": srv}})
		get := func() error {
			resp, err := c.Get("http://idp.test/jwks")
			if err == nil {
				resp.Body.Close()
			}
			return err
		}
		get()
		if err := get(); err == nil || calls.Load() != 1 {
			t.Fatalf("second fetch at once: %v, %d calls", err, calls.Load())
		}
		time.Sleep(discoveryRetry)
		status = http.StatusOK
		if err := get(); err != nil || calls.Load() != 2 {
			t.Fatalf("after discoveryRetry: %v, %d calls", err, calls.Load())
		}
		time.Sleep(discoveryRetry)
		if err := get(); err == nil || calls.Load() != 2 {
			t.Fatalf("with keys, %s later: %v, %d calls; want refused", discoveryRetry, err, calls.Load())
		}
		time.Sleep(keyRefresh - discoveryRetry)
		if err := get(); err != nil || calls.Load() != 3 {
			t.Fatalf("a minute later: %v, %d calls", err, calls.Load())
		}
	})
}

// TestIgnoredBearerIsNoCredential: a Bearer token that IgnoreBearer names
// (the sidecar's local token) leaves the request to its cookie, and nothing
// that is not a JWT reaches the provider.
func TestIgnoredBearerIsNoCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hp := newHangingProvider(nil)
		const local = "c2lkZWNhci1sb2NhbC10b2tlbg"
		e := newEnv(t, envOptions{provider: hp.wrap, cfg: func(c *Config) {
			c.IgnoreBearer = func(tok string) bool { return tok == local }
		}})
		api := &http.Client{Transport: e.net}
		hdr := http.Header{"Authorization": {"Bearer " + local}, "Accept": {"application/json"}}
		res := e.do(api, http.MethodGet, "/app/orders", hdr)
		if res.status != http.StatusUnauthorized || res.json(t)["error"] != "login_required" {
			t.Fatalf("local token, no session: %d %s, want 401 login_required", res.status, res.body)
		}
		if res := e.do(api, http.MethodGet, "/page", hdr); res.status != http.StatusOK || len(res.json(t)) != 0 {
			t.Fatalf("local token on an open path: %d %s", res.status, res.body)
		}
		garbage := http.Header{"Authorization": {"Bearer not-a-jwt"}, "Accept": {"application/json"}}
		if res := e.do(api, http.MethodGet, "/app/orders", garbage); res.status != http.StatusUnauthorized || res.json(t)["error"] != "invalid_token" {
			t.Fatalf("not a JWT: %d %s", res.status, res.body)
		}
		if n := hp.total(); n != 0 {
			t.Fatalf("%d provider requests, want none", n)
		}

		e.login(e.browser, "/")
		res = e.do(e.browser, http.MethodGet, "/app/orders", hdr)
		if res.status != http.StatusOK || res.json(t)["X-S360-User"] == nil {
			t.Fatalf("local token with a session: %d %s, want the session's buyer", res.status, res.body)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", "Bearer "+local)
		if id, err := e.rp.Identify(nil, req); id != nil || err != nil {
			t.Fatalf("Identify with the local token alone = %v, %v; want anonymous", id, err)
		}
	})
}
