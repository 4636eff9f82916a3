package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/budget"
)

// N nodes, random arrivals and priorities: the grants (at Redis's clock,
// which decides) never exceed the limit in any window.
func TestPropertyNodesNeverExceedTheLimit(t *testing.T) {
	addr := startRedisB(t).Addr
	const (
		limit = 20
		w     = time.Second
	)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			n := 3 + r.IntN(3)
			cfg := budget.Config{Calls: limit, Window: w, FixedLimit: true}
			// A generous op timeout: this test is about the shared window,
			// not the fallback (see the Redis-down tests); a loaded CI
			// machine must not turn it into one.
			nodes := newNodes(t, addr, n, cfg, nodeOpts{opTimeout: time.Second, prefix: fmt.Sprintf("seed%d", seed)})
			var wg sync.WaitGroup
			stop := time.Now().Add(2500 * time.Millisecond)
			for i, nd := range nodes {
				for g := range 4 {
					rg := rand.New(rand.NewPCG(seed, uint64(i*10+g)))
					wg.Go(func() {
						for time.Now().Before(stop) {
							time.Sleep(time.Duration(rg.IntN(40)) * time.Millisecond)
							p := budget.Priority(rg.IntN(4))
							try(nd.b, p, time.Duration(50+rg.IntN(1500))*time.Millisecond)
						}
					})
				}
			}
			wg.Wait()
			grants := allGrants(nodes)
			// 2.5 s of demand well above 20/s: at least two windows' worth.
			if len(grants) < 2*limit {
				t.Fatalf("only %d grants in 2.5s: the test did not load the budget", len(grants))
			}
			checkWindows(t, grants, limit, w)
			for i, nd := range nodes {
				if nd.b.down {
					t.Fatalf("node %d fell back to its local budget: the property was not tested on Redis alone", i)
				}
			}
		})
	}
}

// A flood of buyers' misses on every node cannot keep an order out: the
// order reserve is cluster-wide.
func TestOrdersGetThroughAForegroundFlood(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 20, Window: 2 * time.Second, FixedLimit: true, ClientQuota: -1}
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{opTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var flood atomic.Int64
	for _, nd := range nodes {
		for range 5 {
			wg.Go(func() {
				for ctx.Err() == nil {
					if nd.b.AcquireCall(ctx, budget.Call{Priority: budget.Foreground}) == nil {
						flood.Add(1)
					}
				}
			})
		}
	}
	// Foreground may take all but the order and watch reserves (1 + 2).
	eventually(t, 3*time.Second, "the flood to fill foreground's allowance", func() bool { return flood.Load() >= 17 })
	time.Sleep(100 * time.Millisecond)
	if n := flood.Load(); n != 17 {
		t.Fatalf("foreground got %d slots of a window of 20, want 17", n)
	}
	start := time.Now()
	if err := try(nodes[1].b, budget.Order, time.Second); err != nil {
		t.Fatalf("an order during the flood: %v", err)
	}
	if took := time.Since(start); took > 300*time.Millisecond {
		t.Errorf("the order waited %v", took)
	}
	if err := try(nodes[2].b, budget.Watch, time.Second); err != nil {
		t.Fatalf("a watcher's poll during the flood: %v", err)
	}
	cancel()
	wg.Wait()
	checkWindows(t, allGrants(nodes), 20, 2*time.Second)
}

