package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
)

// quotaNode is an edge on dir with a monthly quota, whose gate is the
// cluster's budget as node name sees it, and whose shared state is that
// node. The test's cleanup closes the edge, then the node.
func quotaNode(t *testing.T, r *redisProc, name, dir string) (*edge.Edge, *Budget) {
	t.Helper()
	c := stateNode(t, r, name, dir)
	b := NewBudget(c, budget.Config{Calls: 1000, Window: time.Minute})
	e, err := edge.Open(edge.Options{Dir: dir, Institution: "mosa", Gate: b, Shared: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.Reconfigure(edge.Settings{Institution: "mosa", Quota: 100000})
	return e, b
}

// takeSlots takes n slots of b, as n calls to S-360 would.
func takeSlots(t *testing.T, b *Budget, n int) {
	t.Helper()
	for range n {
		if err := try(b, budget.Order, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// The nodes of a cluster count the month's calls in one counter in Redis;
// while Redis is out of reach each counts its own calls, and none of them
// is lost: not when Redis comes back empty (as after a crash), nor when a
// node restarts meanwhile.
func TestQuotaCountIsSharedAndSurvivesRedisDown(t *testing.T) {
	r := startRedisB(t)
	rdb := r.client()
	defer rdb.Close()
	dirA := t.TempDir()
	a, ba := quotaNode(t, r, "a", dirA)
	b, bb := quotaNode(t, r, "b", t.TempDir())
	used := func(e *edge.Edge) int64 { return e.Quota().Used }
	key := "t:quota:" + time.Now().UTC().Format(budget.MonthLayout)
	shared := func() int64 { n, _ := rdb.Get(context.Background(), key).Int64(); return n }
	both := func(want int64) func() bool {
		return func() bool { return used(a) == want && used(b) == want && shared() == want }
	}

	takeSlots(t, ba, 3)
	takeSlots(t, bb, 2)
	waitFor(t, 5*time.Second, "both nodes and Redis to count 5 calls", both(5))
	if ttl := rdb.PTTL(context.Background(), key).Val(); ttl < 61*24*time.Hour {
		t.Fatalf("the month's count is kept %v", ttl)
	}

	r.Kill()
	takeSlots(t, ba, 4)
	takeSlots(t, bb, 1)
	waitFor(t, 5*time.Second, "each node to count its own calls", func() bool { return used(a) == 9 && used(b) == 6 })
	// Node a restarts while Redis is down: its calls not sent are in its
	// store.
	a.Close()
	r.Restart() // empty
	a, _ = quotaNode(t, r, "a2", dirA)
	waitFor(t, 10*time.Second, "the 10 calls counted again everywhere", both(10))

	takeSlots(t, bb, 1)
	waitFor(t, 5*time.Second, "one more", both(11))
	if p := a.Quota(); p.Quota != 100000 || p.Holding {
		t.Fatalf("plan %+v", p)
	}
}
