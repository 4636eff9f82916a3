package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/upstream"
)

func TestClientQuotaAndAdaptiveConfig(t *testing.T) {
	for _, tc := range []struct {
		name, caddyfile, json string
		quota, window, share  int // share: a lone client's fair share, 0 when off
		fixed                 bool
	}{
		{"defaults: fair sharing, no quota", ``, `{}`, 0, 60, 140, false},
		{"quota", "client_quota 12 30s\nadaptive on", `{"client_quota":{"calls":12,"window":30000000000},"adaptive":true}`, 12, 30, 140, false},
		{"off", "client_quota off\nadaptive off", `{"client_quota":"off","adaptive":false}`, 0, 60, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, back := caddyfileJSON(t, tc.caddyfile)
			if got != tc.json {
				t.Fatalf("JSON %s, want %s", got, tc.json)
			}
			back.RateLimit = &RateLimit{Calls: 150, Window: caddy.Duration(time.Minute)}
			s := budget.New(back.budgetConfig()).Stats()
			if s.ClientQuota != tc.quota || s.ClientWindow != time.Duration(tc.window)*time.Second || s.FairShare != tc.share || s.Adaptive == tc.fixed {
				t.Fatalf("budget %+v", s)
			}
		})
	}
	for _, bad := range []string{"client_quota", "client_quota 0 1m", "client_quota 5 0s", "client_quota of", "adaptive maybe", "adaptive"} {
		t.Run(bad, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s360 {\n" + bad + "\n}")); err == nil {
				t.Fatalf("%q accepted", bad)
			}
		})
	}
	var h Handler
	if err := json.Unmarshal([]byte(`{"client_quota":"sometimes"}`), &h); err == nil {
		t.Fatal(`client_quota "sometimes" accepted`)
	}
}

// newBudgetHandler is newTestHandler with the real budget as the gate.
func newBudgetHandler(t *testing.T, f *fakeUpstream, cfg budget.Config) *Handler {
	t.Helper()
	h := newTestHandler(t, f, time.Second)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	e, err := edge.Open(edge.Options{Dir: t.TempDir(), Institution: "x", Gate: budget.New(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h.edge = e
	h.MaxBodySize = 1000
	h.client = upstream.New(upstream.Config{BaseURL: srv.URL, Operator: "X_WEB", Secret: "s", Gate: e})
	return h
}

const availPath = "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability"

func TestBudgetRefusalsMapToDistinctCodes(t *testing.T) {
	t.Run("client quota", func(t *testing.T) {
		f := &fakeUpstream{}
		h := newBudgetHandler(t, f, budget.Config{Calls: 100, Window: time.Minute, ClientQuota: 2})
		from := func(addr string, i int) (int, apiError, string) {
			r := httptest.NewRequest("POST", availPath, strings.NewReader(fmt.Sprintf(`{"performanceIds":[%d]}`, i)))
			r.RemoteAddr = addr + ":4000"
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, &nextHandler{})
			var e apiError
			json.Unmarshal(w.Body.Bytes(), &e)
			return w.Code, e, w.Header().Get("Retry-After")
		}
		for i := range 2 {
			if code, e, _ := from("203.0.113.9", i); code != 200 {
				t.Fatalf("call %d: %d %+v", i, code, e)
			}
		}
		if code, e, retry := from("203.0.113.9", 3); code != 429 || e.Code != "client_quota" || retry != "60" {
			t.Fatalf("over quota: %d %+v Retry-After %q", code, e, retry)
		}
		if code, e, _ := from("198.51.100.1", 3); code != 200 {
			t.Fatalf("another client: %d %+v", code, e)
		}
		if n := f.calls.Load(); n != 3 {
			t.Fatalf("%d upstream calls, want 3", n)
		}
	})
	t.Run("paused key", func(t *testing.T) {
		f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(509) }}
		// Without a floor, so that the pause, not the floor the 509 also
		// started, is what refuses the repeat.
		h := newBudgetHandler(t, f, budget.Config{Calls: 100, Window: time.Minute, Floors: map[string]time.Duration{"availabilityService/*": 0}})
		w, _ := serve(h, "POST", availPath, `{"performanceIds":[1]}`, nil)
		if w.Code != 429 || !strings.Contains(w.Body.String(), "upstream_rate_limited") {
			t.Fatalf("the 509 itself: %d %s", w.Code, w.Body)
		}
		w, _ = serve(h, "POST", availPath, `{"performanceIds":[1]}`, nil)
		if w.Code != 429 || !strings.Contains(w.Body.String(), `"upstream_paused"`) || w.Header().Get("Retry-After") != "60" {
			t.Fatalf("the paused key: %d %s Retry-After %q", w.Code, w.Body, w.Header().Get("Retry-After"))
		}
		if n := f.calls.Load(); n != 1 {
			t.Fatalf("%d upstream calls, want 1: the paused key must not be called", n)
		}
	})
}
