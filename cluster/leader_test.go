package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/oidcrp"
)

var (
	_ edge.Shared        = (*Cluster)(nil)
	_ oidcrp.Revocations = (*Cluster)(nil)
)

// onePoller waits until exactly one of cs polls, (true, 1), and every
// other says (false, 0); it returns the poller.
func onePoller(t *testing.T, within time.Duration, cs ...*Cluster) *Cluster {
	t.Helper()
	var leader *Cluster
	waitFor(t, within, "exactly one poller", func() bool {
		leader = nil
		for _, c := range cs {
			switch p, f := c.Poller(); {
			case p && f == 1 && leader == nil:
				leader = c
			case p || f != 0:
				return false
			}
		}
		return leader != nil
	})
	return leader
}

func TestPollingLease(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	leader := onePoller(t, 2*time.Second, a, b)
	other := b
	if leader == b {
		other = a
	}
	waitFor(t, time.Second, "both see the same leader", func() bool {
		return a.Status().Leader == leader.Node() && b.Status().Leader == leader.Node()
	})
	// The lease is held, not re-taken: it stays with the same node across
	// several renewals.
	time.Sleep(2 * leader.leaseTTL())
	if p, f := leader.Poller(); !p || f != 1 {
		t.Fatalf("after renewals the leader says (%v,%d); want (true,1)", p, f)
	}
	if p, _ := other.Poller(); p {
		t.Fatalf("both nodes poll: %s", nodeNames(a, b))
	}
	if err := other.Publish(context.Background(), edge.Event{Kind: edge.EventInvalidate, Tags: []string{"x"}}); !errors.Is(err, ErrNotPoller) {
		t.Fatalf("Publish by the non-poller: %v; want ErrNotPoller", err)
	}

	// The leader dies without giving the lease up: the other node polls
	// within 2 lease lives, and the dead one, still believing in its old
	// lease, is fenced off the stream.
	died := time.Now()
	die(leader)
	waitFor(t, 2*leader.leaseTTL(), "the survivor takes the polling over", func() bool {
		p, f := other.Poller()
		return p && f == 1
	})
	t.Logf("takeover after %v (lease %v)", time.Since(died).Round(time.Millisecond), leader.leaseTTL())
	if leader.lead.value() == "" {
		t.Fatal("test premise: the dead node should still hold its old lease value")
	}
	fenced := &Cluster{cfg: leader.cfg, rdb: r.client(), node: leader.node, log: leader.log}
	fenced.lead.set(leader.lead.value(), time.Now().Add(time.Hour))
	defer fenced.rdb.Close()
	// (Generation changes are judged by the setup value they were seen
	// from instead: TestPublishWritesTheStateWithTheEvent.)
	if err := fenced.Publish(context.Background(), edge.Event{Kind: edge.EventInvalidate, Tags: []string{"x"}, Reference: "99"}); !errors.Is(err, ErrNotPoller) {
		t.Fatalf("Publish with a lost lease: %v; want ErrNotPoller", err)
	}
	if n, _ := r.client().Exists(context.Background(), "t:events").Result(); n != 0 {
		t.Fatal("the fenced Publish wrote to the stream")
	}
	if err := other.Publish(context.Background(), edge.Event{Kind: edge.EventInvalidate, Tags: []string{"x"}}); err != nil {
		t.Fatalf("Publish by the new poller: %v", err)
	}
}

func TestCloseHandsThePollingOver(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	leader := onePoller(t, 2*time.Second, a, b)
	other := b
	if leader == b {
		other = a
	}
	closed := time.Now()
	leader.Close()
	// No waiting for the lease to expire: the next attempt (every TTL/3) wins.
	waitFor(t, leader.leaseTTL()/3+300*time.Millisecond, "the other node polls after a Close", func() bool {
		p, f := other.Poller()
		return p && f == 1
	})
	t.Logf("handover after %v", time.Since(closed).Round(time.Millisecond))
}

func TestMembership(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	c := stateNode(t, r, "c", "")
	waitFor(t, time.Second, "3 nodes seen by each", func() bool {
		return a.Status().Nodes == 3 && b.Status().Nodes == 3 && c.Status().Nodes == 3
	})
	c.Close()
	waitFor(t, time.Second, "a node that closed is no longer counted", func() bool { return a.Status().Nodes == 2 })
	die(b)
	// Unseen for 3 heartbeats (300 ms): forgotten.
	waitFor(t, 2*time.Second, "a dead node is no longer counted", func() bool { return a.Status().Nodes == 1 })
	if s := a.Status(); s.Mode != "cluster" || !s.RedisOK || s.Node != "a" || s.Leader != "a" {
		t.Fatalf("Status = %+v", s)
	}
	if ttl, err := r.client().PTTL(context.Background(), "t:nodes").Result(); err != nil || ttl <= 0 {
		t.Fatalf("the membership key has no TTL: %v %v", ttl, err)
	}
}
