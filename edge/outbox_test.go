package edge

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// servesEdition reports whether n answers the catalog with a fresh local
// hit of edition.
func servesEdition(t *testing.T, n *clusterNode, edition string) func() bool {
	return func() bool {
		r := n.serve(t, catalog, `{}`)
		return r.Hit && r.CacheStatus == hitStatus(r.Entry, time.Now(), "") && strings.Contains(string(r.Entry.Body), edition)
	}
}

// A setup change whose publish fails (Redis paused for writes as the
// poller finds it) is kept and published again until it lands: every node
// serves the new catalog once Redis takes writes again, with one call per
// key for the cluster. Before the outbox, the one failed publish lost the
// change for every other node until the poller role moved.
func TestClusterChangeLandsAfterAFailedPublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b", "c")
		a := nodes[0]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup) // records the value (a catalog is cached: a new generation)
		landed(t, a)
		for _, n := range nodes {
			eventually(t, "the first generation everywhere", servesEdition(t, n, `"v1"`))
		}
		before := len(f.calls("getCatalogDetailed"))

		hub.failPublish.Store(true)
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		eventually(t, "the poller refreshed", servesEdition(t, a, `"v2"`))
		time.Sleep(3 * time.Second) // Redis refuses writes for 3 s
		synctest.Wait()
		for i, n := range nodes[1:] {
			if !servesEdition(t, n, `"v1"`)() {
				t.Fatalf("node %d has the change before it could be published", i+1)
			}
		}

		hub.failPublish.Store(false)
		back := time.Now()
		for i, n := range nodes {
			eventually(t, fmt.Sprintf("node %d serves the new catalog", i), servesEdition(t, n, `"v2"`))
		}
		// Retries back off to a second at most.
		if d := time.Since(back); d > time.Second+100*time.Millisecond {
			t.Errorf("the change reached every node %s after Redis took writes again, want within a second", d)
		}
		hub.mu.Lock()
		gen, setup := hub.gen, string(hub.setup)
		hub.mu.Unlock()
		if gen != f.gen(t) || !strings.Contains(setup, "2025-11-12T10:00:00") {
			t.Errorf("the cluster's state is generation %d, setup %s; want the change's %d", gen, setup, f.gen(t))
		}
		if got := len(f.calls("getCatalogDetailed")) - before; got != 1 {
			t.Errorf("the change cost %d getCatalogDetailed calls for the cluster, want 1", got)
		}
		if got := a.logs.FilterMessageSnippet("trying again until it lands").Len(); got != 1 {
			t.Errorf("%d WARN lines for the failing publishes, want 1", got)
		}
	})
}

// The changes kept are published in the order they were found, and
// survive a restart of the node that found them.
func TestClusterOutboxInOrderAcrossARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup)
		mustPoll(t, a.e.pollUpdates) // sets the reference date
		landed(t, a)
		hub.mu.Lock()
		start := len(hub.published)
		hub.mu.Unlock()

		hub.failPublish.Store(true)
		time.Sleep(time.Second)
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, a.e.pollUpdates)
		f.set(func(f *watchFake) {
			f.updated = map[string]bool{}
			f.setup = "2025-11-12T10:00:00.000+01:00"
			f.edition = "v2"
		})
		mustPoll(t, a.e.pollSetup)
		eventually(t, "a refreshed", servesEdition(t, a, `"v2"`))
		time.Sleep(time.Second)
		f.set(func(f *watchFake) { f.updated["102"] = true })
		mustPoll(t, a.e.pollUpdates)
		if err := a.e.Close(); err != nil {
			t.Fatal(err)
		}

		a = openNodeIn(t, a.dir, hub, "a", f)
		hub.failPublish.Store(false)
		landed(t, a)
		hub.mu.Lock()
		var got []string
		for _, ev := range hub.published[start:] {
			got = append(got, string(ev.Kind)+":"+strings.Join(ev.Tags, ","))
		}
		hub.mu.Unlock()
		want := []string{"invalidate:", "generation:", "invalidate:"}
		if len(got) != len(want) || !strings.Contains(got[0], "product:101") || !strings.HasPrefix(got[1], "generation:") || !strings.Contains(got[2], "product:102") {
			t.Fatalf("published after the restart: %v; want %v, for products 101 then 102", got, want)
		}
		eventually(t, "b serves the new catalog", servesEdition(t, b, `"v2"`))
		ref, _ := a.e.store.GetMeta(metaUpdatesRef)
		if got, _ := b.e.store.GetMeta(metaUpdatesRef); string(got) != string(ref) {
			t.Errorf("b's reference date %q, want the poller's %q", got, ref)
		}
	})
}

