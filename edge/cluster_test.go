package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// sharedHub stands for Redis in these tests: the shared tier (entries
// through the store's codec), the keys' leases, the poller and the event
// stream. Each node sees it through a sharedNode, which counts its calls.
type sharedHub struct {
	mu      sync.Mutex
	entries map[string][]byte
	leases  map[string]*hubLease
	tokens  int
	poller  string
	subs    map[string]func(Event)
	fail    atomic.Bool // every call fails, as with Redis down
	nodes   int
	deliver sync.Mutex // one event at a time, in order, to every other node
	gen     uint64     // the cluster's generation, setup value and reference date, for EventSync
	setup   []byte
	ref     string
	// failPublish: Publish fails as with Redis paused for writes.
	failPublish atomic.Bool
	clock       int64              // Redis's clock, for Mark and the marks
	marks       map[string]int64   // invalidation marks: "t:<tag>", "c:availability", "e:<key>"
	held        map[string][]Event // events not yet delivered to a node (holdEvents)
	// published are the events that landed, in order.
	published []Event
	// floors, when set, are the keys' last calls (hubFloors).
	floors map[string]time.Time
}

func newHub(poller string) *sharedHub {
	return &sharedHub{entries: map[string][]byte{}, leases: map[string]*hubLease{}, poller: poller, subs: map[string]func(Event){},
		marks: map[string]int64{}, held: map[string][]Event{}}
}

type sharedNode struct {
	hub   *sharedHub
	name  string
	calls atomic.Int32
	down  atomic.Bool // this node is cut off from the shared state
	// onGet, when set, runs during GetEntry, after the entry was read.
	onGet func()
	// onPut, when set, runs at the start of PutEntry.
	onPut func(key string)
}

var errRedisDown = errors.New("redis: connection refused")

func (n *sharedNode) call() error {
	n.calls.Add(1)
	if n.hub.fail.Load() || n.down.Load() {
		return errRedisDown
	}
	return nil
}

func (n *sharedNode) GetEntry(ctx context.Context, key string) (*cachestore.Entry, error) {
	if err := n.call(); err != nil {
		return nil, err
	}
	n.hub.mu.Lock()
	b, ok := n.hub.entries[key]
	n.hub.mu.Unlock()
	if n.onGet != nil {
		n.onGet()
	}
	if !ok {
		return nil, cachestore.ErrNotFound
	}
	return cachestore.DecodeEntry(b)
}

func (n *sharedNode) Mark(ctx context.Context) (int64, error) {
	if err := n.call(); err != nil {
		return 0, err
	}
	n.hub.mu.Lock()
	defer n.hub.mu.Unlock()
	n.hub.clock++
	return n.hub.clock, nil
}

// PutEntry refuses, as the cluster's script does, an entry whose tags,
// class or key were marked since mark.
func (n *sharedNode) PutEntry(ctx context.Context, key string, ent *cachestore.Entry, mark int64) error {
	if n.onPut != nil {
		n.onPut(key)
	}
	if err := n.call(); err != nil {
		return err
	}
	n.hub.mu.Lock()
	defer n.hub.mu.Unlock()
	marks := []string{"c:" + ent.Class.String(), "e:" + key}
	for _, t := range ent.Tags {
		marks = append(marks, "t:"+t)
	}
	for _, m := range marks {
		if mark == 0 || n.hub.marks[m] >= mark {
			return ErrInvalidated
		}
	}
	n.hub.entries[key] = cachestore.EncodeEntry(ent)
	return nil
}

// mark records an invalidation of the marks now.
func (h *sharedHub) mark(marks ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clock++
	for _, m := range marks {
		h.marks[m] = h.clock
	}
}

// drop deletes the entries for which match holds.
func (h *sharedHub) drop(match func(key string, ent *cachestore.Entry) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, b := range h.entries {
		if ent, err := cachestore.DecodeEntry(b); err != nil || match(k, ent) {
			delete(h.entries, k)
		}
	}
}

func (h *sharedHub) has(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.entries[key]
	return ok
}

func (n *sharedNode) Invalidate(ctx context.Context, tags []string) error {
	if err := n.call(); err != nil {
		return err
	}
	var marks []string
	for _, t := range tags {
		marks = append(marks, "t:"+t)
	}
	n.hub.mark(marks...)
	n.hub.drop(func(_ string, ent *cachestore.Entry) bool {
		return slices.ContainsFunc(ent.Tags, func(t string) bool { return slices.Contains(tags, t) })
	})
	return nil
}

func (n *sharedNode) Purge(ctx context.Context, ev Event) error {
	if err := n.call(); err != nil {
		return err
	}
	switch {
	case ev.Key != "":
		n.hub.mark("e:" + ev.Key)
	case ev.Class != "":
		n.hub.mark("c:" + ev.Class)
	case len(ev.Tags) == 0:
		n.hub.mark("c:catalog", "c:availability", "c:other")
	default:
		for _, t := range ev.Tags {
			n.hub.mark("t:" + t)
		}
	}
	n.hub.drop(func(k string, ent *cachestore.Entry) bool {
		switch {
		case ev.Key != "":
			return k == ev.Key
		case ev.Class != "":
			return ent.Class.String() == ev.Class
		case len(ev.Tags) > 0:
			return slices.ContainsFunc(ent.Tags, func(t string) bool { return slices.Contains(ev.Tags, t) })
		}
		return true
	})
	return nil
}

