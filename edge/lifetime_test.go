package edge

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// openLifetime opens an edge on a real budget with cfg (availability
// floors off, so that refreshes are not held back by them).
func openLifetime(t *testing.T, stub *s360Stub, cfg budget.Config) (*economy, *budget.Budget) {
	t.Helper()
	cfg.Floors = map[string]time.Duration{"availabilityService/*": 0}
	b := budget.New(cfg)
	e, err := Open(Options{Dir: t.TempDir(), Institution: "mosa", Gate: b})
	if err != nil {
		t.Fatal(err)
	}
	c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Timeout: 10 * time.Second,
		Transport: stub.transport(nil), Gate: e})
	e.Attach(c)
	return &economy{e: e, client: c, stub: stub}, b
}

func TestStaleHitsDuringAStuckRefreshAddNoGoroutines(t *testing.T) {
	stub := newStub()
	release := make(chan struct{})
	var calls sync.WaitGroup
	calls.Add(1) // the stuck refresh
	var once sync.Once
	v, _ := openLifetime(t, stub, budget.Config{})
	defer v.e.Close()
	v.e.Reconfigure(Settings{Institution: "mosa", Policy: Policy{MaxAge: map[string]time.Duration{"availabilityService/*": time.Millisecond}}})
	expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; fwd=miss; stored", "")
	stub.on(avail.Method, func(w http.ResponseWriter, r *http.Request) {
		once.Do(calls.Done)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"statusCode":"success"}`))
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := v.serve(t, avail, `{"performanceIds":[1]}`)
		if r.CacheStatus == "s360edge; hit; ttl=0; detail=stale-while-revalidate" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the entry did not go stale: %q", r.CacheStatus)
		}
	}
	calls.Wait() // the refresh is out, and stuck
	before := runtime.NumGoroutine()

	var hits sync.WaitGroup
	for range 20 {
		hits.Go(func() {
			for range 500 {
				if r := v.serve(t, avail, `{"performanceIds":[1]}`); !r.Hit {
					t.Errorf("a stale hit during the refresh: %q", r.CacheStatus)
					return
				}
			}
		})
	}
	hits.Wait()
	if added := runtime.NumGoroutine() - before; added >= 50 {
		t.Errorf("10,000 stale hits during a stuck refresh added %d goroutines, want < 50", added)
	}
	if n := stub.count(avail.Method); n != 2 {
		t.Errorf("S-360 got %d calls, want 2 (the miss and one refresh)", n)
	}
	close(release)
}

// A buyer's miss that joins a background flight queued in the budget lifts
// it to the buyer's priority: it goes out at once, or gives up after the
// buyer's max_wait, instead of waiting with the background work.
func TestBuyerJoiningABackgroundFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fill    Priority // the budget is spent for this priority and those after it
		wantErr bool
		within  time.Duration
	}{
		{"a foreground slot is free: the call goes out at once", PriorityBackground, false, 0},
		{"no foreground slot: the buyer's max_wait ends it", PriorityForeground, true, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v, b := openLifetime(t, newStub(), budget.Config{Calls: 20, Window: time.Minute})
				defer v.e.Close()
				for {
					if ok, _ := b.TryAcquire(tc.fill); !ok {
						break
					}
				}
				body, err := s360.Canonical([]byte(`{"performanceIds":[7]}`))
				if err != nil {
					t.Fatal(err)
				}
				key := s360.Key("mosa", avail, body)
				go v.e.fetch(context.Background(), v.client, &flight{call: avail, key: key, canonical: body, p: PriorityBackground}, 0)
				synctest.Wait()
				if w := b.Stats().Waiting; w != 1 {
					t.Fatalf("%d calls queued in the budget, want the background one", w)
				}
				start := time.Now()
				r := v.e.Serve(context.Background(), v.client, avail, body, "")
				if took := time.Since(start); took > tc.within {
					t.Errorf("the buyer waited %s, want at most %s", took, tc.within)
				}
				if (r.Err != nil) != tc.wantErr {
					t.Errorf("result %+v, error %v: want error %v", r, r.Err, tc.wantErr)
				}
				if !tc.wantErr && r.CacheStatus != "s360edge; fwd=miss; stored; detail=coalesced" {
					t.Errorf("Cache-Status %q: want the coalesced miss", r.CacheStatus)
				}
			})
		})
	}
}

type requestValue struct{}

// An upstream call belongs to the edge: it carries none of the request's
// context values (the client IP aside), and Close cancels it.
func TestFlightBelongsToTheEdge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newStub()
		var leaked any
		var canceled bool
		stub.on(avail.Method, func(w http.ResponseWriter, r *http.Request) {
			leaked = r.Context().Value(requestValue{})
			<-r.Context().Done()
			canceled = true
		})
		v, _ := openLifetime(t, stub, budget.Config{})
		body, _ := s360.Canonical([]byte(`{"performanceIds":[3]}`))
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), requestValue{}, "request"))
		go v.e.Serve(ctx, v.client, avail, body, "192.0.2.1")
		synctest.Wait()
		if stub.count(avail.Method) != 1 {
			t.Fatal("the call did not go out")
		}
		cancel() // the buyer leaves: the call goes on
		synctest.Wait()
		if canceled {
			t.Fatal("the buyer leaving canceled the edge's call")
		}
		if err := v.e.Close(); err != nil {
			t.Fatal(err)
		}
		if !canceled {
			t.Error("Close returned with the call still out")
		}
		if leaked != nil {
			t.Errorf("the upstream call saw the request's context value %v", leaked)
		}
	})
}