// A sync carries the cluster's state, which is behind a change the poller
// found until that change lands: it must not take the poller back.
func TestClusterSyncDoesNotTakeAPendingChangeBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b")
		a := nodes[0]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup)
		landed(t, a)
		hub.failPublish.Store(true)
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		eventually(t, "a refreshed", servesEdition(t, a, `"v2"`))
		calls := len(f.calls("getCatalogDetailed"))
		for range 3 {
			hub.heartbeat()
			time.Sleep(time.Second)
			synctest.Wait()
		}
		if g := a.e.Generation(); g != f.gen(t) {
			t.Fatalf("after syncs of the cluster's older state the poller is at generation %d, want its change's %d", g, f.gen(t))
		}
		if !servesEdition(t, a, `"v2"`)() || len(f.calls("getCatalogDetailed")) != calls {
			t.Fatalf("the poller no longer serves its refreshed catalog as fresh (%d more calls)", len(f.calls("getCatalogDetailed"))-calls)
		}
	})
}

// A node that lost an event (it failed to apply it) reconciles with the
// cluster's state at the next heartbeat: generation and reference date.
func TestClusterReconcileOnHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup)
		mustPoll(t, a.e.pollUpdates)
		landed(t, a)

		hub.holdEvents("b")
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		time.Sleep(time.Second)
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, a.e.pollUpdates)
		landed(t, a)
		eventually(t, "a refreshed", servesEdition(t, a, `"v2"`))
		hub.dropEvents("b")
		calls := len(f.calls("getCatalogDetailed"))
		if servesEdition(t, b, `"v2"`)() {
			t.Fatal("b has the change it never got")
		}

		hub.heartbeat()
		eventually(t, "b serves the new catalog", servesEdition(t, b, `"v2"`))
		if got := len(f.calls("getCatalogDetailed")) - calls; got != 0 {
			t.Errorf("b's reconcile cost %d getCatalogDetailed calls, want 0 (the shared tier has it)", got)
		}
		ref, _ := a.e.store.GetMeta(metaUpdatesRef)
		if got, _ := b.e.store.GetMeta(metaUpdatesRef); string(got) != string(ref) {
			t.Errorf("b's reference date %q, want the cluster's %q", got, ref)
		}
	})
}

// A Redis restarted empty has lost the cluster's state, and with it the
// last change for a node that had not read it: the poller gives the
// cluster its state again, and that node reconciles.
func TestClusterPollerSeedsAnEmptiedCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		hub, nodes := openCluster(t, f, "a", "b")
		a, b := nodes[0], nodes[1]
		catalogEverywhere(t, nodes)
		mustPoll(t, a.e.pollSetup)
		landed(t, a)
		hub.holdEvents("b")
		f.set(func(f *watchFake) { f.setup = "2025-11-12T10:00:00.000+01:00"; f.edition = "v2" })
		mustPoll(t, a.e.pollSetup)
		landed(t, a)
		eventually(t, "a refreshed", servesEdition(t, a, `"v2"`))
		hub.dropEvents("b")
		hub.mu.Lock()
		hub.gen, hub.setup, hub.ref = 0, nil, "" // Redis restarted empty
		hub.mu.Unlock()

		hub.heartbeat() // a gives the cluster its state
		landed(t, a)
		hub.mu.Lock()
		gen := hub.gen
		hub.mu.Unlock()
		if gen != f.gen(t) {
			t.Fatalf("the emptied cluster's generation is %d, want the poller's %d", gen, f.gen(t))
		}
		hub.heartbeat()
		eventually(t, "b serves the new catalog", servesEdition(t, b, `"v2"`))
	})
}

func TestGenerationOfIsTheValues(t *testing.T) {
	a, b := []byte(`{"lastSetupUpdate":"2025-11-12T10:00:00.000+01:00"}`), []byte(`{"lastSetupUpdate":"2025-11-13T10:00:00.000+01:00"}`)
	if GenerationOf(a) != GenerationOf(slices.Clone(a)) || GenerationOf(a) == GenerationOf(b) {
		t.Fatal("GenerationOf is not a function of the value alone")
	}
	for _, v := range [][]byte{a, b, nil, []byte("x")} {
		if g := GenerationOf(v); g == 0 || g >= 1<<53 {
			t.Errorf("GenerationOf(%q) = %d, want 1..2^53-1", v, g)
		}
	}
}
