package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/budget"
)

// testNode is one node of a test cluster: its own Cluster (own client,
// own name) and budget, against the test's redis-server.
type testNode struct {
	c *Cluster
	b *Budget

	mu     sync.Mutex
	grants []time.Time // every grant this node was told of, by OnGrant
}

func (n *testNode) granted() []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.grants)
}

// nodeOpts tune newNodes.
type nodeOpts struct {
	opTimeout time.Duration // default 50 ms, the production value
	heartbeat time.Duration
	prefix    string
	name      string // before the node's number, to tell apart nodes of several newNodes calls
	logger    *zap.Logger
}

// newNodes starts n nodes sharing cfg on the redis-server at addr.
func newNodes(t testing.TB, addr string, n int, cfg budget.Config, o nodeOpts) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		if o.logger != nil {
			cfg.Logger = o.logger
		}
		c, err := Open(Config{URL: redisURL(addr), Node: fmt.Sprintf("%snode%d", o.name, i), Prefix: o.prefix, OpTimeout: o.opTimeout,
			Heartbeat: o.heartbeat, Logger: o.logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.nodes.Store(int64(n)) // what the heartbeats would say
		nd := &testNode{c: c, b: NewBudget(c, cfg)}
		nd.b.OnGrant(func(at time.Time, k int) {
			nd.mu.Lock()
			defer nd.mu.Unlock()
			if k > 0 {
				nd.grants = append(nd.grants, at)
			} else if i := slices.IndexFunc(nd.grants, at.Equal); i >= 0 {
				nd.grants = slices.Delete(nd.grants, i, i+1)
			}
		})
		nodes[i] = nd
	}
	return nodes
}

// allGrants merges the nodes' grant times, oldest first.
func allGrants(nodes []*testNode) []time.Time {
	var all []time.Time
	for _, n := range nodes {
		all = append(all, n.granted()...)
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	return all
}

// checkWindows fails when some interval of length w holds more than limit
// of the grants (sorted): grant i and grant i+limit must be w apart.
func checkWindows(t *testing.T, grants []time.Time, limit int, w time.Duration) {
	t.Helper()
	for i := 0; i+limit < len(grants); i++ {
		if d := grants[i+limit].Sub(grants[i]); d < w {
			t.Fatalf("%d grants within %v (limit %d per %v): from %v to %v",
				limit+1, d, limit, w, grants[i].Format("15:04:05.000000"), grants[i+limit].Format("15:04:05.000000"))
		}
	}
}

func try(b *Budget, p budget.Priority, wait time.Duration) error {
	return tryCall(b, budget.Call{Priority: p}, wait)
}

func tryCall(b *Budget, c budget.Call, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return b.AcquireCall(ctx, c)
}

// eventually polls cond every 10 ms and fails at the deadline.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

func waitErr(t *testing.T, err error) *budget.WaitError {
	t.Helper()
	var we *budget.WaitError
	if !errors.As(err, &we) {
		t.Fatalf("got %v, want a *budget.WaitError", err)
	}
	return we
}

func TestFullWindowRefusesAtOnceWithRetryIn(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 5, Window: 2 * time.Second, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{})
	for i := range 5 {
		if err := try(nodes[i%2].b, budget.Foreground, time.Second); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	start := time.Now()
	err := try(nodes[1].b, budget.Foreground, 300*time.Millisecond)
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("a refusal that no wait can help took %v; it must come at once", took)
	}
	we := waitErr(t, err)
	if !errors.Is(err, budget.ErrLimited) || we.RetryIn < time.Second || we.RetryIn > 2*time.Second {
		t.Fatalf("got %v (retry in %v), want ErrLimited with the window's remaining time (1-2s)", err, we.RetryIn)
	}
	// A caller who may wait long enough gets the slot that frees first.
	if err := try(nodes[0].b, budget.Foreground, 3*time.Second); err != nil {
		t.Fatalf("waiting for the oldest grant to age out: %v", err)
	}
	checkWindows(t, allGrants(nodes), 5, 2*time.Second)
}

func TestKeyPauseOnOneNodeRefusesTheKeyOnAnother(t *testing.T) {
	addr := startRedisB(t).Addr
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := budget.Config{Calls: 100, FirstPause: 5 * time.Second}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{logger: zap.New(core)})
	a, b := nodes[0].b, nodes[1].b
	call := budget.Call{Priority: budget.Foreground, Method: "availabilityService/getEventAvailability", Key: "k1"}
	if s := a.PushbackCall(call, 0); s != budget.ScopeKey {
		t.Fatalf("first refusal of one key: scope %v, want key", s)
	}
	if s := a.PushbackCall(call, 0); s != budget.ScopeKey { // the echo of a call in flight
		t.Fatalf("echo: scope %v, want key", s)
	}
	if n := logs.FilterMessageSnippet("pausing").Len(); n != 1 {
		t.Errorf("%d WARN lines about the pause, want 1 (the echo starts none)", n)
	}
	err := tryCall(b, call, time.Second)
	we := waitErr(t, err)
	if !errors.Is(err, budget.ErrPaused) || we.Scope != budget.ScopeKey || we.RetryIn < 4*time.Second {
		t.Fatalf("the paused key on the other node: %v (scope %v, retry in %v), want paused, key, ~5s", err, we.Scope, we.RetryIn)
	}
	other := call
	other.Key = "k2"
	if err := tryCall(b, other, time.Second); err != nil {
		t.Fatalf("another key of the method: %v, want a slot", err)
	}
	if s := b.Stats(); s.PausedKeys != 1 || s.PausesByScope.Key != 0 {
		t.Errorf("node b's stats: %d paused keys (want 1, cluster-wide), %d key pauses started here (want 0)", s.PausedKeys, s.PausesByScope.Key)
	}
	if s := a.Stats(); s.PausesByScope.Key != 1 {
		t.Errorf("node a started %d key pauses, want 1", s.PausesByScope.Key)
	}
}

