package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// serveWithReplacer serves one request as Caddy's server would, with a
// replacer in its context, and returns the replacer.
func serveWithReplacer(h *Handler, w http.ResponseWriter, path, body string) *caddy.Replacer {
	repl := caddy.NewReplacer()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	r.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(w, r, &nextHandler{})
	return repl
}

func TestPlaceholders(t *testing.T) {
	f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // an upstream call takes time
		w.Write([]byte(`{"statusCode":"success"}`))
	}}
	h := newTestHandler(t, f, 5*time.Second)
	for _, tc := range []struct {
		name, path    string
		class, method string
		cacheStatus   string // prefix
		calledS360    bool
	}{
		{"miss", catalogPath, "catalog", "catalogService/getCatalogDetailed", "s360edge; fwd=miss; stored", true},
		{"hit", catalogPath, "catalog", "catalogService/getCatalogDetailed", "s360edge; hit", false},
		{"uncached", "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", "catalog", "catalogService/getPOSConfig", "s360edge;", true},
		{"denied", "/tnseb/backend-apis/adminService/v1_33/deleteAll", "denied", "adminService/deleteAll", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repl := serveWithReplacer(h, httptest.NewRecorder(), tc.path, `{}`)
			get := func(name string) any {
				v, _ := repl.Get("http.s360." + name)
				return v
			}
			if got := get("class"); got != tc.class {
				t.Errorf("class %v, want %s", got, tc.class)
			}
			if got := get("method"); got != tc.method {
				t.Errorf("method %v, want %s", got, tc.method)
			}
			if got, _ := get("cache_status").(string); !strings.HasPrefix(got, tc.cacheStatus) || (tc.cacheStatus == "") != (got == "") {
				t.Errorf("cache_status %q, want %q...", got, tc.cacheStatus)
			}
			d, _ := get("upstream_duration").(time.Duration)
			if tc.calledS360 != (d >= 5*time.Millisecond) {
				t.Errorf("upstream_duration %v (set: %v): S-360 called: %v", get("upstream_duration"), d, tc.calledS360)
			}
		})
	}
}

// failingWriter is a client that went away once the headers were out.
type failingWriter struct{ *httptest.ResponseRecorder }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func TestFailedWriteAbortsTheHandler(t *testing.T) {
	h := newTestHandler(t, &fakeUpstream{}, 5*time.Second)
	for _, tc := range []struct{ name, path string }{
		{"an answer", catalogPath},
		{"a stored answer", catalogPath},
		{"an error", "/tnseb/backend-apis/adminService/v1_33/deleteAll"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != http.ErrAbortHandler {
					t.Errorf("recovered %v, want http.ErrAbortHandler", r)
				}
			}()
			serveWithReplacer(h, failingWriter{httptest.NewRecorder()}, tc.path, `{}`)
		})
	}
}
