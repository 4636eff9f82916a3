package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// fakeUpstream stands in for S-360 in this package's unit tests; the real
// simulator is used by the integration tests.
type fakeUpstream struct {
	calls   atomic.Int32
	lastReq atomic.Value // string: Authorization + " " + body
	answer  func(w http.ResponseWriter, r *http.Request)
}

func (f *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == upstream.AuthPath {
		io.WriteString(w, `{"token":"operator-token"}`)
		return
	}
	f.calls.Add(1)
	b, _ := io.ReadAll(r.Body)
	f.lastReq.Store(r.Header.Get("Authorization") + " " + string(b))
	if f.answer != nil {
		f.answer(w, r)
		return
	}
	io.WriteString(w, `{"statusCode":"success","ok":true}`)
}

func newTestHandler(t testing.TB, f *fakeUpstream, timeout time.Duration) *Handler {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	h := &Handler{
		MaxBodySize: 100,
		RateLimit:   &RateLimit{Calls: 60, Window: caddy.Duration(time.Minute)},
		logger:      zap.NewNop(),
		classifier:  s360.Classifier{},
		canon:       new(s360.CanonicalMemo),
		localToken:  newLocalTokens("X_WEB", "s"),
		tokenGuard:  newTokenGuard(time.Now, zap.NewNop()),
		client:      upstream.New(upstream.Config{BaseURL: srv.URL, Operator: "X_WEB", Secret: "s", Timeout: timeout}),
	}
	useEdge(t, h, edge.Options{Dir: t.TempDir(), Institution: "x"})
	return h
}

// useEdge gives h an edge opened with opts, and its order queue, started
// with h's config; both close at the test's end.
func useEdge(t testing.TB, h *Handler, opts edge.Options) {
	t.Helper()
	e, err := edge.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	q, err := openQueue(e, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close) // before the edge's
	h.edge, h.queue, h.ticketStreams = e, q, newStreamsEnd()
	h.startQueue(q)()
}

type nextHandler struct{ called bool }

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called = true
	w.WriteHeader(http.StatusTeapot)
	return nil
}

func serve(h *Handler, method, path, body string, hdr map[string]string) (*httptest.ResponseRecorder, *nextHandler) {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	next := &nextHandler{}
	h.ServeHTTP(w, r, next)
	return w, next
}

const catalogPath = "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed"