// hubLease is a key's lease in the hub: it expires at until unless its
// holder renews it, as in Redis.
type hubLease struct {
	token    int
	until    time.Time
	released chan struct{} // closed on release
}

// nodeLease is a node's handle on the lease it took.
type nodeLease struct {
	n     *sharedNode
	key   string
	token int
	ttl   time.Duration
}

func (n *sharedNode) Lease(ctx context.Context, key string, ttl time.Duration) (KeyLease, bool, error) {
	if err := n.call(); err != nil {
		return nil, false, err
	}
	n.hub.mu.Lock()
	defer n.hub.mu.Unlock()
	if l := n.hub.leases[key]; l != nil && time.Now().Before(l.until) {
		return nil, false, nil
	}
	n.hub.tokens++
	n.hub.leases[key] = &hubLease{token: n.hub.tokens, until: time.Now().Add(ttl), released: make(chan struct{})}
	return &nodeLease{n: n, key: key, token: n.hub.tokens, ttl: ttl}, true, nil
}

func (l *nodeLease) Renew(ctx context.Context) (bool, error) {
	if err := l.n.call(); err != nil {
		return false, err
	}
	l.n.hub.mu.Lock()
	defer l.n.hub.mu.Unlock()
	hl := l.n.hub.leases[l.key]
	if hl == nil || hl.token != l.token || !time.Now().Before(hl.until) {
		return false, nil
	}
	hl.until = time.Now().Add(l.ttl)
	return true, nil
}

func (l *nodeLease) Release() {
	if l.n.call() != nil {
		return
	}
	l.n.hub.mu.Lock()
	defer l.n.hub.mu.Unlock()
	if hl := l.n.hub.leases[l.key]; hl != nil && hl.token == l.token {
		delete(l.n.hub.leases, l.key)
		close(hl.released)
	}
}