func TestInstitutionPauseRefusesAllButOrdersUntilRetryAfter(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 100, Window: 10 * time.Second, FixedLimit: true}
	// Redis calls get a second, not 50 ms: on a loaded machine a call past
	// the bound makes a node decide alone for a while, which is not what
	// this test is about.
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{opTimeout: time.Second})
	a, b, c := nodes[0].b, nodes[1].b, nodes[2].b
	m1 := budget.Call{Priority: budget.Foreground, Method: "catalogService/getCatalog", Key: "x"}
	m2 := budget.Call{Priority: budget.Foreground, Method: "availabilityService/getEventAvailability", Key: "y"}
	if s := a.PushbackCall(m1, 0); s != budget.ScopeKey {
		t.Fatalf("first refusal: %v, want key", s)
	}
	// A second method refused within the window: the institution.
	if s := b.PushbackCall(m2, 400*time.Millisecond); s != budget.ScopeInstitution {
		t.Fatalf("two methods refused: %v, want institution", s)
	}
	paused := time.Now()
	err := try(c, budget.Foreground, 100*time.Millisecond)
	if we := waitErr(t, err); !errors.Is(err, budget.ErrPaused) || we.Scope != budget.ScopeInstitution {
		t.Fatalf("during the pause: %v, want ErrPaused with scope institution", err)
	}
	if err := try(c, budget.Order, 100*time.Millisecond); err != nil {
		t.Fatalf("an order during the pause: %v; orders are never held by it", err)
	}
	if s := c.Stats(); s.PausedUntil.IsZero() || !s.Probing {
		t.Errorf("stats during the pause: paused until %v, probing %v", s.PausedUntil, s.Probing)
	}
	// Lifted after Retry-After: the first caller is the probe.
	if err := try(c, budget.Watch, 2*time.Second); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if took := time.Since(paused); took < 350*time.Millisecond {
		t.Fatalf("granted %v after a 400ms pause began", took)
	}
	// The others wait for the probe's answer, on any node.
	probeOut := make(chan error, 1)
	go func() { probeOut <- try(a, budget.Foreground, 5*time.Second) }()
	select {
	case err := <-probeOut:
		t.Fatalf("granted (%v) while the probe was out", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.SuccessCall(m2)
	select {
	case err := <-probeOut:
		if err != nil {
			t.Fatalf("after the probe's success: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("still waiting 2s after the probe's success")
	}
}

func TestAdaptiveLimitIsSharedAndGrowsPerWindow(t *testing.T) {
	addr := startRedisB(t).Addr
	const w = 600 * time.Millisecond
	cfg := budget.Config{Calls: 20, Window: w, AdaptiveStep: 2, FirstPause: 50 * time.Millisecond}
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{})
	var learned []budget.Learned
	var mu sync.Mutex
	nodes[2].b.OnAdjust(func(l budget.Learned) { mu.Lock(); learned = append(learned, l); mu.Unlock() })
	for range 10 {
		if err := try(nodes[0].b, budget.Foreground, time.Second); err != nil {
			t.Fatal(err)
		}
		nodes[0].b.SuccessCall(budget.Call{Priority: budget.Foreground})
	}
	m1 := budget.Call{Priority: budget.Foreground, Method: "a/x", Key: "1"}
	m2 := budget.Call{Priority: budget.Foreground, Method: "b/y", Key: "2"}
	nodes[1].b.PushbackCall(m1, 0)
	if s := nodes[1].b.PushbackCall(m2, 0); s != budget.ScopeInstitution {
		t.Fatalf("scope %v, want institution", s)
	}
	decreased := time.Now()
	// 0.9 × the 10 calls S-360 answered in the window, on every node.
	for i, n := range nodes {
		if s := n.b.Stats(); s.EffectiveLimit != 9 {
			t.Fatalf("node %d: effective limit %d after the pushback, want 9", i, s.EffectiveLimit)
		}
	}
	mu.Lock()
	if len(learned) != 1 || learned[0].Limit != 9 {
		t.Errorf("OnAdjust on another node was told %v, want one adjustment to 9", learned)
	}
	mu.Unlock()
	// Each full window without refusal adds the step; the acquire script
	// does it, no node runs a timer.
	var eff int
	eventually(t, 3*w, "an increase", func() bool {
		eff = nodes[0].b.Stats().EffectiveLimit
		return eff != 9
	})
	if since := time.Since(decreased); eff != 11 || since < w-50*time.Millisecond {
		t.Fatalf("first increase to %d after %v, want 11 after a window (%v)", eff, since, w)
	}
	eventually(t, 3*w, "a second increase", func() bool {
		eff = nodes[1].b.Stats().EffectiveLimit
		return eff != 11
	})
	if since := time.Since(decreased); eff != 13 || since < 2*w-50*time.Millisecond {
		t.Fatalf("second increase to %d after %v, want 13 after two windows", eff, since)
	}
}

func TestFloorsAreSharedAcrossNodes(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Floors: map[string]time.Duration{"catalogService/getCatalog": 400 * time.Millisecond}}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{})
	a, b := nodes[0].b, nodes[1].b
	const avail = "availabilityService/getEventAvailability"
	if d := b.FloorWait("k", avail); d != 0 {
		t.Fatalf("before any fetch: %v", d)
	}
	a.MarkFetched("k", avail)
	if d := b.FloorWait("k", avail); d < 59*time.Second || d > time.Minute {
		t.Fatalf("availability fetched on node a: node b waits %v, want the rest of a minute", d)
	}
	if d := b.FloorWait("other", avail); d != 0 {
		t.Fatalf("another key: %v, want 0", d)
	}
	a.MarkFetched("c", "catalogService/getCatalog")
	if d := b.FloorWait("c", "catalogService/getCatalog"); d <= 0 || d > 400*time.Millisecond {
		t.Fatalf("catalog: %v, want up to 400ms", d)
	}
	eventually(t, 2*time.Second, "the floor to pass", func() bool { return b.FloorWait("c", "catalogService/getCatalog") == 0 })
	if d := b.Floor(avail); d != time.Minute {
		t.Errorf("Floor(%s) = %v", avail, d)
	}
}