func TestRejectedRequestsNeverReachUpstream(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second)
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", catalogPath, "", 405, "method_not_allowed"},
		{"PUT", catalogPath, "{}", 405, "method_not_allowed"},
		{"POST", "/tnseb/backend-apis/externalOrderHistoryService/v1_34/listTicketsByCriteria", "{}", 403, "method_denied"},
		{"POST", "/tnseb/backend-apis/catalogService/v1_33/deleteEverything", "{}", 403, "method_denied"},
		{"POST", "/tnseb/backend-apis/availabilityService/v1_33/setStock", "{}", 403, "method_denied"},
		{"POST", "/tnseb/backend-apis/catalogService/v1/getCatalogDetailed", "{}", 403, "method_denied"},
		{"POST", "/tnseb/backend-apis/catalogService/v1_33x/getCatalogDetailed", "{}", 403, "method_denied"},
		{"POST", "/tnseb/backend-apis/x/v1_33/../../catalogService/v1_33/getCatalogDetailed", "{}", 404, "not_found"},
		{"POST", catalogPath, `{"a":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, 400, "invalid_json"},
		{"POST", "/tnseb/backend-apis/catalogService/getCatalog", "{}", 404, "not_found"},
		{"POST", catalogPath, "", 400, "invalid_json"},
		{"POST", catalogPath, "not json", 400, "invalid_json"},
		{"POST", catalogPath, "[1,2]", 400, "invalid_json"},
		{"POST", catalogPath, `{"a":1}{"b":2}`, 400, "invalid_json"},
		{"POST", catalogPath, `{"pad":"` + strings.Repeat("x", 200) + `"}`, 413, "body_too_large"},
	}
	for _, c := range cases {
		w, next := serve(h, c.method, c.path, c.body, nil)
		var e apiError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != c.status || e.Code != c.code || e.Message == "" || next.called {
			t.Errorf("%s %s %.20q: got %d %s (next %v), want %d %s", c.method, c.path, c.body, w.Code, w.Body, next.called, c.status, c.code)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: error not JSON typed", c.method, c.path)
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("upstream called %d times for rejected requests", n)
	}
}

func TestNonJSONContentTypeIs415(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second)
	cases := []struct {
		name, contentType string
		status            int
	}{
		{"json", "application/json", 200},
		{"json utf-8", "application/json; charset=utf-8", 200},
		{"json UTF-8 upper case", "Application/JSON;charset=UTF-8", 200},
		{"json other parameter", "application/json; foo=bar", 200},
		{"missing", "", 415},
		{"form", "application/x-www-form-urlencoded", 415},
		{"multipart", "multipart/form-data; boundary=x", 415},
		{"text", "text/plain", 415},
		{"json latin-1", "application/json; charset=iso-8859-1", 415},
		{"json-like", "application/json-patch+json", 415},
		{"vendor json", "application/vnd.api+json", 415},
		{"garbage", "application/json;;;=", 415},
	}
	want := int32(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.calls.Load()
			// A fresh body per case, so each allowed case is a miss.
			w, _ := serve(h, "POST", "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability", `{"case":"`+c.name+`"}`, map[string]string{"Content-Type": c.contentType})
			if w.Code != c.status {
				t.Fatalf("got %d %s, want %d", w.Code, w.Body, c.status)
			}
			if c.status == 415 {
				var e apiError
				if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code != "unsupported_media_type" || e.Message == "" {
					t.Errorf("415 body %s", w.Body)
				}
				if n := f.calls.Load() - before; n != 0 {
					t.Errorf("%d upstream calls for a 415", n)
				}
			} else {
				want++
			}
		})
	}
	if got := f.calls.Load(); got != want {
		t.Fatalf("upstream calls %d, want %d (one per accepted case)", got, want)
	}
}

func TestBodyShapeLimitsAre400BeforeUpstream(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second)
	h.MaxBodySize = 1 << 20
	items := func(n int) string { return `{"a":[` + strings.TrimSuffix(strings.Repeat("1,", n), ",") + `]}` }
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"depth 32", `{"a":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`, true},
		{"depth 33", `{"a":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, false},
		{"number of 32 digits", `{"n":` + strings.Repeat("7", 32) + `}`, true},
		{"number of 33 digits", `{"n":` + strings.Repeat("7", 33) + `}`, false},
		{"1000 items", items(1000), true},
		{"1001 items", items(1001), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.calls.Load()
			w, _ := serve(h, "POST", catalogPath, c.body, nil)
			calls := f.calls.Load() - before
			if c.ok {
				if w.Code != 200 || calls != 1 {
					t.Fatalf("got %d %s with %d upstream calls, want 200 and 1", w.Code, w.Body, calls)
				}
				return
			}
			var e apiError
			if w.Code != 400 || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code != "invalid_json" || !strings.Contains(e.Message, "more than") && !strings.Contains(e.Message, "deeper than") {
				t.Fatalf("got %d %s, want 400 invalid_json naming the limit", w.Code, w.Body)
			}
			if calls != 0 {
				t.Fatalf("%d upstream calls for a refused body", calls)
			}
		})
	}
}

func TestOtherPathsGoToTheWebsite(t *testing.T) {
	h := newTestHandler(t, &fakeUpstream{}, time.Second)
	for _, p := range []string{"/", "/index.html", "/tnseb/apidocs/x.html", "/tnai/other"} {
		w, next := serve(h, "GET", p, "", nil)
		if !next.called || w.Code != http.StatusTeapot {
			t.Errorf("%s not passed on", p)
		}
	}
}

