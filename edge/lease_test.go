package edge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
)

// holdGate makes getCatalogDetailed's budget slot wait for hold, as a
// background call waits while the window is full.
type holdGate struct {
	Gate
	hold    chan struct{}
	waiting chan struct{} // closed when a call waits
	once    sync.Once
}

func (g *holdGate) AcquireCall(ctx context.Context, c budget.Call) error {
	if c.Method == "catalogService/getCatalogDetailed" {
		g.once.Do(func() { close(g.waiting) })
		select {
		case <-g.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Gate.AcquireCall(ctx, c)
}

// hubFloors keeps the catalog's floor in the hub, as the cluster budget
// keeps it in Redis: every node sees every node's calls.
type hubFloors struct {
	Gate
	hub   *sharedHub
	floor time.Duration
}

func (g hubFloors) Floor(string) time.Duration { return g.floor }

func (g hubFloors) FloorWait(key, _ string) time.Duration {
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	if at, ok := g.hub.floors[key]; ok {
		return max(time.Until(at.Add(g.floor)), 0)
	}
	return 0
}

func (g hubFloors) MarkFetched(key, _ string) {
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	g.hub.floors[key] = time.Now()
}

// leaseCluster is two nodes with the floors in the hub; a's catalog calls
// wait in its budget until hold is closed.
func leaseCluster(t *testing.T) (*sharedHub, *clusterNode, *clusterNode, *holdGate) {
	f := newWatchFake()
	hub := newHub("a")
	hub.floors = map[string]time.Time{}
	floors := func(g Gate) Gate { return hubFloors{Gate: g, hub: hub, floor: 10 * time.Minute} }
	held := &holdGate{hold: make(chan struct{}), waiting: make(chan struct{})}
	a := openNodeWith(t, t.TempDir(), hub, "a", f, func(g Gate) Gate {
		held.Gate = floors(g)
		return held
	})
	b := openNodeWith(t, t.TempDir(), hub, "b", f, floors)
	return hub, a, b, held
}

// refreshInBackground starts a background fetch of the catalog on n, as a
// refresh-ahead does; the channel gets its outcome.
func refreshInBackground(n *clusterNode) chan *fetched {
	done := make(chan *fetched, 1)
	key := s360.Key("mosa", catalog, []byte(`{}`))
	go func() {
		f, _, _ := n.e.fetch(context.Background(), n.client, &flight{call: catalog, key: key, canonical: []byte(`{}`), p: PriorityBackground}, 0)
		done <- f
	}()
	return done
}

// A background flight that waits in the budget longer than its lease's
// ttl (and than the old ttl, timeout + 10 s) keeps the lease: it is
// renewed while it waits. Another node that misses the key meanwhile
// waits for that call and never calls itself.
func TestClusterFlightWaitingInTheBudgetKeepsItsLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, a, b, held := leaseCluster(t)
		done := refreshInBackground(a)
		<-held.waiting
		time.Sleep(80 * time.Second) // > leaseTTL, > timeout + leaseMargin
		synctest.Wait()
		key := s360.Key("mosa", catalog, []byte(`{}`))
		hub.mu.Lock()
		l := hub.leases[key]
		hub.mu.Unlock()
		if l == nil || !time.Now().Before(l.until) {
			t.Fatal("the waiting flight's lease expired")
		}
		answered := make(chan Result)
		go func() { answered <- b.serve(t, catalog, `{}`) }()
		time.Sleep(30 * time.Second) // b waits for a's call; a still waits for a slot
		synctest.Wait()
		close(held.hold)
		if f := <-done; f.entry == nil {
			t.Fatalf("a's refresh: %+v", f)
		}
		r := <-answered
		if r.Entry == nil || !strings.Contains(r.CacheStatus, "detail=shared") {
			t.Errorf("b answered %+v, want a's answer from the shared tier", r)
		}
		if na, nb := a.f.calls.Load(), b.f.calls.Load(); na != 1 || nb != 0 {
			t.Errorf("getCatalogDetailed calls: a %d, b %d; want 1 and 0", na, nb)
		}
	})
}

// A holder whose lease was lost while it waited (Redis lost it: restarted,
// or paused past its ttl) does not call when its slot comes: it reads the
// shared tier and the key's floor again. Another node called meanwhile:
// its answer is in the tier, or, when it brought nothing to store, its
// floor runs; either way the cluster made one call.
func TestClusterHolderThatLostItsLeaseRereadsTheTierAndTheFloor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bStatus int // b's answer from S-360
	}{
		{"the tier has the answer", http.StatusOK},
		{"the floor runs", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hub, a, b, held := leaseCluster(t)
				b.f.set(tc.bStatus, `{"statusCode":"success","from":"b"}`)
				done := refreshInBackground(a)
				<-held.waiting
				key := s360.Key("mosa", catalog, []byte(`{}`))
				hub.mu.Lock()
				delete(hub.leases, key) // Redis lost it
				hub.mu.Unlock()
				if r := b.serve(t, catalog, `{}`); tc.bStatus == http.StatusOK && r.Entry == nil {
					t.Fatalf("b: %+v", r)
				}
				if nb := b.f.calls.Load(); nb != 1 {
					t.Fatalf("b made %d calls, want 1 (the lease was free)", nb)
				}
				close(held.hold)
				f := <-done
				if na := a.f.calls.Load(); na != 0 {
					t.Fatalf("a called S-360 %d times after losing its lease to b's call, want 0", na)
				}
				if tc.bStatus == http.StatusOK && (f.entry == nil || !strings.Contains(string(f.entry.Body), `"from":"b"`)) {
					t.Errorf("a's refresh got %+v, want b's answer from the shared tier", f)
				}
				if fe := new(*FloorError); tc.bStatus != http.StatusOK && (f.err == nil || !asFloor(f.err, fe)) {
					t.Errorf("a's refresh got %+v, want the floor's refusal", f)
				}
			})
		})
	}
}

func asFloor(err error, fe **FloorError) bool { return errors.As(err, fe) }
