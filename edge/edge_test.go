package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// fakeS360 counts method calls; answer decides each answer. A fake is
// fine here: the integration tests use the real simulator.
type fakeS360 struct {
	calls  atomic.Int32
	answer atomic.Value // func(w, r)
	gate   chan struct{}
}

func (f *fakeS360) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == upstream.AuthPath {
		io.WriteString(w, `{"token":"t"}`)
		return
	}
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if a, ok := f.answer.Load().(func(http.ResponseWriter, *http.Request)); ok {
		a(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	io.WriteString(w, `{"statusCode":"success","echo":`+string(b)+`}`)
}

// RoundTrip serves r in-process, so that the tests can run in a synctest
// bubble. Like a real connection it gives up when r's context ends, while
// the handler may still be held by gate.
func (f *fakeS360) RoundTrip(r *http.Request) (*http.Response, error) {
	done := make(chan *http.Response, 1)
	go func() {
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, r)
		done <- rec.Result()
	}()
	select {
	case resp := <-done:
		return resp, nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}

func (f *fakeS360) set(status int, body string) {
	f.answer.Store(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status); io.WriteString(w, body) })
}

// fakeGate records floors like the budget does, without rate limits.
type fakeGate struct {
	mu      sync.Mutex
	floor   time.Duration
	fetched map[string]time.Time
}

func (g *fakeGate) AcquireCall(context.Context, budget.Call) error { return nil }
func (g *fakeGate) PushbackCall(budget.Call, time.Duration) budget.Scope {
	return budget.ScopeInstitution
}
func (g *fakeGate) SuccessCall(budget.Call)           {}
func (g *fakeGate) Update(budget.Config)              {}
func (g *fakeGate) Stats() budget.Stats               { return budget.Stats{} }
func (g *fakeGate) Restore(budget.Learned)            {}
func (g *fakeGate) OnAdjust(func(budget.Learned))     {}
func (g *fakeGate) OnGrant(func(at time.Time, n int)) {}
func (g *fakeGate) FloorWait(key, name string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if at, ok := g.fetched[key]; ok && time.Now().Sub(at) < g.floor {
		return g.floor - time.Now().Sub(at)
	}
	return 0
}
func (g *fakeGate) Floor(string) time.Duration                    { return g.floor }
func (g *fakeGate) RestoreFetched(key, name string, at time.Time) { g.MarkFetched(key, name) }
func (g *fakeGate) MarkFetched(key, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetched[key] = time.Now()
}

type env struct {
	e      *Edge
	f      *fakeS360
	client *upstream.Client
	dir    string
	gate   *fakeGate
}

func newEnv(t *testing.T, f *fakeS360, dir string) *env {
	t.Helper()
	return newEnvPolicy(t, f, dir, Policy{})
}

// minuteAvail is the default policy with availability's hours made
// minutes (fresh 1m, stale-while-revalidate 1m after): in a synctest bubble
// every fake hour costs real seconds, as Badger's compactors tick through it.
var minuteAvail = Policy{MaxAge: map[string]time.Duration{"availabilityService/*": time.Minute}, StaleWhileRevalidate: time.Minute}

func newEnvPolicy(t *testing.T, f *fakeS360, dir string, p Policy) *env {
	t.Helper()
	if f == nil {
		f = &fakeS360{}
	}
	if dir == "" {
		dir = t.TempDir()
	}
	gate := &fakeGate{fetched: map[string]time.Time{}}
	e, err := Open(Options{Dir: dir, Institution: "mosa", Policy: p, Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Transport: f, Gate: e})
	e.Attach(c)
	return &env{e: e, f: f, client: c, dir: dir, gate: gate}
}

var (
	catalog = s360.Call{Service: "catalogService", Version: "v1_33", Method: "getCatalogDetailed", Class: s360.Catalog}
	avail   = s360.Call{Service: "availabilityService", Version: "v1_33", Method: "getEventAvailability", Class: s360.Availability}
)

func (v *env) serve(t *testing.T, call s360.Call, body string) Result {
	t.Helper()
	c, err := s360.Canonical([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return v.e.Serve(context.Background(), v.client, call, c, "")
}

func expect(t *testing.T, r Result, status string, body string) {
	t.Helper()
	if r.CacheStatus != status {
		t.Errorf("Cache-Status = %q, want %q", r.CacheStatus, status)
	}
	var got string
	switch {
	case r.Entry != nil:
		got = string(r.Entry.Body)
	case r.Resp != nil:
		got = string(r.Resp.Body)
	}
	if !strings.Contains(got, body) {
		t.Errorf("body %q does not contain %q (err %v)", got, body, r.Err)
	}
}

// expectFetch checks what r says became of S-360.
func expectFetch(t *testing.T, r Result, want Fetch) {
	t.Helper()
	if r.Fetch != want {
		t.Errorf("Fetch = %d, want %d (%q)", r.Fetch, want, r.CacheStatus)
	}
}

func TestMissThenHitAcrossKeyOrderAndRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		r := v.serve(t, catalog, `{"b":1,"a":2}`)
		expect(t, r, "s360edge; fwd=miss; stored", `"echo":{"a":2,"b":1}`)
		expectFetch(t, r, Called)
		time.Sleep(10 * time.Second)
		r = v.serve(t, catalog, "{ \"a\":2, \"b\":1, \"requestId\": 3 }")
		expect(t, r, "s360edge; hit; ttl=86390", `"echo"`)
		expectFetch(t, r, Stored)
		if !r.Hit || r.Waited() {
			t.Error("hit not flagged, or waited for")
		}
		expect(t, v.serve(t, catalog, `{"a":3,"b":1}`), "s360edge; fwd=miss; stored", `"a":3`)
		if n := v.f.calls.Load(); n != 2 {
			t.Fatalf("%d upstream calls, want 2", n)
		}
		// Restart: the entry comes from disk, no upstream call.
		v.e.Close()
		v2 := newEnv(t, v.f, v.dir)
		time.Sleep(10 * time.Second) // 20 s after the answer was stored
		expect(t, v2.serve(t, catalog, `{"a":2,"b":1}`), "s360edge; hit; ttl=86380", `"echo"`)
		if n := v.f.calls.Load(); n != 2 {
			t.Fatalf("restart made an upstream call: %d", n)
		}
	})
}

func TestOnlySuccessIsStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		v.f.set(200, `{"statusCode":"in_progress"}`)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss", "in_progress")
		v.f.set(503, `oops`)
		r := v.serve(t, catalog, `{}`)
		if r.Resp == nil || r.Resp.Status != 503 {
			t.Fatalf("503 not passed back: %+v", r)
		}
		v.f.set(509, `{}`)
		v.serve(t, catalog, `{}`)
		if n := v.f.calls.Load(); n != 3 {
			t.Fatalf("%d calls: something was stored", n)
		}
		if st := v.e.Store().Stats(); st.Entries != 0 {
			t.Fatalf("%d entries stored", st.Entries)
		}
	})
}

func TestStaleWhileRevalidateAndStaleIfError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnvPolicy(t, nil, "", minuteAvail)
		v.serve(t, avail, `{"performanceIds":[1]}`)
		time.Sleep(time.Minute + time.Second) // fresh for 1m, SWR for 1m after
		r := v.serve(t, avail, `{"performanceIds":[1]}`)
		expect(t, r, "s360edge; hit; ttl=-1; detail=stale-while-revalidate", "echo")
		expectFetch(t, r, Stored)
		waitCalls(t, v.f, 2)
		v.e.bg.Wait()
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; hit; ttl=60", "echo")

		// Past the SWR window, the call is synchronous; on failure the old
		// entry is served within StaleIfError.
		time.Sleep(3 * time.Minute)
		v.f.set(503, "down")
		r = v.serve(t, avail, `{"performanceIds":[1]}`)
		expect(t, r, "s360edge; hit; ttl=-120; detail=stale-if-error", "echo")
		expectFetch(t, r, Called)
		v.f.set(200, `{"statusCode":"in_progress"}`)
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; hit; ttl=-120; detail=stale-if-error", "echo")
		v.f.set(509, `{}`)
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; hit; ttl=-120; detail=stale-throttled", "echo")
		v.f.answer.Store(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"statusCode":"success","new":true}`)
		})
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; fwd=stale; stored", `"new":true`)
	})
}

func TestFloorServesStaleOrRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		v.gate.floor = 10 * time.Minute
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss; stored", "echo")
		v.e.Store().PurgeAll()
		r := v.serve(t, catalog, `{}`)
		var fe *FloorError
		if !errors.As(r.Err, &fe) || fe.Wait != 10*time.Minute {
			t.Fatalf("want a FloorError of 10m, got %+v", r)
		}
		expectFetch(t, r, Refused)
		if n := v.f.calls.Load(); n != 1 {
			t.Fatalf("floor let a call through: %d calls", n)
		}
	})
}

func TestGenerationMakesCatalogStaleAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		v.serve(t, catalog, `{}`)
		v.serve(t, avail, `{"performanceIds":[1]}`)
		v.e.gen.Add(1)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400; detail=generation", "echo")
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; hit; ttl=3600", "echo")
		waitCalls(t, v.f, 3)
		v.e.bg.Wait()
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", "echo")
	})
}

func TestCoalescingAndLeaderLeaving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeS360{gate: make(chan struct{})}
		v := newEnv(t, f, "")
		body, _ := s360.Canonical([]byte(`{"x":1}`))
		leaderCtx, leave := context.WithCancel(context.Background())
		leaderDone := make(chan Result)
		go func() { leaderDone <- v.e.Serve(leaderCtx, v.client, catalog, body, "") }()
		waitCalls(t, f, 1)
		const n = 50
		results := make(chan Result, n)
		for range n {
			go func() { results <- v.e.Serve(context.Background(), v.client, catalog, body, "") }()
		}
		// Let the followers join the flight, then the leader leaves.
		eventually(t, fmt.Sprintf("%d waiters on the flight", n+1), func() bool { return v.e.flightWaiters() >= n+1 })
		leave()
		if r := <-leaderDone; r.Err == nil || r.Fetch != Called {
			t.Fatalf("leader that left got an answer: %+v", r)
		}
		close(f.gate)
		for range n {
			r := <-results
			if r.Entry == nil || r.CacheStatus != "s360edge; fwd=miss; stored; detail=coalesced" || r.Fetch != Coalesced {
				t.Fatalf("follower got %+v", r)
			}
		}
		if c := f.calls.Load(); c != 1 {
			t.Fatalf("%d upstream calls for %d identical requests", c, n+1)
		}
		if st := v.e.Store().Stats(); st.Entries != 1 {
			t.Fatal("answer not stored after the leader left")
		}
	})
}

func waitCalls(t *testing.T, f *fakeS360, n int32) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d upstream calls", n), func() bool { return f.calls.Load() >= n })
}

// Concurrent Closes all wait for the store to close and report the same
// result; run with -race, this is the regression test of the closeErr race.
func TestConcurrentClose(t *testing.T) {
	e, err := Open(Options{Dir: t.TempDir(), Institution: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.Close() }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	if _, err := e.Store().GetMeta("x"); err == nil {
		t.Fatal("the store still answers after Close")
	}
}
