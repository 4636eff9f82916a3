package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// callsFailFast checks that every call on c fails, each within bound.
func callsFailFast(t *testing.T, c *Cluster, bound time.Duration) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"GetEntry", func() error { _, err := c.GetEntry(ctx, "k"); return err }},
		{"Lease", func() error { _, _, err := c.Lease(ctx, "k", time.Second); return err }},
		{"WaitEntry", func() error { _, err := c.WaitEntry(ctx, "k"); return err }},
		{"Revoked", func() error { _, err := c.Revoked("sess"); return err }},
		{"Revoke", func() error { return c.Revoke("sess", time.Now().Add(time.Hour)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call()
			d := time.Since(start)
			if err == nil || errors.Is(err, cachestore.ErrNotFound) {
				t.Fatalf("%s with Redis out of reach: %v; want an error", tc.name, err)
			}
			if d > bound {
				t.Fatalf("%s failed after %v; want within %v", tc.name, d, bound)
			}
		})
	}
}

func TestRedisOutOfReach(t *testing.T) {
	r := startRedisB(t)
	// The production bound, 50 ms.
	a := stateNodeCfg(t, Config{URL: r.URL(), Node: "a"})
	b := stateNodeCfg(t, Config{URL: r.URL(), Node: "b"})
	events, eventsA := make(recorder, 100), make(recorder, 100)
	joinSyncsOnly(a, b)
	b.Subscribe(events.fn)
	a.Subscribe(eventsA.fn)
	for _, rec := range []recorder{eventsA, events} {
		if ev := rec.next(t); ev.Kind != edge.EventSync {
			t.Fatalf("first event %+v", ev)
		}
	}
	waitFor(t, 2*time.Second, "2 nodes and one poller", func() bool {
		pa, _ := a.Poller()
		pb, _ := b.Poller()
		return a.Status().Nodes == 2 && b.Status().Nodes == 2 && pa != pb
	})
	down := func(t *testing.T) {
		t.Helper()
		waitFor(t, 2*time.Second, "both nodes see Redis out of reach", func() bool {
			return !a.Status().RedisOK && !b.Status().RedisOK
		})
		for _, c := range []*Cluster{a, b} {
			if s := c.Status(); s.Mode != "local" || s.Nodes != 2 {
				t.Fatalf("Status while down = %+v; want mode local and the last-known 2 nodes", s)
			}
			// Each polls, at twice the interval: together, as often as one.
			if p, f := c.Poller(); !p || f != 2 {
				t.Fatalf("Poller() while down = (%v, %d); want (true, 2)", p, f)
			}
		}
	}
	back := func(t *testing.T) {
		t.Helper()
		waitFor(t, 3*time.Second, "both nodes in cluster mode again", func() bool {
			return a.Status().Mode == "cluster" && b.Status().Mode == "cluster"
		})
		onePoller(t, 3*time.Second, a, b)
		// The stream reader rejoined: an EventSync, after which b applies
		// new events again.
		for _, rec := range []recorder{eventsA, events} {
			if ev := rec.next(t); ev.Kind != edge.EventSync {
				t.Fatalf("rejoin delivered %+v; want EventSync", ev)
			}
		}
		// A Redis restarted empty lost the polling lease that a node may
		// still count on for the rest of its life: its Publish is refused
		// until it takes the lease again.
		var got recorder
		waitFor(t, 2*time.Second, "the poller publishes again", func() bool {
			from, to := a, events
			if p, f := b.Poller(); p && f == 1 {
				from, to = b, eventsA
			}
			err := from.Publish(context.Background(), tagged(42))
			if err != nil && !errors.Is(err, ErrNotPoller) {
				t.Fatalf("Publish after the rejoin: %v", err)
			}
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			}
			got = to
			return err == nil
		})
		if ev := got.next(t); ev.Reference != "42" {
			t.Fatalf("after the rejoin the other node got %+v", ev)
		}
		// b subscribed again to the releases: with polling out of the way,
		// a release wakes its waiter.
		b.pollFirst, b.pollMax = time.Minute, time.Minute
		defer func() { b.pollFirst, b.pollMax = waitPollFirst, waitPollMax }()
		i := 0
		waitFor(t, 3*time.Second, "a release wakes b's waiter", func() bool {
			i++
			key := fmt.Sprint("rejoin-", i)
			release, ok, err := a.Lease(context.Background(), key, 10*time.Second)
			if err != nil || !ok {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			w := waitAsync(b, ctx, key)
			time.Sleep(50 * time.Millisecond) // b's waiter is registered
			release.Release()
			return !errors.Is((<-w).err, context.DeadlineExceeded)
		})
	}

	t.Run("paused: calls time out at 50 ms", func(t *testing.T) {
		r.Pause()
		// Bound: 50 ms, plus scheduling slack on a loaded test machine.
		callsFailFast(t, a, 200*time.Millisecond)
		down(t)
		r.Resume()
		back(t)
	})
	t.Run("killed, then restarted", func(t *testing.T) {
		r.Kill()
		callsFailFast(t, b, 200*time.Millisecond)
		down(t)
		r.Restart()
		back(t)
	})
}

// replyErr is an error reply of the server, as go-redis returns them.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestReportTellsAnswersFromFailures(t *testing.T) {
	c := &Cluster{node: "n", log: zap.NewNop()} // no loops to race with
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"success", nil, true},
		{"no such key", redis.Nil, true},
		{"a script's refusal", replyErr("NOTPOLLER this node does not hold the polling lease"), true},
		{"wrong type", fmt.Errorf("wrapped: %w", replyErr("WRONGTYPE Operation against a key holding the wrong kind of value")), true},
		{"loading", replyErr("LOADING Redis is loading the dataset in memory"), false},
		{"busy script", replyErr("BUSY Redis is busy running a script"), false},
		{"timeout", context.DeadlineExceeded, false},
		{"refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.redisOK.Store(!tc.ok)
			c.report(tc.err)
			if got := c.redisOK.Load(); got != tc.ok {
				t.Fatalf("after %v, RedisOK = %v; want %v", tc.err, got, tc.ok)
			}
		})
	}
}