// WaitEntry waits for the lease's release or expiry, as the cluster's
// polling of the lease does.
func (n *sharedNode) WaitEntry(ctx context.Context, key string) (*cachestore.Entry, error) {
	if err := n.call(); err != nil {
		return nil, err
	}
	for {
		n.hub.mu.Lock()
		l := n.hub.leases[key]
		var until time.Time
		if l != nil {
			until = l.until
		}
		n.hub.mu.Unlock()
		if l == nil || !time.Now().Before(until) {
			return n.GetEntry(ctx, key)
		}
		t := time.NewTimer(time.Until(until))
		select {
		case <-l.released:
		case <-t.C: // expired, or renewed: look again
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

func (n *sharedNode) Poller() (bool, int) {
	n.calls.Add(1)
	if n.hub.fail.Load() || n.down.Load() {
		return true, n.hub.nodes
	}
	return n.hub.poller == n.name, 1
}

// Publish is the cluster's publishScript: a generation change lands only
// while the hub's setup is the one it was seen from, an invalidation only
// from the poller, and each writes the hub's state with its event.
func (n *sharedNode) Publish(ctx context.Context, ev Event) error {
	if err := n.call(); err != nil {
		return err
	}
	if n.hub.failPublish.Load() {
		return errRedisDown
	}
	n.hub.deliver.Lock()
	defer n.hub.deliver.Unlock()
	n.hub.mu.Lock()
	switch ev.Kind {
	case EventGeneration:
		if bytes.Equal(n.hub.setup, ev.Setup) {
			n.hub.mu.Unlock()
			return nil
		}
		if n.hub.setup != nil && !bytes.Equal(n.hub.setup, ev.From) {
			n.hub.mu.Unlock()
			return fmt.Errorf("superseded: %w", ErrRefusedChange)
		}
		n.hub.gen, n.hub.setup = ev.Generation, ev.Setup
	case EventInvalidate:
		if n.hub.poller != n.name {
			n.hub.mu.Unlock()
			return fmt.Errorf("not the poller: %w", ErrRefusedChange)
		}
		if ev.Reference > n.hub.ref {
			n.hub.ref = ev.Reference
		}
	}
	ev.Node, ev.From = n.name, nil
	n.hub.published = append(n.hub.published, ev)
	var fns []func(Event)
	for name, fn := range n.hub.subs {
		if _, held := n.hub.held[name]; held && name != n.name {
			n.hub.held[name] = append(n.hub.held[name], ev)
		} else if name != n.name {
			fns = append(fns, fn)
		}
	}
	n.hub.mu.Unlock()
	for _, fn := range fns {
		fn(ev)
	}
	return nil
}

// heartbeat hands every node whose events are not held the hub's state,
// as each node's reconcile does every heartbeat.
func (h *sharedHub) heartbeat() {
	h.deliver.Lock()
	defer h.deliver.Unlock()
	h.mu.Lock()
	ev := Event{Kind: EventSync, Generation: h.gen, Setup: h.setup, Reference: h.ref}
	var fns []func(Event)
	for name, fn := range h.subs {
		if _, held := h.held[name]; !held {
			fns = append(fns, fn)
		}
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(ev)
	}
}

// dropEvents loses the events held for node name, as a node that failed
// to apply them.
func (h *sharedHub) dropEvents(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.held, name)
}

// holdEvents keeps the events published from now on from node name (its
// stream reader is behind) until releaseEvents.
func (h *sharedHub) holdEvents(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[name] = []Event{}
}

// releaseEvents delivers to node name, in order, the events held for it.
func (h *sharedHub) releaseEvents(name string) {
	h.deliver.Lock()
	defer h.deliver.Unlock()
	h.mu.Lock()
	evs, fn := h.held[name], h.subs[name]
	delete(h.held, name)
	h.mu.Unlock()
	for _, ev := range evs {
		fn(ev)
	}
}

// Subscribe registers fn and, as a node (re)joining, hands it the
// cluster's current generation.
func (n *sharedNode) Subscribe(fn func(Event)) {
	n.hub.mu.Lock()
	n.hub.subs[n.name] = fn
	ev := Event{Kind: EventSync, Generation: n.hub.gen, Setup: n.hub.setup, Reference: n.hub.ref}
	n.hub.mu.Unlock()
	fn(ev)
}

// clusterNode is one sidecar of a test cluster: its own store in a
// temporary directory, its own real budget, and S-360 shared with the
// other nodes.
type clusterNode struct {
	*env
	shared *sharedNode
	logs   *observer.ObservedLogs
}

// openNode opens an edge attached to hub as name, with catalog floors off
// (a real cluster shares its floors through the cluster budget; here each
// node has its own) and a real budget.
func openNode(t *testing.T, hub *sharedHub, name string, f *watchFake) *clusterNode {
	t.Helper()
	return openNodeIn(t, t.TempDir(), hub, name, f)
}

func openNodeIn(t *testing.T, dir string, hub *sharedHub, name string, f *watchFake) *clusterNode {
	t.Helper()
	return openNodeWith(t, dir, hub, name, f, nil)
}

// openNodeWith is openNodeIn with the node's gate wrapped by wrap.
func openNodeWith(t *testing.T, dir string, hub *sharedHub, name string, f *watchFake, wrap func(Gate) Gate) *clusterNode {
	t.Helper()
	sn := &sharedNode{hub: hub, name: name}
	hub.mu.Lock()
	hub.nodes++
	hub.mu.Unlock()
	core, logs := observer.New(zapcore.InfoLevel)
	var gate Gate = budget.New(budget.Config{Floors: map[string]time.Duration{"catalogService/*": 0, "availabilityService/*": 0}})
	if wrap != nil {
		gate = wrap(gate)
	}
	e, err := Open(Options{Dir: dir, Institution: "mosa", Shared: sn, Logger: zap.New(core), Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	fs := &fakeS360{}
	fs.answer.Store(f.serve)
	c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Transport: fs, Gate: e})
	e.Attach(c)
	f.set(func(f *watchFake) {
		if f.date == nil {
			f.date = time.Now
		}
	})
	return &clusterNode{env: &env{e: e, f: fs, client: c, dir: dir}, shared: sn, logs: logs}
}

// landed waits until the changes node n found are in the hub (its
// outbox is empty).
func landed(t *testing.T, n *clusterNode) {
	t.Helper()
	eventually(t, n.shared.name+"'s changes to land in the cluster", func() bool {
		n.e.outbox.mu.Lock()
		defer n.e.outbox.mu.Unlock()
		return n.e.outbox.n == 0
	})
}

func openCluster(t *testing.T, f *watchFake, names ...string) (*sharedHub, []*clusterNode) {
	hub := newHub(names[0])
	var nodes []*clusterNode
	for _, n := range names {
		nodes = append(nodes, openNode(t, hub, n, f))
	}
	return hub, nodes
}

func TestClusterOneCallPerKeyAndSharedHits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hold := make(chan struct{})
		f.set(func(f *watchFake) { f.hold = hold })
		hub, nodes := openCluster(t, f, "a", "b", "c")
		results := make([]Result, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() { results[i] = n.serve(t, catalog, `{}`) })
		}
		synctest.Wait() // one node calls S-360, the others wait for its lease
		time.Sleep(time.Second)
		close(hold)
		wg.Wait()
		if got := len(f.calls("getCatalogDetailed")); got != 1 {
			t.Fatalf("3 nodes missing the same key at once made %d calls, want 1", got)
		}
		var waits uint64
		for i, r := range results {
			if r.Entry == nil || r.Entry.Status != http.StatusOK || string(r.Entry.Body) != string(results[0].Entry.Body) {
				t.Fatalf("node %d answered %+v, want node 0's answer", i, r)
			}
			waits += nodes[i].e.Stats().SharedWaits
		}
		if waits != 2 {
			t.Errorf("shared waits = %d, want 2 (the nodes that did not call)", waits)
		}
		key := s360.Key("mosa", catalog, []byte(`{}`))
		if !hub.has(key) {
			t.Fatal("the answer is not in the shared tier")
		}

		fourth := openNode(t, hub, "d", f)
		r := fourth.serve(t, catalog, `{}`)
		if !strings.Contains(r.CacheStatus, "hit") || !strings.HasSuffix(r.CacheStatus, "detail=shared") || r.Fetch != Found {
			t.Errorf("a fourth node answered with Cache-Status %q, want a hit from the shared tier", r.CacheStatus)
		}
		if got := len(f.calls("getCatalogDetailed")); got != 1 {
			t.Errorf("the fourth node called S-360: %d calls", got)
		}
		if s := fourth.e.Stats(); s.SharedHits != 1 {
			t.Errorf("fourth node shared_hits = %d, want 1", s.SharedHits)
		}
		// Stored locally: its next answer is a local hit.
		before := fourth.shared.calls.Load()
		if r := fourth.serve(t, catalog, `{}`); r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
			t.Errorf("second answer on the fourth node: %q, want a local hit", r.CacheStatus)
		}
		if n := fourth.shared.calls.Load() - before; n != 0 {
			t.Errorf("a local hit made %d calls of the shared state, want 0", n)
		}
	})
}

