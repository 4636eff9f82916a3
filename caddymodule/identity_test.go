package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s360edge/s360edge/internal/oidctest"
	"github.com/s360edge/s360edge/oidcrp"
)

// seenHeaders is the website: it records the X-S360-* headers it gets.
type seenHeaders struct{ got map[string]string }

func (s *seenHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	s.got = map[string]string{}
	for k := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-s360-") {
			s.got[k] = r.Header.Get(k)
		}
	}
	w.WriteHeader(http.StatusTeapot)
	return nil
}

// TestIdentityOnlyWhereUsed: S-360 calls (a cached hit included) and the
// token endpoint never ask the identity provider, whatever Bearer token
// they carry; the local token is no buyer credential anywhere; forged
// identity headers are removed on every path.
func TestIdentityOnlyWhereUsed(t *testing.T) {
	var providerCalls atomic.Int32
	m := oidctest.Start(t, oidctest.Count(&providerCalls, func(string) bool { return true }))
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second)
	h.OIDC = &OIDC{Issuer: m.Issuer(), ClientID: m.ClientID, ClientSecret: m.ClientSecret,
		CookieSecret: strings.Repeat("k", 32), Protect: []string{"/account*"}}
	if err := h.provisionOIDC(); err != nil {
		t.Fatal(err)
	}
	forgedJWT := oidctest.Token(t, oidctest.ForeignKey(t), m.Issuer(), m.ClientID, "intruder", time.Now())
	local := h.localToken.issue()
	forgedHeaders := map[string]string{"X-S360-User": "admin", "X-S360-Email": "boss@example.com"}

	do := func(method, path, body, bearer string) (*httptest.ResponseRecorder, *http.Request, *seenHeaders) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json")
		for k, v := range forgedHeaders {
			r.Header.Set(k, v)
		}
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		w, next := httptest.NewRecorder(), &seenHeaders{}
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		return w, r, next
	}
	noIdentityHeaders := func(what string, hdr http.Header) {
		t.Helper()
		for k := range hdr {
			if strings.HasPrefix(strings.ToLower(k), "x-s360-") {
				t.Errorf("%s: the client's %s header was kept", what, k)
			}
		}
	}

	if w, _, _ := do("POST", catalogPath, "{}", ""); w.Code != 200 {
		t.Fatalf("catalog miss: %d %s", w.Code, w.Body)
	}
	for name, bearer := range map[string]string{"forged JWT": forgedJWT, "local token": local, "garbage": "x.y.z"} {
		w, r, _ := do("POST", catalogPath, "{}", bearer)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Cache-Status"), "s360edge; hit") {
			t.Errorf("cached catalog with a %s: %d %q, want a hit", name, w.Code, w.Header().Get("Cache-Status"))
		}
		noIdentityHeaders("S-360 call with a "+name, r.Header)
		w, r, _ = do("POST", "/tnai/backend-apis/v1/auth", "", bearer)
		var tok struct{ Token string }
		if json.Unmarshal(w.Body.Bytes(), &tok); w.Code != 200 || !h.localToken.issued(tok.Token) {
			t.Errorf("token endpoint with a %s: %d %s", name, w.Code, w.Body)
		}
		noIdentityHeaders("token endpoint with a "+name, r.Header)
	}
	if n := providerCalls.Load(); n != 0 {
		t.Fatalf("S-360 calls and the token endpoint made %d requests to the identity provider, want none", n)
	}

	// The local token is not a buyer's, on paths that do use identity.
	w, _, next := do("GET", "/page", "", local)
	if w.Code != http.StatusTeapot || len(next.got) != 0 {
		t.Errorf("website path with the local token: %d, headers %v; want it passed on without identity", w.Code, next.got)
	}
	w, _, _ = do("GET", "/account/orders", "", local)
	var e struct{ Error string }
	if json.Unmarshal(w.Body.Bytes(), &e); w.Code != http.StatusUnauthorized || e.Error != "login_required" {
		t.Errorf("protected path with the local token and no session: %d %s, want 401 login_required", w.Code, w.Body)
	}
	if n := providerCalls.Load(); n != 0 {
		t.Fatalf("the local token made %d requests to the identity provider, want none", n)
	}

	// A JWT on a path that uses identity is checked with the provider.
	w, _, _ = do("GET", "/account/orders", "", forgedJWT)
	if json.Unmarshal(w.Body.Bytes(), &e); w.Code != http.StatusUnauthorized || e.Error != "invalid_token" {
		t.Errorf("protected path with a forged JWT: %d %s, want 401 invalid_token", w.Code, w.Body)
	}
	w, _, next = do("GET", "/page", "", forgedJWT)
	if w.Code != http.StatusTeapot || len(next.got) != 0 {
		t.Errorf("website path with a forged JWT: %d, headers %v; want it passed on without identity", w.Code, next.got)
	}
	if providerCalls.Load() == 0 {
		t.Error("a JWT on a protected path was not checked with the provider")
	}
}

// countingRevocations is a revocation list that counts its reads.
type countingRevocations struct{ reads atomic.Int32 }

func (c *countingRevocations) Revoke(string, time.Time) error { return nil }
func (c *countingRevocations) Revoked(string) (bool, error) {
	c.reads.Add(1)
	return false, nil
}

// TestSessionNotReadOnS360Calls: a session that another login method
// started (SAML: a cookie, no provider) is not read on S-360 calls, so the
// revocation list (Redis in a cluster) is not asked there; it is on the
// website's paths, which get the identity headers.
func TestSessionNotReadOnS360Calls(t *testing.T) {
	h := newTestHandler(t, &fakeUpstream{}, time.Second)
	rev := &countingRevocations{}
	rp, err := oidcrp.New(oidcrp.Config{NoProvider: true, CookieSecret: strings.Repeat("k", 32), Revocations: rev, IgnoreBearer: h.localBearer})
	if err != nil {
		t.Fatal(err)
	}
	h.rp = rp
	rec := httptest.NewRecorder()
	if err := rp.StartSession(rec, httptest.NewRequest("GET", "/", nil), oidcrp.Login{Via: "saml", Subject: "buyer-7"}); err != nil {
		t.Fatal(err)
	}
	cookie := rec.Result().Cookies()[0]
	do := func(method, path, body, bearer string) (*httptest.ResponseRecorder, *seenHeaders) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		r.AddCookie(cookie)
		w, next := httptest.NewRecorder(), &seenHeaders{}
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		return w, next
	}
	for _, bearer := range []string{"", h.localToken.issue()} {
		if w, _ := do("POST", catalogPath, "{}", bearer); w.Code != 200 {
			t.Fatalf("catalog: %d %s", w.Code, w.Body)
		}
		if w, _ := do("POST", "/tnai/backend-apis/v1/auth", "", bearer); w.Code != 200 {
			t.Fatalf("token endpoint: %d %s", w.Code, w.Body)
		}
	}
	if n := rev.reads.Load(); n != 0 {
		t.Fatalf("S-360 calls read the revocation list %d times, want none", n)
	}
	w, next := do("GET", "/page", "", h.localToken.issue())
	if w.Code != http.StatusTeapot || next.got["X-S360-User"] != "buyer-7" || rev.reads.Load() != 1 {
		t.Fatalf("website path with the session and the local token: %d, headers %v, %d revocation reads; want the buyer and one read", w.Code, next.got, rev.reads.Load())
	}
}
