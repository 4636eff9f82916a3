package oidcrp

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// keyRefresh is the least time between two fetches of the provider's key
// set (JWKS) once one has succeeded.
const keyRefresh = time.Minute

// errKeysThrottled: the key set was fetched less than keyRefresh ago.
var errKeysThrottled = errors.New("the key set was fetched less than a minute ago")

// keyGate is the transport of the verifier's key set fetches. go-oidc's
// RemoteKeySet verifies a token with the keys it holds and fetches the set
// again whenever they do not verify it (an unknown kid, a bad signature),
// so every forged token would be one request to the provider. The gate lets
// one fetch through per keyRefresh and fails the others at once, without
// network: the token is then judged by the keys at hand, and a token
// signed by a known key never waits. Until a fetch has succeeded, a failed
// one may be tried again after discoveryRetry, as discovery is: without
// keys no token verifies, not even at login.
//
// The gate sits on the fetch rather than around the KeySet because
// RemoteKeySet cannot be asked whether it knows a key without fetching
// when it does not; this way go-oidc keeps parsing and choosing the keys.
type keyGate struct {
	next http.RoundTripper

	mu       sync.Mutex
	openAt   time.Time // no fetch before
	haveKeys bool      // a fetch succeeded
}

func (g *keyGate) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now()
	g.mu.Lock()
	if now.Before(g.openAt) {
		g.mu.Unlock()
		return nil, errKeysThrottled
	}
	g.openAt = now.Add(keyRefresh)
	g.mu.Unlock()

	resp, err := g.next.RoundTrip(r)

	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil && resp.StatusCode == http.StatusOK {
		g.haveKeys = true
	} else if !g.haveKeys {
		g.openAt = now.Add(discoveryRetry)
	}
	return resp, err
}

// gatedClient is c with its transport behind a keyGate of its own.
func gatedClient(c *http.Client) *http.Client {
	gc := *c
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	gc.Transport = &keyGate{next: next}
	return &gc
}