func TestClusterOnlyThePollerPollsAndGenerationsSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		_, nodes := openCluster(t, f, "a", "b", "c")
		for _, n := range nodes {
			if r := n.serve(t, catalog, `{}`); r.Entry == nil {
				t.Fatalf("catalog: %+v", r)
			}
		}
		if got := len(f.calls("getCatalogDetailed")); got != 1 {
			t.Fatalf("the catalog on 3 nodes took %d calls, want 1", got)
		}
		for _, n := range nodes {
			n.e.SetWatch(Watch{SetupPoll: time.Second})
		}
		// First poll of the poller records the value (a catalog is
		// cached and no value was ever seen: a new generation).
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if got := len(f.calls("getLastSetupUpdate")); got != 11 {
			t.Errorf("getLastSetupUpdate called %d times in 10 s with setup_poll 1s on 3 nodes, want 11 (one poller)", got)
		}
		for i, n := range nodes[1:] {
			if s := n.e.Stats(); s.SetupPolls != 0 {
				t.Errorf("node %d (not the poller) polled %d times", i+1, s.SetupPolls)
			}
		}
		calls := len(f.calls("getCatalogDetailed"))
		gen := nodes[0].e.Generation()

		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		eventually(t, "the new catalog on every node", func() bool {
			for _, n := range nodes {
				r := n.serve(t, catalog, `{}`)
				if r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"v2"`) || !r.Hit {
					return false
				}
			}
			return true
		})
		for i, n := range nodes {
			if g := n.e.Generation(); g == gen || g != f.gen(t) {
				t.Errorf("node %d is at generation %d (before the change %d), want the new setup value's %d", i, g, gen, f.gen(t))
			}
		}
		if got := len(f.calls("getCatalogDetailed")) - calls; got != 1 {
			t.Errorf("the setup change cost %d getCatalogDetailed calls across the 3 nodes, want 1", got)
		}
	})
}

// catalogEverywhere caches the catalog and an availability entry of
// product 101 on every node; the availability key is returned.
func catalogEverywhere(t *testing.T, nodes []*clusterNode) string {
	t.Helper()
	const body = `{"productIds":[101]}`
	for _, n := range nodes {
		for _, c := range []struct {
			call s360.Call
			body string
		}{{posConfig, `{}`}, {catalog, `{}`}, {productAva, body}} {
			if r := n.serve(t, c.call, c.body); r.Entry == nil {
				t.Fatalf("%s: %+v", c.call.Method, r)
			}
		}
	}
	canon, _ := s360.Canonical([]byte(body))
	return s360.Key("mosa", productAva, canon)
}

func TestClusterInvalidationReachesEveryNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b", "c")
		key := catalogEverywhere(t, nodes)
		if got := len(f.calls("getProductAvailability")); got != 1 {
			t.Fatalf("availability on 3 nodes took %d calls, want 1", got)
		}
		mustPoll(t, nodes[0].e.pollUpdates) // sets the reference date
		time.Sleep(time.Second)
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, nodes[0].e.pollUpdates)
		landed(t, nodes[0])
		if hub.has(key) {
			t.Error("the invalidated entry is still in the shared tier")
		}
		ref, err := nodes[0].e.store.GetMeta(metaUpdatesRef)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range nodes {
			if ent, err := n.e.store.Get(key); err != nil || cachestore.Marked(ent.Tags) != cachestore.InvalidatedTag || time.Now().Before(ent.FreshUntil) {
				t.Errorf("node %d does not keep the invalidated entry stale and marked (err %v)", i, err)
			}
			if got, _ := n.e.store.GetMeta(metaUpdatesRef); string(got) != string(ref) {
				t.Errorf("node %d reference date %q, want the poller's %q", i, got, ref)
			}
		}
		if r := nodes[2].serve(t, productAva, `{"productIds":[101]}`); r.Entry == nil || r.Hit {
			t.Errorf("after the invalidation node 2 answered %+v, want a new call", r)
		}
		if got := len(f.calls("getProductAvailability")); got != 2 {
			t.Errorf("getProductAvailability calls = %d, want 2", got)
		}
	})
}

func TestClusterPurgeReachesEveryNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     PurgeRequest
		catalog bool // the purge concerns the catalog entry, not availability
		want    int  // entries purged on the node
	}{
		{"hard tag", PurgeRequest{Tag: "product:101", Hard: true}, false, 1},
		{"hard key", PurgeRequest{Key: s360.Key("mosa", catalog, []byte(`{}`)), Hard: true}, true, 1},
		{"soft class", PurgeRequest{Class: cachestore.Catalog}, true, 2}, // getPOSConfig and getCatalogDetailed
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWatchFake()
				hub, nodes := openCluster(t, f, "a", "b", "c")
				key := catalogEverywhere(t, nodes)
				if tc.catalog {
					key = s360.Key("mosa", catalog, []byte(`{}`))
				}
				f.set(func(f *watchFake) { f.edition = "v2" })
				n, err := nodes[1].e.Purge(context.Background(), tc.req) // not the poller
				if err != nil || n != tc.want {
					t.Fatalf("Purge = %d, %v; want %d entries", n, err, tc.want)
				}
				if tc.req.Hard {
					for i, n := range nodes {
						if _, err := n.e.store.Get(key); !errors.Is(err, cachestore.ErrNotFound) {
							t.Errorf("node %d still holds the purged entry (err %v)", i, err)
						}
					}
					if hub.has(key) {
						t.Error("the purged entry is still in the shared tier")
					}
					return
				}
				// A soft purge is refreshed at once, by one call for the
				// cluster: every node ends with the new answer.
				for i, n := range nodes {
					eventually(t, fmt.Sprintf("node %d refreshed", i), func() bool {
						ent, err := n.e.store.Get(key)
						return err == nil && !slices.Contains(ent.Tags, cachestore.PurgedTag) && strings.Contains(string(ent.Body), `"v2"`)
					})
				}
				if got := len(f.calls("getCatalogDetailed")); got != 2 {
					t.Errorf("the soft purge's refresh cost %d calls, want 1", got-1)
				}
			})
		})
	}
}

func TestClusterPurgeRejectsTwoTargets(t *testing.T) {
	_, nodes := openCluster(t, newWatchFake(), "a", "b")
	if _, err := nodes[0].e.Purge(context.Background(), PurgeRequest{Tag: "product:1", Key: "k"}); !errors.Is(err, ErrPurgeRequest) {
		t.Errorf("Purge with a tag and a key: %v, want ErrPurgeRequest", err)
	}
	if n := nodes[0].shared.calls.Load(); n != 0 {
		t.Errorf("a refused purge made %d calls of the shared state", n)
	}
}

func TestClusterRedisDownServesAsASingleNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b", "c")
		hub.fail.Store(true)
		for i, n := range nodes {
			if r := n.serve(t, catalog, `{}`); r.Entry == nil || r.Hit {
				t.Fatalf("node %d miss: %+v", i, r)
			}
			if r := n.serve(t, catalog, `{}`); !r.Hit || r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
				t.Fatalf("node %d hit: %+v", i, r)
			}
			if s := n.e.Stats(); s.SharedErrors == 0 {
				t.Errorf("node %d counted no shared errors", i)
			}
		}
		if got := len(f.calls("getCatalogDetailed")); got != 3 {
			t.Errorf("getCatalogDetailed calls = %d, want one per node", got)
		}
		// Every node polls, at setup_poll × nodes.
		for _, n := range nodes {
			n.e.SetWatch(Watch{SetupPoll: time.Second})
		}
		time.Sleep(9*time.Second + time.Millisecond)
		synctest.Wait()
		for i, n := range nodes {
			if s := n.e.Stats(); s.SetupPolls != 4 {
				t.Errorf("node %d polled %d times in 9 s, want 4 (every 3 s)", i, s.SetupPolls)
			}
		}
		// A setup change is applied by every node on its own.
		f.set(func(f *watchFake) { f.setup = "changed"; f.edition = "v2" })
		eventually(t, "the new catalog on every node", func() bool {
			for _, n := range nodes {
				if r := n.serve(t, catalog, `{}`); !strings.Contains(string(r.Entry.Body), `"v2"`) {
					return false
				}
			}
			return true
		})
		// The change's generation could not be published: one WARN line.
		// (The catalog fetched before the first poll is as new as its
		// value: that poll starts none.)
		for i, n := range nodes {
			if s := n.e.Stats(); s.Generations != 1 {
				t.Errorf("node %d made %d generations, want 1 (the change's)", i, s.Generations)
			}
			if got := n.logs.FilterMessageSnippet("publishing a change").Len(); got != 1 {
				t.Errorf("node %d logged %d WARN lines for failed publishes, want 1", i, got)
			}
		}
	})
}

func TestClusterWaitForAnotherNodesCall(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int           // node a's answer from S-360
		hold     time.Duration // how long node a's call takes
		wantCall bool          // node b calls S-360 itself (else answers with a's)
	}{
		// Nothing usable comes: b calls once, as a single node would.
		{"holder fails", http.StatusServiceUnavailable, time.Second, true},
		// getCatalogDetailed takes about 20 s: b waits for a's call as a
		// coalesced request waits for its flight, whatever max_wait (3 s),
		// so that a slow miss on N nodes is still one call.
		{"holder slower than max_wait", http.StatusOK, 5 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWatchFake()
				_, nodes := openCluster(t, f, "a", "b")
				a, b := nodes[0], nodes[1]
				a.f.gate = make(chan struct{})
				a.f.set(tc.status, `{"statusCode":"success","held":true}`)
				done := make(chan Result)
				go func() { done <- a.serve(t, catalog, `{}`) }()
				synctest.Wait() // a holds the lease and waits for S-360
				go func() {
					time.Sleep(tc.hold)
					close(a.f.gate)
				}()
				start := time.Now()
				r := b.serve(t, catalog, `{}`)
				if waited := time.Since(start); waited != tc.hold {
					t.Errorf("node b answered after %s, want %s (when a's call ended)", waited, tc.hold)
				}
				want, calls := `"held":true`, 0
				if tc.wantCall {
					want, calls = `"edition":"v1"`, 1
				}
				if r.Entry == nil || !strings.Contains(string(r.Entry.Body), want) {
					t.Errorf("node b answered %+v, want a body with %s", r, want)
				}
				if got := len(f.calls("getCatalogDetailed")); got != calls {
					t.Errorf("node b called S-360 %d times, want %d", got, calls)
				}
				if s := b.e.Stats(); s.SharedWaits != 1 {
					t.Errorf("node b shared_waits = %d, want 1", s.SharedWaits)
				}
				<-done
				if got := a.f.calls.Load(); got != 1 {
					t.Errorf("node a called S-360 %d times, want 1", got)
				}
			})
		})
	}
}

func TestClusterInvalidationDuringASharedReadIsNotLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		_, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		const body = `{"productIds":[101]}`
		if r := a.serve(t, productAva, body); r.Entry == nil {
			t.Fatalf("availability on a: %+v", r)
		}
		// The invalidation reaches b while it reads the old answer from
		// the shared tier (where the poller's Invalidate has not landed).
		b.shared.onGet = sync.OnceFunc(func() {
			b.e.applyEvent(Event{Kind: EventInvalidate, Tags: []string{"product:101"}})
		})
		r := b.serve(t, productAva, body)
		if r.Entry == nil || r.Hit {
			t.Errorf("node b answered %+v, want a new call", r)
		}
		if got := len(f.calls("getProductAvailability")); got != 2 {
			t.Errorf("getProductAvailability calls = %d, want 2 (the read copy was invalidated)", got)
		}
		if r := b.serve(t, productAva, body); !r.Hit || r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
			t.Errorf("then node b answered %q, want a local hit of the new answer", r.CacheStatus)
		}
	})
}

func TestClusterRestartedNodeCatchesUpFromTheSharedTier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup) // records the setup value (a new generation: a catalog is cached)
		if err := b.e.Close(); err != nil {
			t.Fatal(err)
		}
		// The setup changes while b is down; a refreshes the catalog.
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		landed(t, a)
		eventually(t, "a refreshed", func() bool {
			r := a.serve(t, catalog, `{}`)
			return r.Hit && strings.Contains(string(r.Entry.Body), `"v2"`)
		})
		calls := len(f.calls("getCatalogDetailed"))

		b = openNodeIn(t, b.dir, hub, "b", f)
		eventually(t, "b refreshed from the shared tier", func() bool {
			ent, err := b.e.store.Get(s360.Key("mosa", catalog, []byte(`{}`)))
			return err == nil && strings.Contains(string(ent.Body), `"v2"`)
		})
		if g := b.e.Generation(); g != a.e.Generation() {
			t.Errorf("restarted node at generation %d, want the cluster's %d", g, a.e.Generation())
		}
		if r := b.serve(t, catalog, `{}`); !r.Hit || r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
			t.Errorf("restarted node answered %q, want a local hit", r.CacheStatus)
		}
		if got := len(f.calls("getCatalogDetailed")) - calls; got != 0 {
			t.Errorf("the restarted node made %d getCatalogDetailed calls, want 0", got)
		}
		setupA, _ := a.e.store.GetMeta(metaSetupLast)
		if setupB, _ := b.e.store.GetMeta(metaSetupLast); string(setupB) != string(setupA) {
			t.Errorf("restarted node's setup value %q, want the poller's %q", setupB, setupA)
		}
	})
}

// Another node may store a key and let its lease go between this node's
// read of the shared tier and its lease: the lease's holder reads again
// before calling, so the cluster still makes one call.
func TestClusterLeaseAfterAnotherNodesCallReadsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		_, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		b.shared.onGet = sync.OnceFunc(func() {
			if r := a.serve(t, catalog, `{}`); r.Entry == nil || r.Hit {
				t.Errorf("node a: %+v, want its own call", r)
			}
		})
		r := b.serve(t, catalog, `{}`)
		if r.Entry == nil || !r.Hit || !strings.Contains(r.CacheStatus, "detail=shared") {
			t.Errorf("node b answered %+v, want a's answer from the shared tier", r)
		}
		if got := len(f.calls("getCatalogDetailed")); got != 1 {
			t.Errorf("getCatalogDetailed calls = %d, want 1", got)
		}
	})
}

// Node b's availability call is out when the poller learns that the
// product changed and invalidates it in the shared tier; b's answer, which
// may tell what was true before the change, comes before b applies the
// event. The other nodes must not read it as fresh from the shared tier,
// and b keeps it stale.
func TestClusterInvalidationDuringAnotherNodesCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b", "c")
		a, b, c := nodes[0], nodes[1], nodes[2]
		catalogEverywhere(t, nodes)  // the poller knows product 101
		mustPoll(t, a.e.pollUpdates) // sets the reference date
		time.Sleep(time.Second)

		const body = `{"productId":101}`
		canon, _ := s360.Canonical([]byte(body))
		key := s360.Key("mosa", productAva, canon)
		b.f.gate = make(chan struct{})
		b.f.set(http.StatusOK, `{"statusCode":"success","seats":10}`)
		done := make(chan Result)
		go func() { done <- b.serve(t, productAva, body) }()
		synctest.Wait() // b holds the key's lease; S-360 holds its call

		hub.holdEvents("b") // b's stream reader is behind
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, a.e.pollUpdates)
		landed(t, a)
		// While the shared tier decides, b's store must not hold the
		// answer fresh: a reader there would take it for current.
		var freshMeanwhile atomic.Bool
		b.shared.onPut = func(k string) {
			if ent, err := b.e.store.Get(k); err == nil && time.Now().Before(ent.FreshUntil) && strings.Contains(string(ent.Body), `"seats":10`) {
				freshMeanwhile.Store(true)
			}
		}
		close(b.f.gate)
		if r := <-done; r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"seats":10`) {
			t.Fatalf("node b answered %+v, want S-360's answer to its call", r)
		}
		if hub.has(key) {
			t.Error("node b's answer, asked for before the invalidation, is in the shared tier")
		}
		if freshMeanwhile.Load() {
			t.Error("node b's store held its answer fresh while the shared tier refused it")
		}
		if ent, err := b.e.store.Get(key); err != nil || time.Now().Before(ent.FreshUntil) {
			t.Errorf("node b keeps its answer (err %v) fresh; want it stale", err)
		}
		calls := len(f.calls("getProductAvailability"))
		if r := c.serve(t, productAva, body); r.Entry == nil || strings.Contains(string(r.Entry.Body), `"seats":10`) {
			t.Errorf("node c answered %+v, want a new call's answer", r)
		}
		if got := len(f.calls("getProductAvailability")) - calls; got != 1 {
			t.Errorf("node c made %d getProductAvailability calls, want 1", got)
		}

		hub.releaseEvents("b")
		if ent, err := b.e.store.Get(key); err != nil || cachestore.Marked(ent.Tags) != cachestore.InvalidatedTag || time.Now().Before(ent.FreshUntil) {
			t.Errorf("node b does not keep its answer stale and invalidated after applying the invalidation (err %v)", err)
		}
	})
}

