package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// storm fires distinct availability requests from many clients until ctx
// ends and tallies the answers. Every answer must be data (fresh or
// stale) or a 429 with Retry-After.
type storm struct {
	ok, stale, throttled, bad atomic.Int64
	badSample                 atomic.Value
	// backoff is how long a client waits after a 429 before its next
	// request; 0 retries at once. A pause keeps a long storm from burning
	// the CPU the sidecar and the simulator need (the race detector is on).
	backoff time.Duration
}

func (st *storm) run(ctx context.Context, t *testing.T, url string, fx fixtures, clients int) {
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for ctx.Err() == nil {
				p := fx.Products[rng.IntN(len(fx.Products))]
				body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"eventIds":[%d]}`, fx.PosID, p.Performances[0].ID, rng.IntN(1_000_000))
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					if ctx.Err() == nil {
						st.bad.Add(1)
						st.badSample.Store(err.Error())
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				cs := resp.Header.Get("Cache-Status")
				switch {
				case resp.StatusCode == 200 && strings.Contains(cs, "detail=stale"):
					st.stale.Add(1)
				case resp.StatusCode == 200:
					st.ok.Add(1)
				case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "":
					st.throttled.Add(1)
					if st.backoff > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(st.backoff):
						}
					}
				default:
					st.bad.Add(1)
					st.badSample.Store(fmt.Sprint(resp.StatusCode, " ", cs))
				}
			}
		}()
	}
	wg.Wait()
}

func stormOrder(fx fixtures, i int) string {
	perf := fx.Products[i%len(fx.Products)].Performances[0]
	return fmt.Sprintf(`{"pointOfSalesId":%d,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,
		"singleEntryAttributionOperations":[{"performanceId":%d,"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":1}]}`,
		fx.PosID, perf.ID, perf.SeatCategoryIDs[0], perf.AudienceSubCategoryIDs[0])
}

// bucket is one of the simulator's windows and the calls it accepted.
type bucket struct {
	Start string `json:"start"`
	Calls int    `json:"calls"`
}

type perWindow struct {
	PerMinute           []bucket            `json:"perMinute"`
	PerMinuteByEndpoint map[string][]bucket `json:"perMinuteByEndpoint"`
	Statuses            map[string]int      `json:"statuses"`
}

// TestBudgetStorm is the rate-limit storm scaled to 6-second windows so that it
// fits in make test: the simulator allows 12 calls per window, the sidecar
// is set to 10. `make storm` runs the full-size version (60/min vs 50/min,
// two minutes) and records its figures in BENCHMARKS.md.
func TestBudgetStorm(t *testing.T) {
	s := startSim(t, "-rate-limit", "12", "-rate-window", "6s", "-availability-floor", "0")
	// The storm's clients all come from 127.0.0.1 and stand for many
	// buyers: no client quota.
	e := startEdge(t, caddyfile(s, "rate_limit 10 6s\n\t\tclient_quota off\n\t\tmax_wait 300ms"))
	fx := s.Fixtures(t)
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"

	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Second)
	defer cancel()
	st := &storm{}
	done := make(chan struct{})
	go func() { st.run(ctx, t, url, fx, 16); close(done) }()

	// Orders placed during the storm go through.
	for i := range 3 {
		status, _, body := post(t, e.URL+api+"externalOrderFacade/v1_33/createOrUpdateOrder", stormOrder(fx, i), "Accept", "application/json")
		if status != 200 || !strings.Contains(string(body), "redirectUrl") {
			t.Errorf("order %d during the storm: %d %s", i, status, body)
		}
	}
	<-done

	var c perWindow
	getJSON(t, s.URL+"/_sim/counters", &c)
	if n := c.Statuses["509"]; n != 0 {
		t.Errorf("the simulator answered 509 %d times", n)
	}
	for _, w := range c.PerMinute {
		if w.Calls > 10 {
			t.Errorf("window %s: %d upstream calls, budget is 10", w.Start, w.Calls)
		}
	}
	if n := st.bad.Load(); n != 0 {
		t.Errorf("%d answers were neither data nor 429 with Retry-After, e.g. %v", n, st.badSample.Load())
	}
	if st.ok.Load() == 0 || st.throttled.Load() == 0 {
		t.Errorf("storm not exercised: ok=%d stale=%d throttled=%d", st.ok.Load(), st.stale.Load(), st.throttled.Load())
	}
	t.Logf("storm: %d fresh, %d stale, %d throttled; windows %+v", st.ok.Load(), st.stale.Load(), st.throttled.Load(), c.PerMinute)
}

// TestBudgetBacksOffOnPushback sets the sidecar above the simulator's
// limit: after the first 509s it backs off, by a limit it learns from them
// or by pausing the refused scope, serves stale or 429, and goes on
// calling within what S-360 allows.
func TestBudgetBacksOffOnPushback(t *testing.T) {
	s := startSim(t, "-rate-limit", "6", "-rate-window", "4s", "-availability-floor", "0")
	e := startEdge(t, caddyfile(s, "rate_limit 40 4s\n\t\tclient_quota off\n\t\tmax_wait 200ms"))
	fx := s.Fixtures(t)
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &storm{}
	st.run(ctx, t, url, fx, 8)

	var c perWindow
	getJSON(t, s.URL+"/_sim/counters", &c)
	var stats struct {
		Edges []struct {
			Pushbacks int
			Budget    struct {
				PausesByScope  struct{ Key, Method, Institution int } `json:"pauses_by_scope"`
				EffectiveLimit int                                    `json:"effective_limit"`
				MethodLimits   []struct{ Method string }              `json:"method_limits"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
	if len(stats.Edges) != 1 || stats.Edges[0].Pushbacks == 0 {
		t.Fatalf("pushbacks not counted: %+v", stats)
	}
	// Without backoff the 8 clients would meet 509 on almost every call
	// once a window's 6 calls are spent. With it, each reaction (a learned
	// limit, or a pause of a scope no learned limit explains) costs at
	// most the calls already in flight when the first 509 came back (one
	// per client) and the call of one more key: 9.
	b := stats.Edges[0].Budget
	reactions := b.PausesByScope.Method + b.PausesByScope.Institution
	if b.EffectiveLimit < 40 || len(b.MethodLimits) > 0 {
		reactions++ // learned: the limit holds the calls from then on
	}
	if n := c.Statuses["509"]; n == 0 || reactions == 0 || n > 9*reactions || reactions > 4 {
		t.Errorf("%d 509 answers over %d reactions (budget %+v), want at most 9 per reaction and at most 4", n, reactions, b)
	}
	if len(c.PerMinute) < 2 || c.PerMinute[len(c.PerMinute)-1].Calls == 0 {
		t.Errorf("no recovery after the pause: windows %+v", c.PerMinute)
	}
	if n := st.bad.Load(); n != 0 {
		t.Errorf("%d answers were neither data nor 429 with Retry-After, e.g. %v", n, st.badSample.Load())
	}
	t.Logf("pushback run: %d fresh, %d stale, %d throttled; 509s %d; windows %+v", st.ok.Load(), st.stale.Load(), st.throttled.Load(), c.Statuses["509"], c.PerMinute)
}