func TestRestoreKeepsRedisValue(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 100}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{})
	nodes[0].b.Restore(budget.Learned{Limit: 60})
	if s := nodes[1].b.Stats(); s.EffectiveLimit != 60 {
		t.Fatalf("a limit restored while Redis had none: %d, want 60 on every node", s.EffectiveLimit)
	}
	nodes[1].b.Restore(budget.Learned{Limit: 30}) // an older memory of another node
	if s := nodes[0].b.Stats(); s.EffectiveLimit != 60 {
		t.Fatalf("Redis's value must win: %d, want 60", s.EffectiveLimit)
	}
}

func TestScriptReloadedAfterFlush(t *testing.T) {
	addr := startRedisB(t).Addr
	nodes := newNodes(t, addr, 1, budget.Config{}, nodeOpts{})
	if err := try(nodes[0].b, budget.Foreground, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].c.rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := try(nodes[0].b, budget.Foreground, time.Second); err != nil {
		t.Fatalf("after SCRIPT FLUSH (NOSCRIPT): %v", err)
	}
	if nodes[0].b.down {
		t.Fatal("NOSCRIPT made the node fall back")
	}
	if n := len(nodes[0].granted()); n != 2 {
		t.Fatalf("%d grants, want 2", n)
	}
}

// Every key the budget writes expires (cluster design, decision 6).
func TestEveryBudgetKeyHasATTL(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 10, Floors: map[string]time.Duration{"a/x": time.Minute}}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{})
	a := nodes[0].b
	call := budget.Call{Priority: budget.Foreground, Method: "a/x", Key: "k", Client: "10.0.0.1"}
	if err := tryCall(a, call, time.Second); err != nil {
		t.Fatal(err)
	}
	a.MarkFetched("k", "a/x")
	a.PushbackCall(call, 0)
	a.PushbackCall(budget.Call{Priority: budget.Foreground, Method: "a/x", Key: "k2"}, 0)
	a.PushbackCall(budget.Call{Priority: budget.Foreground, Method: "b/y", Key: "k3"}, 0)
	a.SuccessCall(call)
	a.Stats()
	ctx := context.Background()
	keys, err := nodes[0].c.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	if len(keys) < 8 {
		t.Fatalf("only %d keys written: %v", len(keys), keys)
	}
	// The shared state's few long-lived keys (the generation, the setup
	// value behind it, the event stream and the lease token counter) are
	// not the budget's.
	lasting := map[string]bool{"s360edge:leader:token": true, "s360edge:gen": true, "s360edge:setup": true, "s360edge:events": true}
	for _, k := range keys {
		if lasting[k] {
			continue
		}
		if ttl := nodes[0].c.rdb.PTTL(ctx, k).Val(); ttl < 0 {
			t.Errorf("key %q has no TTL", k)
		}
	}
}

