// Package oidctest runs mockoidc, a real OpenID Connect provider, for
// tests, and signs the ID tokens they send to the sidecar.
package oidctest

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// Start runs mockoidc on a free 127.0.0.1 port until the test ends, with
// the middlewares mw (to count or change its answers) in front of it.
func Start(t testing.TB, mw ...func(http.Handler) http.Handler) *mockoidc.MockOIDC {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range mw {
		if err := m.AddMiddleware(f); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// Count is a middleware for Start that counts the requests whose path
// path accepts.
func Count(n *atomic.Int32, path func(string) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if path(r.URL.Path) {
				n.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Token is an ID token for issuer and audience about sub, issued at now and
// valid for 10 minutes, signed by k: a provider's key pair, or one that no
// provider publishes (mockoidc.RandomKeypair) for a forged token.
func Token(t testing.TB, k *mockoidc.Keypair, issuer, audience, sub string, now time.Time) string {
	t.Helper()
	tok, err := k.SignJWT(jwt.MapClaims{"iss": issuer, "aud": audience, "sub": sub,
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ForeignKey is a key pair no provider publishes.
func ForeignKey(t testing.TB) *mockoidc.Keypair {
	t.Helper()
	k, err := mockoidc.RandomKeypair(2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
