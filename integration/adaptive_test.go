package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAdaptiveLimitLearnsTheInstitutionsLimit is `make storm-adaptive`
// scaled to 6-second windows: S-360 allows 60 calls a window, the sidecar keeps its
// default 150 and learns. Distinct misses of two methods, above the limit,
// from one address (client_quota off: the website's backend is the caller).
// The 509s all fall in the first window; every later full window stays
// between 45 and 60 calls. The run stops before the additive increase
// (one call a window) could climb back above 60.
func TestAdaptiveLimitLearnsTheInstitutionsLimit(t *testing.T) {
	const window = 6 * time.Second
	s := startSim(t, "-rate-limit", "60", "-rate-window", "6s", "-availability-floor", "0")
	e := startEdge(t, caddyfile(s, "rate_limit 150 6s\n\t\tclient_quota off\n\t\tmax_wait 300ms"))
	fx := s.Fixtures(t)

	// The storm starts with one of S-360's (fixed, wall-clock aligned)
	// windows, so the first refusal comes after the sixtieth call of a
	// whole window, as the scenario has it; a start late in a
	// window would spread the first 60 calls over two of them.
	time.Sleep(time.Until(time.Now().Truncate(window).Add(window + 50*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*window)
	defer cancel()
	// 16 clients that pause 50 ms after a 429 still ask for about 300
	// calls a second against the 10 S-360 allows.
	st := &storm{backoff: 50 * time.Millisecond}
	var wg sync.WaitGroup
	for _, m := range []string{"getEventAvailability", "getPerformanceAvailability"} {
		wg.Go(func() { st.run(ctx, t, e.URL+api+"availabilityService/v1_33/"+m, fx, 8) })
	}
	// The 509 count at each window's end.
	var at509 []int
	for ctx.Err() == nil {
		time.Sleep(time.Until(time.Now().Truncate(window).Add(window + 100*time.Millisecond)))
		var c perWindow
		getJSON(t, s.URL+"/_sim/counters", &c)
		at509 = append(at509, c.Statuses["509"])
	}
	wg.Wait()

	var c perWindow
	getJSON(t, s.URL+"/_sim/counters", &c)
	first := -1 // the window of the first 509
	for i, n := range at509 {
		if n > 0 {
			first = i
			break
		}
	}
	if first < 0 || first > 1 {
		t.Fatalf("509s by window end %v: want the first in the first window", at509)
	}
	if total := c.Statuses["509"]; total != at509[first] || total > 20 {
		t.Errorf("509s by window end %v, %d in all: want a few, all in the first window", at509, total)
	}
	var stats struct {
		Edges []struct {
			Budget struct {
				EffectiveLimit int                       `json:"effective_limit"`
				PausesByScope  struct{ Institution int } `json:"pauses_by_scope"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
	if b := stats.Edges[0].Budget; b.EffectiveLimit < 45 || b.EffectiveLimit > 60 || b.PausesByScope.Institution != 1 {
		t.Errorf("budget after the run: %+v", b)
	}
	// Full windows after the pause: the sim's buckets, without the first
	// two (partial, then the pause) and the last (partial).
	checked := 0
	for i, w := range c.PerMinute {
		if i < first+2 || i == len(c.PerMinute)-1 {
			continue
		}
		checked++
		if w.Calls < 45 || w.Calls > 60 {
			t.Errorf("window %s: %d calls, want 45 to 60", w.Start, w.Calls)
		}
	}
	if checked < 2 {
		t.Errorf("only %d full windows after the pause: %+v", checked, c.PerMinute)
	}
	if n := st.bad.Load(); n != 0 {
		t.Errorf("%d answers were neither data nor 429 with Retry-After, e.g. %v", n, st.badSample.Load())
	}
	t.Logf("adaptive: %d fresh, %d stale, %d throttled; 509s by window %v; windows %+v", st.ok.Load(), st.stale.Load(), st.throttled.Load(), at509, c.PerMinute)
}

// TestRefusedKeyHoldsNeitherOrdersNorOtherMethods: S-360 refuses one
// availability call; that key is paused, and orders and other methods go
// on at once.
func TestRefusedKeyHoldsNeitherOrdersNorOtherMethods(t *testing.T) {
	s := startSim(t, "-availability-floor", "0")
	// No sidecar floor either: the 509 also starts the key's floor, which
	// would refuse the repeat before the pause is asked.
	e := startEdge(t, caddyfile(s, "min_interval availabilityService/* 0"))
	fx := s.Fixtures(t)
	perf := fx.Products[0].Performances[0]
	avail := func(method string, eventID int) (int, []byte) {
		body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"eventIds":[%d]}`, fx.PosID, perf.ID, eventID)
		status, _, b := post(t, e.URL+api+"availabilityService/v1_33/"+method, body)
		return status, b
	}
	if status, b := avail("getEventAvailability", 1); status != 200 { // the token is in hand
		t.Fatalf("warm-up: %d %s", status, b)
	}
	s.Control(t, "/_sim/faults", `{"burst509":1}`)
	if status, b := avail("getEventAvailability", 2); status != 429 {
		t.Fatalf("the refused call: %d %s", status, b)
	}
	if status, b := avail("getEventAvailability", 2); status != 429 || !strings.Contains(string(b), "upstream_paused") {
		t.Fatalf("the paused key again: %d %s", status, b)
	}
	for i := range 3 {
		status, _, b := post(t, e.URL+api+"externalOrderFacade/v1_33/createOrUpdateOrder", stormOrder(fx, i), "Accept", "application/json")
		if status != 200 || !strings.Contains(string(b), "redirectUrl") {
			t.Errorf("order %d after the 509: %d %s", i, status, b)
		}
	}
	if status, b := avail("getEventAvailability", 3); status != 200 {
		t.Errorf("another key of the method: %d %s", status, b)
	}
	if status, b := avail("getPerformanceAvailability", 2); status != 200 {
		t.Errorf("another method: %d %s", status, b)
	}
	var stats struct {
		Edges []struct {
			Budget struct {
				Pauses        int
				PausesByScope struct{ Key, Method, Institution int } `json:"pauses_by_scope"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
	if b := stats.Edges[0].Budget; b.PausesByScope.Key != 1 || b.PausesByScope.Method != 0 || b.PausesByScope.Institution != 0 || b.Pauses != 0 {
		t.Errorf("pauses: %+v", b)
	}
	resp, err := http.Get("http://" + e.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`caddy_s360_budget_scope_pauses_total{scope="key"} 1`, "caddy_s360_budget_effective_limit 150"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