func TestClientQuotaIsClusterWide(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 100, ClientQuota: 2, ClientWindow: 5 * time.Second}
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{})
	x := budget.Call{Priority: budget.Foreground, Client: "192.0.2.1"}
	for i := range 2 {
		if err := tryCall(nodes[i].b, x, time.Second); err != nil {
			t.Fatalf("call %d of the client: %v", i, err)
		}
	}
	err := tryCall(nodes[2].b, x, time.Second)
	if we := waitErr(t, err); !errors.Is(err, budget.ErrClientQuota) || we.RetryIn < 4*time.Second {
		t.Fatalf("third call of the client on a third node: %v (retry in %v), want ErrClientQuota, ~5s", err, we.RetryIn)
	}
	if err := tryCall(nodes[2].b, budget.Call{Priority: budget.Foreground, Client: "192.0.2.2"}, time.Second); err != nil {
		t.Fatalf("another client: %v", err)
	}
	// Orders and the sidecar's own work are outside the quota.
	for _, p := range []budget.Priority{budget.Order, budget.Watch, budget.Background} {
		c := x
		c.Priority = p
		if err := tryCall(nodes[2].b, c, time.Second); err != nil {
			t.Fatalf("%v call of the client over its quota: %v", p, err)
		}
	}
	if s := nodes[2].b.Stats(); s.QuotaRefusals != 1 {
		t.Errorf("node 2 counted %d quota refusals, want 1", s.QuotaRefusals)
	}
}

// takeShares asks for Foreground calls of the clients in turn, each on the
// next node, each client until it is refused; it returns how many each was
// granted and why each was refused.
func takeShares(nodes []*testNode, ids ...string) (map[string]int, map[string]error) {
	got, last := map[string]int{}, map[string]error{}
	for i := 0; len(last) < len(ids); {
		for _, id := range ids {
			if last[id] != nil {
				continue
			}
			if err := tryCall(nodes[i%len(nodes)].b, budget.Call{Priority: budget.Foreground, Client: id}, 50*time.Millisecond); err != nil {
				last[id] = err
			} else {
				got[id]++
			}
			i++
		}
	}
	return got, last
}