// Redis killed: every node decides alone, at once, with its share; the
// nodes together stay within the limit, and Redis back, they rejoin
// without a burst.
func TestRedisDownFallsBackToTheShareAndRejoins(t *testing.T) {
	r := startRedisB(t)
	addr := r.Addr
	const (
		limit = 30
		w     = 1500 * time.Millisecond
	)
	cfg := budget.Config{Calls: limit, Window: w, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	// Redis is down for every node at once here; a generous op timeout
	// keeps a loaded machine from making one node alone fall back, which
	// is another case (the others cannot see its grants until it
	// rejoins: README, cluster budget). Dialing a killed server fails at
	// once whatever the timeout.
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{heartbeat: 200 * time.Millisecond, opTimeout: 500 * time.Millisecond})
	for _, nd := range nodes {
		if err := try(nd.b, budget.Foreground, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	r.Kill()
	for i, nd := range nodes {
		start := time.Now()
		err := try(nd.b, budget.Foreground, time.Second)
		if took := time.Since(start); took > 150*time.Millisecond {
			t.Errorf("node %d: the first acquire after Redis died took %v; the fallback must answer within ~50ms", i, took)
		}
		if err != nil {
			t.Errorf("node %d: %v; its share (10) has room", i, err)
		}
		if s := nd.c.Status(); s.Mode != "local" || s.RedisOK {
			t.Errorf("node %d: status %+v, want local mode", i, s)
		}
	}
	// Each node floods: its share is 30/3 = 10 per window.
	flood := func(d time.Duration) {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			for range 3 {
				wg.Go(func() {
					for end := time.Now().Add(d); time.Now().Before(end); {
						try(nd.b, budget.Foreground, 100*time.Millisecond)
					}
				})
			}
		}
		wg.Wait()
	}
	flood(w / 2)
	for i, nd := range nodes {
		if n := nd.b.local.Stats().Calls; n != 10 {
			t.Errorf("node %d: %d calls in its local window, want its share, 10", i, n)
		}
	}
	r.Restart()
	flood(2 * w)
	for i, nd := range nodes {
		if nd.b.down || !nd.c.Status().RedisOK {
			t.Errorf("node %d did not rejoin within 2 windows of Redis coming back", i)
		}
	}
	grants := allGrants(nodes)
	checkWindows(t, grants, limit, w)
	if len(grants) < 2*limit {
		t.Fatalf("%d grants: the flood did not load the budget", len(grants))
	}
}

// When one node had used most of the window before Redis died, the
// others' shares shrink by what they last saw, so that the sum stays
// within the limit (without it: 20 + 10 + 10 in one window of 30).
func TestFallbackKeepsTheSum(t *testing.T) {
	r := startRedisB(t)
	addr := r.Addr
	const (
		limit = 30
		w     = 2 * time.Second
	)
	cfg := budget.Config{Calls: limit, Window: w, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{heartbeat: time.Hour, opTimeout: 500 * time.Millisecond})
	for range 20 {
		if err := try(nodes[0].b, budget.Foreground, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The others see the window's count in their own replies.
	for _, nd := range nodes[1:] {
		if err := try(nd.b, budget.Foreground, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	r.Kill()
	var granted atomic.Int64
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Go(func() {
			for range 15 {
				if err := try(nd.b, budget.Foreground, 10*time.Millisecond); err == nil {
					granted.Add(1)
				} else if !errors.Is(err, budget.ErrLimited) {
					t.Errorf("fallback refusal: %v, want ErrLimited", err)
				}
			}
		})
	}
	wg.Wait()
	grants := allGrants(nodes)
	checkWindows(t, grants, limit, w)
	if total := 22 + granted.Load(); total > limit || granted.Load() == 0 {
		t.Fatalf("%d calls in the window (22 before Redis died, %d after), want some after and at most %d", total, granted.Load(), limit)
	}
}

// BenchmarkClusterAcquire measures one acquire (one script round trip to
// a local redis-server), p50 and p99.
func BenchmarkClusterAcquire(b *testing.B) {
	addr := startRedisB(b).Addr
	nodes := newNodes(b, addr, 1, budget.Config{Calls: 1 << 30, Window: time.Minute, FixedLimit: true}, nodeOpts{opTimeout: time.Second})
	bud := nodes[0].b
	bud.OnGrant(nil)
	ctx := context.Background()
	call := budget.Call{Priority: budget.Foreground, Method: "availabilityService/getEventAvailability", Key: "k"}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if err := bud.AcquireCall(ctx, call); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	if bud.down {
		b.Fatal("fell back to the local budget: not a Redis round trip")
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

// A node back in the cluster before the others keeps to its share for a
// window: the shared window does not hold the calls the others still make
// alone.
func TestRejoinKeepsToTheShareWhileOthersAreAlone(t *testing.T) {
	r := startRedisB(t)
	addr := r.Addr
	const (
		limit = 30
		w     = 3 * time.Second
	)
	cfg := budget.Config{Calls: limit, Window: w, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	first := newNodes(t, addr, 1, cfg, nodeOpts{heartbeat: 50 * time.Millisecond, opTimeout: 500 * time.Millisecond})
	// The others try Redis again only after an hour.
	rest := newNodes(t, addr, 2, cfg, nodeOpts{heartbeat: time.Hour, opTimeout: 500 * time.Millisecond, name: "other"})
	nodes := append(first, rest...)
	for _, nd := range nodes {
		nd.c.nodes.Store(3)
		nd.b.Update(cfg) // their share is a third
	}
	r.Kill()
	for _, nd := range nodes {
		if err := try(nd.b, budget.Foreground, time.Second); err != nil || !nd.b.down {
			t.Fatalf("with Redis down: %v, down %v", err, nd.b.down)
		}
	}
	r.Restart()
	eventually(t, 2*time.Second, "node 0 to rejoin", func() bool {
		try(first[0].b, budget.Foreground, 10*time.Millisecond)
		return !first[0].b.down
	})
	for range 30 {
		try(first[0].b, budget.Foreground, 10*time.Millisecond)
	}
	for _, nd := range rest {
		for range 15 {
			try(nd.b, budget.Foreground, 10*time.Millisecond)
		}
		if !nd.b.down {
			t.Fatal("a node meant to stay alone rejoined")
		}
	}
	if n := len(first[0].granted()); n != limit/3 {
		t.Errorf("the node back in the cluster made %d calls in the window, want its share, %d", n, limit/3)
	}
	checkWindows(t, allGrants(nodes), limit, w)
}

// An institution pause in force when Redis goes away holds on the nodes
// that decide alone, without a second WARN line.
func TestPauseHoldsWhenRedisGoesAway(t *testing.T) {
	r := startRedisB(t)
	addr := r.Addr
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := budget.Config{Calls: 100, Window: 10 * time.Second}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{logger: zap.New(core), opTimeout: 500 * time.Millisecond})
	a, b := nodes[0].b, nodes[1].b
	a.PushbackCall(budget.Call{Priority: budget.Foreground, Method: "a/x", Key: "1"}, 0)
	if s := a.PushbackCall(budget.Call{Priority: budget.Foreground, Method: "b/y", Key: "2"}, 3*time.Second); s != budget.ScopeInstitution {
		t.Fatalf("scope %v", s)
	}
	// Node b learns of the pause from Redis's refusal.
	if err := try(b, budget.Foreground, 50*time.Millisecond); !errors.Is(err, budget.ErrPaused) {
		t.Fatalf("during the pause: %v", err)
	}
	warned := logs.FilterMessageSnippet("pausing").Len()
	r.Kill()
	for i, nd := range nodes {
		err := try(nd.b, budget.Watch, 50*time.Millisecond)
		if we := waitErr(t, err); !errors.Is(err, budget.ErrPaused) || we.Scope != budget.ScopeInstitution || !nd.b.down {
			t.Fatalf("node %d alone during the pause: %v (down %v), want the institution pause", i, err, nd.b.down)
		}
		if err := try(nd.b, budget.Order, 50*time.Millisecond); err != nil {
			t.Fatalf("node %d: an order during the pause: %v", i, err)
		}
	}
	if n := logs.FilterMessageSnippet("pausing").Len(); n != warned {
		t.Errorf("%d WARN lines about pauses after Redis went away, want none beyond the %d before", n-warned, warned)
	}
}