func TestCallCarriesOperatorTokenNotTheWebsites(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second)
	w, _ := serve(h, "POST", catalogPath, "{ \"b\":1, \"a\":2, \"requestId\": 5 }", map[string]string{"Authorization": "Bearer website-token"})
	if w.Code != 200 || w.Body.String() != `{"statusCode":"success","ok":true}` {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	if got := f.lastReq.Load(); got != `Bearer operator-token {"a":2,"b":1}` {
		t.Fatalf("upstream saw %q", got)
	}
	if cs := w.Header().Get("Cache-Status"); !strings.HasPrefix(cs, "s360edge;") {
		t.Fatalf("Cache-Status %q", cs)
	}
	// Orders go upstream exactly as sent.
	order := `{"pointOfSalesId":1,"requestId":9}`
	serve(h, "POST", "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder", order, nil)
	if got := f.lastReq.Load(); got != "Bearer operator-token "+order {
		t.Fatalf("order body changed: %q", got)
	}
}

func TestUpstreamFailuresMapToGatewayErrors(t *testing.T) {
	cases := []struct {
		answer     func(w http.ResponseWriter, r *http.Request)
		status     int
		code       string
		retryAfter string
	}{
		{func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, 502, "upstream_error", ""},
		{func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(509) }, 429, "upstream_rate_limited", "60"},
		{func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Retry-After", "7"); w.WriteHeader(429) }, 429, "upstream_rate_limited", "7"},
		{func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) }, 502, "upstream_auth_failed", ""},
		{func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, 504, "upstream_timeout", ""},
		{func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `<html>"statusCode":"success"</html>`) }, 502, "upstream_invalid", ""},
		{func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"statusCode":"success","code":"TRUNC`)
		}, 502, "upstream_invalid", ""},
	}
	for i, c := range cases {
		h := newTestHandler(t, &fakeUpstream{answer: c.answer}, 300*time.Millisecond)
		w, _ := serve(h, "POST", catalogPath, "{}", nil)
		var e apiError
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != c.status || e.Code != c.code || w.Header().Get("Retry-After") != c.retryAfter {
			t.Errorf("case %d: got %d %s Retry-After=%q", i, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
	}
	// Business errors are HTTP 200 envelopes and pass through untouched.
	biz := `{"statusCode":"error","statusDetail":"bad request"}`
	h := newTestHandler(t, &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, biz) }}, time.Second)
	if w, _ := serve(h, "POST", catalogPath, "{}", nil); w.Code != 200 || w.Body.String() != biz {
		t.Errorf("business error changed: %d %s", w.Code, w.Body)
	}
}

func TestLocalTokenEndpoint(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second) // operator X_WEB, secret "s"
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"right credentials", `{"operator":"X_WEB","partner":"site","secret":"s"}`, 200, ""},
		{"no body: a site written for the sidecar", ``, 200, ""},
		{"no credentials", `{"partner":"site"}`, 200, ""},
		{"wrong secret", `{"operator":"X_WEB","secret":"website-secret"}`, 401, "invalid_credentials"},
		{"wrong operator", `{"operator":"OLD","secret":"s"}`, 401, "invalid_credentials"},
		{"secret alone", `{"secret":"s"}`, 401, "invalid_credentials"},
		{"secret with a longer prefix", `{"operator":"X_WEB","secret":"ss"}`, 401, "invalid_credentials"},
		{"not JSON", `operator=X_WEB`, 400, "invalid_json"},
	}
	seen := map[string]bool{}
	for _, p := range []string{"/tnai/backend-apis/v1/auth", "/tnco/backend-apis/v1/auth"} {
		for _, c := range cases {
			t.Run(p+" "+c.name, func(t *testing.T) {
				w, _ := serve(h, "POST", p, c.body, nil)
				var out struct{ Token, Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || w.Code != c.status || out.Error != c.code {
					t.Fatalf("got %d %s, want %d %q", w.Code, w.Body, c.status, c.code)
				}
				if strings.Contains(w.Body.String(), "operator-token") || strings.Contains(w.Body.String(), `"s"`) {
					t.Fatal("operator token or secret handed to the website")
				}
				if c.status != 200 {
					return
				}
				// Opaque: 32 random bytes, no claims to read.
				raw, err := base64URL.DecodeString(out.Token)
				if err != nil || len(raw) != 32 || strings.Contains(out.Token, ".") || seen[out.Token] {
					t.Fatalf("token %q is not 32 fresh random bytes", out.Token)
				}
				seen[out.Token] = true
			})
		}
	}
	if w, _ := serve(h, "GET", "/tnai/backend-apis/v1/auth", "", nil); w.Code != 405 {
		t.Fatalf("GET token: %d", w.Code)
	}
	if f.calls.Load() != 0 {
		t.Fatal("local token endpoint called upstream")
	}
}