// Node b's catalog call is out when an operator purges the catalog on
// node a: b's answer, asked for before the purge, must not reach the
// shared tier (its put is refused after the purge's mark), and b keeps it
// stale and purged even before it applies the purge's event.
func TestClusterPurgeDuringAnotherNodesCatalogCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  PurgeRequest
	}{
		{"soft purge of the class", PurgeRequest{Class: cachestore.Catalog}},
		{"hard purge of the key", PurgeRequest{Key: s360.Key("mosa", catalog, []byte(`{"lang":"fr"}`)), Hard: true}},
		{"soft purge of everything", PurgeRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWatchFake()
				hub, nodes := openCluster(t, f, "a", "b", "c")
				a, b, c := nodes[0], nodes[1], nodes[2]
				const body = `{"lang":"fr"}`
				key := s360.Key("mosa", catalog, []byte(body))
				b.f.gate = make(chan struct{})
				b.f.set(http.StatusOK, `{"statusCode":"success","edition":"before"}`)
				done := make(chan Result)
				go func() { done <- b.serve(t, catalog, body) }()
				synctest.Wait() // b holds the key's lease; S-360 holds its call

				hub.holdEvents("b") // b's stream reader is behind
				if _, err := a.e.Purge(context.Background(), tc.req); err != nil {
					t.Fatal(err)
				}
				close(b.f.gate)
				if r := <-done; r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"before"`) {
					t.Fatalf("node b answered %+v, want S-360's answer to its call", r)
				}
				if hub.has(key) {
					t.Error("node b's answer, asked for before the purge, is in the shared tier")
				}
				ent, err := b.e.store.Get(key)
				if err != nil || time.Now().Before(ent.FreshUntil) || cachestore.Marked(ent.Tags) != cachestore.PurgedTag {
					t.Fatalf("node b keeps %+v (err %v); want its answer stale and purged", ent, err)
				}
				if r := c.serve(t, catalog, body); r.Entry == nil || strings.Contains(string(r.Entry.Body), `"before"`) {
					t.Errorf("node c answered %+v, want a new call's answer", r)
				}
				hub.releaseEvents("b")
			})
		})
	}
}

// The catalog has no such race: an answer carries the generation it was
// asked under, so when it comes back after a setup change, a node that
// applied the change takes it for old, whatever the shared tier holds.
func TestClusterSetupChangeDuringAnotherNodesCatalogCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b", "c")
		a, b, c := nodes[0], nodes[1], nodes[2]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup) // records the setup value

		const body = `{"lang":"fr"}`
		b.f.gate = make(chan struct{})
		b.f.set(http.StatusOK, `{"statusCode":"success","edition":"before"}`)
		done := make(chan Result)
		go func() { done <- b.serve(t, catalog, body) }()
		synctest.Wait() // b holds the key's lease; S-360 holds its call

		hub.holdEvents("b")
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		landed(t, a)
		close(b.f.gate)
		if r := <-done; r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"before"`) {
			t.Fatalf("node b answered %+v, want S-360's answer to its call", r)
		}
		b.f.answer.Store(f.serve)
		synctest.Wait()
		if r := c.serve(t, catalog, body); r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"v2"`) {
			t.Errorf("node c, at the new generation, answered %+v; want the new catalog", r)
		}
		hub.releaseEvents("b")
		eventually(t, "node b serves the new catalog", func() bool {
			r := b.serve(t, catalog, body)
			return r.Entry != nil && strings.Contains(string(r.Entry.Body), `"v2"`)
		})
	})
}

// When the lease's holder brings nothing the waiting nodes can use, they
// take the lease again rather than all call at once: one more call for
// the cluster, whose answer the others read.
func TestClusterWaitersRetakeTheLease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int // node a's answer from S-360
		newGen bool
	}{
		{"holder fails", http.StatusServiceUnavailable, false},
		{"holder's answer is of a generation the others left", http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWatchFake()
				_, nodes := openCluster(t, f, "a", "b", "c")
				a, waiters := nodes[0], nodes[1:]
				a.f.gate = make(chan struct{})
				a.f.set(tc.status, `{"statusCode":"success","held":true}`)
				done := make(chan Result)
				go func() { done <- a.serve(t, catalog, `{}`) }()
				synctest.Wait() // a holds the lease and waits for S-360
				results := make([]Result, len(waiters))
				var wg sync.WaitGroup
				for i, n := range waiters {
					wg.Go(func() { results[i] = n.serve(t, catalog, `{}`) })
				}
				synctest.Wait() // b and c wait for a's lease
				if tc.newGen {
					// The setup changed while a's call was out; b and c
					// applied it, a not yet.
					for _, n := range waiters {
						n.e.applyEvent(Event{Kind: EventGeneration, Generation: a.e.Generation() + 1, Setup: []byte(`{"changed":1}`)})
					}
				}
				close(a.f.gate)
				<-done
				wg.Wait()
				if got := len(f.calls("getCatalogDetailed")); got != 1 {
					t.Errorf("b and c made %d getCatalogDetailed calls after a's unusable answer, want 1", got)
				}
				for i, r := range results {
					if r.Entry == nil || !strings.Contains(string(r.Entry.Body), `"edition":"v1"`) {
						t.Errorf("node %d answered %+v, want the new call's answer", i+1, r)
					}
				}
				if got := a.f.calls.Load(); got != 1 {
					t.Errorf("node a called S-360 %d times, want 1", got)
				}
			})
		})
	}
}

// A node cut off from Redis starts its own generation for the setup
// change it sees. Generations are the setup value's: for the same change
// the cluster's poller reaches the same number, and the node back in the
// cluster keeps its catalog; for a later change the numbers differ, and
// the node must not take its older catalog for current: it refreshes it
// through the shared tier. (With counted generations both were gen+1, a
// collision only the setup value could tell apart.)
func TestClusterGenerationMadeAloneDoesNotCollide(t *testing.T) {
	releaseEvents := func(t *testing.T, hub *sharedHub, _ *clusterNode) { hub.releaseEvents("b") }
	syncEvent := func(t *testing.T, hub *sharedHub, b *clusterNode) {
		// b's own change, kept while it was cut off, lands (the same
		// change) or is refused (the cluster moved on) first; until then
		// a sync would not take b back.
		landed(t, b)
		hub.mu.Lock()
		ev := Event{Kind: EventSync, Generation: hub.gen, Setup: hub.setup}
		hub.mu.Unlock()
		b.e.applyEvent(ev)
	}
	for _, tc := range []struct {
		name   string
		rejoin func(t *testing.T, hub *sharedHub, b *clusterNode)
		later  bool // the setup changes again before the cluster's poller looks
	}{
		{"another change, the stream's event", releaseEvents, true},
		{"another change, the sync at rejoin", syncEvent, true},
		{"the same change", syncEvent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newWatchFake()
				hub, nodes := openCluster(t, f, "a", "b")
				a, b := nodes[0], nodes[1]
				catalogEverywhere(t, nodes)
				mustPoll(t, a.e.pollSetup) // records the setup value
				serves := func(n *clusterNode, edition string) func() bool {
					return func() bool {
						r := n.serve(t, catalog, `{}`)
						return r.Hit && r.CacheStatus == hitStatus(r.Entry, time.Now(), "") && strings.Contains(string(r.Entry.Body), edition)
					}
				}
				// A change every node applies, so that b records its value.
				f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v1b" })
				mustPoll(t, a.e.pollSetup)
				landed(t, a)
				eventually(t, "a has the new catalog", serves(a, `"v1b"`))
				eventually(t, "b has the new catalog", serves(b, `"v1b"`))
				gen := a.e.Generation()

				// b, cut off, sees the next change alone.
				b.shared.down.Store(true)
				hub.holdEvents("b")
				f.set(func(f *watchFake) { f.setup = "2025-11-13T10:00:00.000+01:00"; f.edition = "v2" })
				mustPoll(t, b.e.pollSetup)
				// A background refresh waits sharedBlip for Redis before it
				// calls alone.
				eventuallyWithin(t, sharedBlip+5*time.Second, "b refreshed alone", serves(b, `"v2"`))
				want := `"v2"`
				if tc.later {
					f.set(func(f *watchFake) { f.setup = "2025-11-14T10:00:00.000+01:00"; f.edition = "v3" })
					want = `"v3"`
				}
				mustPoll(t, a.e.pollSetup)
				landed(t, a)
				eventually(t, "a refreshed", serves(a, want))
				if ga, gb := a.e.Generation(), b.e.Generation(); ga == gen || ga != f.gen(t) || (ga == gb) == tc.later {
					t.Fatalf("generations a %d, b %d (before %d); want a at the value's %d, and b the same exactly for the same change", ga, gb, gen, f.gen(t))
				}
				calls := len(f.calls("getCatalogDetailed"))

				b.shared.down.Store(false)
				tc.rejoin(t, hub, b)
				if tc.later && serves(b, `"v2"`)() {
					t.Error("back in the cluster, b serves its older catalog as fresh")
				}
				if !tc.later {
					ent, err := b.e.store.Get(s360.Key("mosa", catalog, []byte(`{}`)))
					if err != nil || slices.Contains(ent.Tags, cachestore.PurgedTag) {
						t.Errorf("b's catalog of the same setup value was purged (err %v)", err)
					}
				}
				eventually(t, "b has the cluster's catalog", serves(b, want))
				if got := len(f.calls("getCatalogDetailed")) - calls; got != 0 {
					t.Errorf("b's rejoin cost %d getCatalogDetailed calls, want 0", got)
				}
			})
		})
	}
}