// The clients' fair shares (budget/quota.go) are the cluster's: budget.lua
// decides them on the shared window, whatever node a client's calls reach.
// A generous OpTimeout keeps a loaded machine from sending a node to its
// local share, which knows only its own clients.
func TestFairSharesAreClusterWide(t *testing.T) {
	addr := startRedisB(t).Addr
	// 100 calls less the order (6) and watch (4) reserves: the clients
	// share 90.
	cfg := budget.Config{Calls: 100, Window: time.Minute, OrderReserve: 6, WatchReserve: 4, FixedLimit: true}
	t.Run("a lone client may use the whole budget but the reserves", func(t *testing.T) {
		nodes := newNodes(t, addr, 3, cfg, nodeOpts{prefix: "lone", opTimeout: time.Second})
		got, last := takeShares(nodes, "backend")
		if got["backend"] != 90 || !errors.Is(last["backend"], budget.ErrLimited) {
			t.Fatalf("granted %d, then %v; want 90, then the window full", got["backend"], last["backend"])
		}
		if err := try(nodes[0].b, budget.Watch, time.Second); err != nil {
			t.Fatalf("a watcher's poll: %v", err)
		}
		if s := nodes[1].b.Stats(); s.Clients != 1 || s.FairShare != 90 || s.QuotaRefusals != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("two competing clients each get half of what remains", func(t *testing.T) {
		nodes := newNodes(t, addr, 3, cfg, nodeOpts{prefix: "two", opTimeout: time.Second})
		for i := range 30 { // alone at first
			if err := tryCall(nodes[i%3].b, budget.Call{Priority: budget.Foreground, Client: "a"}, time.Second); err != nil {
				t.Fatal(err)
			}
		}
		got, last := takeShares(nodes, "a", "b")
		if got["a"]+30 != 45 || got["b"] != 45 {
			t.Fatalf("a got %d, b %d; want 45 each", got["a"]+30, got["b"])
		}
		if we := waitErr(t, last["a"]); !errors.Is(we, budget.ErrClientQuota) || we.RetryIn < 50*time.Second || we.RetryIn > time.Minute {
			t.Fatalf("a: %v (retry in %v), want its share reached, back within it in about a minute", we, we.RetryIn)
		}
		if !errors.Is(last["b"], budget.ErrLimited) {
			t.Fatalf("b: %v, want the window full", last["b"])
		}
		if s := nodes[0].b.Stats(); s.Clients != 2 || s.FairShare != 45 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("a client that goes quiet gives its share back one window after its last call", func(t *testing.T) {
		const w = 4 * time.Second
		c := cfg
		c.Window = w
		nodes := newNodes(t, addr, 3, c, nodeOpts{prefix: "quiet", opTimeout: time.Second})
		takeShares(nodes, "a", "b")
		filled := time.Now()
		time.Sleep(time.Second)
		if err := tryCall(nodes[2].b, budget.Call{Priority: budget.Foreground, Client: "b"}, 50*time.Millisecond); !errors.Is(err, budget.ErrLimited) {
			t.Fatalf("b, the window full: %v", err)
		}
		asked := time.Now()
		// Every call aged out; b is quiet but asked within the window: its
		// share waits for it.
		time.Sleep(time.Until(filled.Add(w + 200*time.Millisecond)))
		got, last := takeShares(nodes, "a")
		if time.Since(asked) >= w {
			t.Skip("too slow a machine: b's last call aged out before a was done")
		}
		if got["a"] != 45 || !errors.Is(last["a"], budget.ErrClientQuota) {
			t.Fatalf("a got %d, then %v, while b is active; want its share, 45, then refused for it", got["a"], last["a"])
		}
		// b has not asked for a window: a may take the 45 left.
		time.Sleep(time.Until(asked.Add(w + 200*time.Millisecond)))
		if got, last := takeShares(nodes, "a"); got["a"] != 45 || !errors.Is(last["a"], budget.ErrLimited) {
			t.Fatalf("a got %d, then %v, once b was gone; want 45, then the window full", got["a"], last["a"])
		}
	})
	t.Run("an explicit client_quota caps a client even alone", func(t *testing.T) {
		c := cfg
		c.ClientQuota = 10
		nodes := newNodes(t, addr, 3, c, nodeOpts{prefix: "cap", opTimeout: time.Second})
		if got, last := takeShares(nodes, "backend"); got["backend"] != 10 || !errors.Is(last["backend"], budget.ErrClientQuota) {
			t.Fatalf("granted %d, then %v; want 10, then the quota", got["backend"], last["backend"])
		}
	})
	t.Run("off: first come, first served", func(t *testing.T) {
		c := cfg
		c.ClientQuota = -1
		nodes := newNodes(t, addr, 3, c, nodeOpts{prefix: "off", opTimeout: time.Second})
		takeShares(nodes, "b")
		if err := tryCall(nodes[0].b, budget.Call{Priority: budget.Foreground, Client: "b"}, 50*time.Millisecond); !errors.Is(err, budget.ErrLimited) {
			t.Fatalf("b after taking everything: %v", err)
		}
		if s := nodes[0].b.Stats(); s.FairShare != 0 || s.QuotaRefusals != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// A Redis that answers, but later than OpTimeout, is as good as down: the
// acquire answers from the local share at once.
func TestSlowRedisFallsBackAtOnce(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 30, Window: time.Minute}
	nodes := newNodes(t, addr, 3, cfg, nodeOpts{heartbeat: 100 * time.Millisecond})
	b := nodes[0].b
	if err := try(b, budget.Foreground, time.Second); err != nil {
		t.Fatal(err)
	}
	slow := redisClient(addr)
	defer slow.Close()
	blocked := make(chan error, 1)
	go func() { blocked <- slow.Do(context.Background(), "DEBUG", "SLEEP", "0.5").Err() }()
	ping := redisClient(addr)
	defer ping.Close()
	eventually(t, time.Second, "DEBUG SLEEP to block the server", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		return ping.Ping(ctx).Err() != nil
	})
	start := time.Now()
	err := try(b, budget.Foreground, time.Second)
	if took := time.Since(start); took > 150*time.Millisecond {
		t.Errorf("an acquire while Redis stalls took %v; OpTimeout is 50ms", took)
	}
	if err != nil || !b.down {
		t.Fatalf("while Redis stalls: %v, down %v; want a slot from the local share", err, b.down)
	}
	if err := <-blocked; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	eventually(t, 2*time.Second, "rejoining once Redis answers", func() bool {
		return try(b, budget.Foreground, time.Second) == nil && !b.down
	})
	// The grant made alone was added to the shared window on rejoining.
	// The acquire that timed out may have run once Redis woke: its slot
	// is counted though unused, which errs on the safe side.
	if s, n := nodes[1].b.Stats(), len(nodes[0].granted()); s.Calls < n || s.Calls > n+1 {
		t.Errorf("shared window holds %d calls, node 0 made %d", s.Calls, n)
	}
}

// The pause scopes follow budget.Budget's rules: the same refusals give
// the same scopes, whichever nodes report them.
func TestPauseScopesMatchTheLocalBudget(t *testing.T) {
	addr := startRedisB(t).Addr
	type refusal struct {
		node        int
		method, key string
	}
	for i, tc := range []struct {
		name     string
		used     int // calls granted before the refusals
		refusals []refusal
	}{
		{"one key", 0, []refusal{{0, "a/x", "1"}}},
		{"one key twice", 0, []refusal{{0, "a/x", "1"}, {1, "a/x", "1"}}},
		{"two keys of one method", 0, []refusal{{0, "a/x", "1"}, {1, "a/x", "2"}}},
		{"keyless call", 0, []refusal{{2, "auth", ""}}},
		{"keyless twice", 0, []refusal{{2, "auth", ""}, {0, "auth", ""}}},
		{"two methods", 0, []refusal{{0, "a/x", "1"}, {1, "b/y", "2"}}},
		{"paused method again", 0, []refusal{{0, "a/x", "1"}, {1, "a/x", "2"}, {2, "a/x", "3"}}},
		{"window at the limit", 19, []refusal{{1, "a/x", "1"}}},
		{"institution paused", 0, []refusal{{0, "a/x", "1"}, {1, "b/y", "2"}, {2, "c/z", "3"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := budget.Config{Calls: 20, Window: 10 * time.Second, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1}
			nodes := newNodes(t, addr, 3, cfg, nodeOpts{prefix: fmt.Sprintf("scopes%d", i)})
			local := budget.New(cfg)
			for i := range tc.used {
				if err := try(nodes[i%3].b, budget.Order, time.Second); err != nil {
					t.Fatal(err)
				}
				if ok, _ := local.TryAcquire(budget.Order); !ok {
					t.Fatal("local budget refused")
				}
			}
			for i, r := range tc.refusals {
				c := budget.Call{Priority: budget.Foreground, Method: r.method, Key: r.key}
				want := local.PushbackCall(c, 0)
				if got := nodes[r.node].b.PushbackCall(c, 0); got != want {
					t.Fatalf("refusal %d (%s %q on node %d): scope %v, budget.Budget says %v", i, r.method, r.key, r.node, got, want)
				}
			}
		})
	}
}

// On one node, when a slot frees, a waiting order tries before buyers who
// have waited longer (without the ordering, one of the eight wakes first
// at random).
func TestHigherPriorityWaitersTryFirst(t *testing.T) {
	addr := startRedisB(t).Addr
	// The window outlasts the queueing of the eight waiters, even on a
	// loaded machine: no slot frees before the order waits too.
	const window = 5 * time.Second
	cfg := budget.Config{Calls: 2, Window: window, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, addr, 1, cfg, nodeOpts{opTimeout: time.Second})
	b := nodes[0].b
	for range 2 {
		if err := try(b, budget.Background, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiters := append(slices.Repeat([]budget.Priority{budget.Foreground}, 7), budget.Order)
	granted := make(chan budget.Priority, len(waiters))
	for i, p := range waiters {
		go func() {
			if b.AcquireCall(ctx, budget.Call{Priority: p}) == nil {
				granted <- p
			}
		}()
		eventually(t, time.Second, "the waiter to queue", func() bool { return b.Stats().Waiting == i+1 })
	}
	select {
	case p := <-granted:
		if p != budget.Order {
			t.Fatalf("a %v waiter got the first free slot, want the order", p)
		}
	case <-time.After(2 * window):
		t.Fatalf("no slot within %s", 2*window)
	}
}

func TestShareDividesTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   budget.Config
		n     int
		calls int
		quota int
		fair  int // the fair share of a lone client: the node's Foreground allowance
	}{
		{"one node keeps a quota that is off", budget.Config{Calls: 30, ClientQuota: -1}, 1, 30, 0, 0},
		{"three nodes", budget.Config{Calls: 30, ClientQuota: 9}, 3, 10, 3, 10 - 1 - 1},
		{"more nodes than calls", budget.Config{Calls: 2, ClientQuota: 1}, 5, 1, 1, 1},
		{"fair sharing without a cap", budget.Config{Calls: 150}, 3, 50, 0, 50 - 7/3 - 3/3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := budget.New(share(tc.cfg.WithDefaults(), tc.cfg.Calls, tc.n)).Stats()
			if s.Limit != tc.calls || s.ClientQuota != tc.quota || s.FairShare != tc.fair {
				t.Fatalf("limit %d, quota %d, fair share %d; want %d, %d, %d", s.Limit, s.ClientQuota, s.FairShare, tc.calls, tc.quota, tc.fair)
			}
		})
	}
}

// Waiters of one node do not all ask Redis when a slot frees: the first
// does, the others follow it, so Redis's load stays one call per slot.
func TestWaitersAskRedisOneAtATime(t *testing.T) {
	addr := startRedisB(t).Addr
	cfg := budget.Config{Calls: 1, Window: 500 * time.Millisecond, FixedLimit: true, ClientQuota: -1}
	nodes := newNodes(t, addr, 1, cfg, nodeOpts{opTimeout: time.Second})
	b := nodes[0].b
	if err := try(b, budget.Background, time.Second); err != nil {
		t.Fatal(err)
	}
	rdb := redisClient(addr)
	defer rdb.Close()
	scripts := func() int {
		info := rdb.Info(context.Background(), "commandstats").Val()
		n := 0
		for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if _, rest, ok := strings.Cut(info, cmd); ok {
				v, _, _ := strings.Cut(rest, ",")
				k, _ := strconv.Atoi(v)
				n += k
			}
		}
		return n
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var got atomic.Int64
	for range 10 {
		wg.Go(func() {
			if b.AcquireCall(ctx, budget.Call{Priority: budget.Background}) == nil {
				got.Add(1)
			}
		})
	}
	eventually(t, time.Second, "the waiters to queue", func() bool { return b.Stats().Waiting == 10 })
	before := scripts()
	eventually(t, 3*time.Second, "three slots to pass", func() bool { return got.Load() >= 3 })
	cancel()
	wg.Wait()
	// Each slot: the first waiter's call that gets it, and the next
	// waiter's call that finds the window full again.
	if n := scripts() - before; n > 8 {
		t.Fatalf("%d script calls for 3 slots with 10 waiters; want about 2 per slot", n)
	}
}

// The learned limits follow budget.Budget's rules on the cluster's
// counts: the same answers and refusals, spread over the nodes, teach the
// same limits, and pause the same scopes.
func TestLearnedLimitsMatchTheLocalBudget(t *testing.T) {
	addr := startRedisB(t).Addr
	const (
		a = "availabilityService/getEventAvailability"
		p = "availabilityService/getPerformanceAvailability"
	)
	// step is one event: n calls of method granted (and answered unless
	// inFlight), answered later (late), or a refusal of key.
	type step struct {
		method, key  string
		n            int
		inFlight     bool
		late, refuse bool
	}
	calls := func(m string, n int) step { return step{method: m, n: n} }
	refuse := func(m, key string) step { return step{method: m, key: key, refuse: true} }
	for i, tc := range []struct {
		name  string
		steps []step
	}{
		{"one method made the calls: both limits", []step{calls(a, 30), refuse(a, "1"), refuse(a, "2")}},
		{"one method of two: its limit", []step{calls(a, 20), calls(p, 20), refuse(a, "1"), refuse(a, "2")}},
		{"two methods: the institution's", []step{calls(a, 20), calls(p, 20), refuse(a, "1"), refuse(p, "2")}},
		{"the institution's withdraws the method's", []step{calls(a, 30), calls(p, 30), refuse(a, "1"), refuse(a, "2"), refuse(p, "3")}},
		{"echoes teach nothing", []step{calls(a, 20), calls(p, 20), refuse(a, "1"), refuse(a, "2"), refuse(a, "3"), refuse(a, "4")}},
		{"late answers", []step{calls(a, 20), {method: a, n: 10, inFlight: true}, calls(p, 20), refuse(a, "1"), refuse(a, "2"),
			{method: a, n: 10, late: true}}},
		{"unexplained: a pause", []step{calls(a, 5), calls(p, 20), refuse(a, "1"), refuse(a, "2"), calls(a, 3), refuse(a, "3")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Two clients share the budget fairly (the default): the fair
			// shares and the learned limits are decided together.
			cfg := budget.Config{Calls: 100, Window: 10 * time.Second, OrderReserve: -1, WatchReserve: -1, Reserve: -1}
			nodes := newNodes(t, addr, 3, cfg, nodeOpts{prefix: fmt.Sprintf("learn%d", i)})
			local := budget.New(cfg)
			for j, st := range tc.steps {
				c := budget.Call{Priority: budget.Foreground, Method: st.method, Key: st.key, Client: fmt.Sprint("10.0.0.", j%2)}
				b := nodes[j%3].b
				switch {
				case st.refuse:
					want := local.PushbackCall(c, 0)
					if got := b.PushbackCall(c, 0); got != want {
						t.Fatalf("step %d: scope %v, budget.Budget says %v", j, got, want)
					}
				case st.late:
					for range st.n {
						local.SuccessCall(c)
						b.SuccessCall(c)
					}
				default:
					for k := range st.n {
						c.Key = fmt.Sprint(j, "-", k)
						if err := tryCall(b, c, time.Second); err != nil {
							t.Fatalf("step %d: %v", j, err)
						}
						if err := local.AcquireCall(context.Background(), c); err != nil {
							t.Fatalf("step %d, local: %v", j, err)
						}
						if !st.inFlight {
							b.SuccessCall(c)
							local.SuccessCall(c)
						}
					}
				}
			}
			want := local.Stats()
			for k, nd := range nodes {
				got := nd.b.Stats()
				if got.EffectiveLimit != want.EffectiveLimit || !slices.Equal(got.PausedMethods, want.PausedMethods) ||
					got.PausedUntil.IsZero() != want.PausedUntil.IsZero() || len(got.MethodLimits) != len(want.MethodLimits) ||
					got.Clients != want.Clients || got.FairShare != want.FairShare {
					t.Fatalf("node %d: %+v\nbudget.Budget: %+v", k, got, want)
				}
				for m, l := range got.MethodLimits {
					if w := want.MethodLimits[m]; l.Method != w.Method || l.Limit != w.Limit || l.Calls != w.Calls {
						t.Fatalf("node %d: method limit %+v, budget.Budget's %+v", k, l, w)
					}
				}
			}
			t.Logf("effective %d, methods %+v, paused %v, clients %d, fair share %d", want.EffectiveLimit, want.MethodLimits, want.PausedMethods,
				want.Clients, want.FairShare)
		})
	}
}

// A method's limit learned on one node holds its calls on every node,
// while other methods go on; OnAdjust tells every node to persist it.
func TestMethodLimitIsShared(t *testing.T) {
	addr := startRedisB(t).Addr
	const w = time.Second
	cfg := budget.Config{Calls: 100, Window: w, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, addr, 2, cfg, nodeOpts{})
	var mu sync.Mutex
	var learned []budget.Learned
	nodes[0].b.OnAdjust(func(l budget.Learned) { mu.Lock(); learned = append(learned, l); mu.Unlock() })
	a := budget.Call{Priority: budget.Foreground, Method: "availabilityService/getEventAvailability"}
	p := budget.Call{Priority: budget.Foreground, Method: "availabilityService/getPerformanceAvailability"}
	start := time.Now()
	for _, c := range []budget.Call{a, a, p} {
		for i := range 10 {
			c.Key = fmt.Sprint(i)
			if err := tryCall(nodes[0].b, c, time.Second); err != nil {
				t.Fatal(err)
			}
			nodes[0].b.SuccessCall(c)
		}
	}
	// Node 1 sees S-360 refuse two keys of the method: 0.9 × its 20.
	a.Key = "r1"
	nodes[1].b.PushbackCall(a, 0)
	a.Key = "r2"
	if s := nodes[1].b.PushbackCall(a, 0); s != budget.ScopeMethod {
		t.Fatalf("scope %v", s)
	}
	for i, nd := range nodes {
		s := nd.b.Stats()
		if s.EffectiveLimit != 100 || len(s.MethodLimits) != 1 || s.MethodLimits[0].Method != a.Method ||
			s.MethodLimits[0].Limit != 18 || s.MethodLimits[0].Calls != 20 || s.PausesByScope.Method != 0 {
			t.Fatalf("node %d: %+v", i, s)
		}
	}
	a.Key = "x"
	err := tryCall(nodes[0].b, a, 50*time.Millisecond)
	we := waitErr(t, err)
	if !errors.Is(err, budget.ErrLimited) || we.Scope != budget.ScopeMethod || we.RetryIn <= 0 || we.RetryIn > w {
		t.Fatalf("the method over its limit on another node: %v %+v", err, we)
	}
	if err := tryCall(nodes[1].b, p, 50*time.Millisecond); err != nil {
		t.Fatalf("another method: %v", err)
	}
	mu.Lock()
	if n := len(learned); n == 0 || learned[n-1].Methods[a.Method] != 18 {
		t.Errorf("node 0 was told %+v, want the method's 18", learned)
	}
	mu.Unlock()
	// A caller who can wait gets the method's next slot, when its first
	// calls age out, a window after they were made.
	if err := tryCall(nodes[1].b, a, 2*w); err != nil {
		t.Fatalf("waiting for the method's slot: %v", err)
	}
	if since := time.Since(start); since < w {
		t.Fatalf("granted after %v, before the method's calls aged out", since)
	}
	// Redis's value wins over a node's older memory; a node that finds
	// none gives its own.
	nodes[1].b.Restore(budget.Learned{Limit: 100, Methods: map[string]int{a.Method: 40, "setupService/listSeasons": 30}})
	if s := nodes[0].b.Stats(); len(s.MethodLimits) != 2 || s.MethodLimits[0].Limit != 18 || s.MethodLimits[1].Limit != 30 {
		t.Fatalf("after a restore: %+v", s.MethodLimits)
	}
	// rate_limit lowered below a method's limit forgets it, as
	// budget.Budget's Update does.
	cfg.Calls = 20
	for _, nd := range nodes {
		nd.b.Update(cfg)
	}
	if s := nodes[1].b.Stats(); len(s.MethodLimits) != 1 || s.MethodLimits[0].Method != a.Method || s.MethodLimits[0].Limit != 18 {
		t.Fatalf("after rate_limit 20: %+v", s.MethodLimits)
	}
}

// Limits restored while Redis is out of reach are kept (a change persisted
// meanwhile still holds them) and reach Redis when the node rejoins.
func TestRestoreWhileRedisIsDownReachesRedisOnRejoin(t *testing.T) {
	r := startRedisB(t)
	const m = "availabilityService/getEventAvailability"
	cfg := budget.Config{Calls: 100, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, r.Addr, 2, cfg, nodeOpts{heartbeat: 50 * time.Millisecond, opTimeout: 500 * time.Millisecond})
	var mu sync.Mutex
	var learned []budget.Learned
	nodes[0].b.OnAdjust(func(l budget.Learned) { mu.Lock(); learned = append(learned, l); mu.Unlock() })
	r.Kill()
	nodes[0].b.Restore(budget.Learned{Limit: 80, Methods: map[string]int{m: 40}})
	if !nodes[0].b.down {
		t.Fatal("a restore without Redis left the node in cluster mode")
	}
	mu.Lock()
	if n := len(learned); n == 0 || learned[n-1].Limit != 80 || learned[n-1].Methods[m] != 40 {
		t.Fatalf("persisted while Redis is down: %+v, want the limit 80 and the method's 40", learned)
	}
	mu.Unlock()
	r.Restart()
	eventually(t, 5*time.Second, "node 0 to rejoin", func() bool {
		try(nodes[0].b, budget.Foreground, 10*time.Millisecond)
		return !nodes[0].b.down
	})
	s := nodes[1].b.Stats()
	if s.EffectiveLimit != 80 || len(s.MethodLimits) != 1 || s.MethodLimits[0].Method != m || s.MethodLimits[0].Limit != 40 {
		t.Fatalf("another node after the rejoin: limit %d, methods %+v; want 80 and the method's 40", s.EffectiveLimit, s.MethodLimits)
	}
}