var base64URL = base64.RawURLEncoding

func TestClientGoneIs499AndNothingIsStoredForOthersToMiss(t *testing.T) {
	release := make(chan struct{})
	f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, `{"statusCode":"success"}`)
	}}
	h := newTestHandler(t, f, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("POST", catalogPath, strings.NewReader(`{}`)).WithContext(ctx)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(w, r, &nextHandler{}); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.calls.Load() == 0 {
		if time.Now().After(deadline) {
			cancel()
			close(release)
			t.Fatal("the upstream call did not start within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if w.Code != 499 || !strings.Contains(w.Body.String(), "client_closed_request") {
		t.Fatalf("client gone: %d %s", w.Code, w.Body)
	}
	// The call still completes and is stored: the next buyer gets a hit.
	close(release)
	deadline = time.Now().Add(5 * time.Second)
	for {
		w2, _ := serve(h, "POST", catalogPath, `{}`, nil)
		if strings.HasPrefix(w2.Header().Get("Cache-Status"), "s360edge; hit") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("answer of the abandoned call not stored: %s", w2.Header().Get("Cache-Status"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d upstream calls, want 1", n)
	}
}

// TestBodyLength: the body is read into a buffer of its declared length,
// or within max_body_size when no length is declared (chunked); a body
// shorter than its declared length is refused.
func TestBodyLength(t *testing.T) {
	f := &fakeUpstream{}
	h := newTestHandler(t, f, time.Second) // max_body_size 100
	cases := []struct {
		name   string
		body   string
		length int64 // -1: not declared
		status int
		code   string
	}{
		{"declared", `{"a":1}`, 7, 200, ""},
		{"not declared", `{"a":1}`, -1, 200, ""},
		{"not declared, too large", `{"pad":"` + strings.Repeat("x", 200) + `"}`, -1, 413, "body_too_large"},
		{"declared too large", `{}`, 101, 413, "body_too_large"},
		{"shorter than declared", `{"a":1}`, 50, 400, "bad_body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", catalogPath, strings.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			r.ContentLength = c.length
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, &nextHandler{})
			var e apiError
			json.Unmarshal(w.Body.Bytes(), &e)
			if w.Code != c.status || e.Code != c.code {
				t.Errorf("got %d %s, want %d %q", w.Code, w.Body, c.status, c.code)
			}
		})
	}
}

func TestLocalTokensAreKnownByTheirSecret(t *testing.T) {
	l := newLocalTokens("X_WEB", "s")
	tok := l.issue()
	if !l.issued(tok) {
		t.Fatal("a token just issued is not recognised")
	}
	if !newLocalTokens("X_WEB", "s").issued(tok) {
		t.Fatal("a token is not recognised after a reload with the same secret")
	}
	if newLocalTokens("X_WEB", "other").issued(tok) {
		t.Fatal("a token is recognised under another secret")
	}
	raw, _ := base64URL.DecodeString(tok)
	raw[0] ^= 1
	for _, bad := range []string{base64URL.EncodeToString(raw), "", "eyJhbGciOiJSUzI1NiJ9.e30.sig", tok + "A", "%%%"} {
		if l.issued(bad) {
			t.Fatalf("%q taken for an issued token", bad)
		}
	}
}
