package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/s360edge/s360edge/cachestore"
)

func TestLeaseOneHolder(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	ctx := context.Background()
	release, ok, err := a.Lease(ctx, "k", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("first Lease: ok=%v err=%v", ok, err)
	}
	if _, ok, err := b.Lease(ctx, "k", 10*time.Second); err != nil || ok {
		t.Fatalf("second Lease while held: ok=%v err=%v; want not ok", ok, err)
	}
	if _, ok, _ := b.Lease(ctx, "other", time.Second); !ok {
		t.Fatal("a lease on another key was refused")
	}
	release.Release()
	releaseB, ok, err := b.Lease(ctx, "k", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("Lease after release: ok=%v err=%v", ok, err)
	}
	// A holder whose lease expired and was taken over cannot release its
	// successor's.
	old, ok, _ := a.Lease(ctx, "short", 50*time.Millisecond)
	if !ok {
		t.Fatal("Lease short")
	}
	time.Sleep(100 * time.Millisecond)
	if _, ok, _ := b.Lease(ctx, "short", 10*time.Second); !ok {
		t.Fatal("an expired lease was not free")
	}
	old.Release()
	if _, ok, _ := a.Lease(ctx, "short", time.Second); ok {
		t.Fatal("a stale release freed the successor's lease")
	}
	release.Release() // twice: no effect on b's lease of k
	if _, ok, _ := a.Lease(ctx, "k", time.Second); ok {
		t.Fatal("a second call of an old release freed b's lease")
	}
	releaseB.Release()
	if _, _, err := a.Lease(ctx, "k", 0); err == nil {
		t.Fatal("Lease with ttl 0: no error")
	}
}

// waitResult is WaitEntry's outcome and when it came.
type waitResult struct {
	ent *cachestore.Entry
	err error
	at  time.Time
}

func waitAsync(c *Cluster, ctx context.Context, key string) chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		e, err := c.WaitEntry(ctx, key)
		ch <- waitResult{e, err, time.Now()}
	}()
	return ch
}

func TestWaitEntry(t *testing.T) {
	r := startRedisB(t)
	rdb := r.client()
	defer rdb.Close()
	for _, tc := range []struct {
		name string
		// poll is the waiter's polling backoff (first, ceiling): a minute
		// leaves pub/sub as the only way to wake within the test.
		poll [2]time.Duration
		ttl  time.Duration
		// end ends the holder's lease, after it stored the entry when
		// store is set.
		store  bool
		end    func(t *testing.T, release func())
		within time.Duration // from the end to the waiter's return
		want   error
	}{
		{"release wakes through pub/sub", [2]time.Duration{time.Minute, time.Minute}, 10 * time.Second, true, func(t *testing.T, release func()) { release() }, 300 * time.Millisecond, nil},
		{"lease deleted without a message: polling", [2]time.Duration{waitPollFirst, waitPollMax}, 10 * time.Second, true, func(t *testing.T, _ func()) {
			if err := rdb.Del(context.Background(), "t:l:k").Err(); err != nil {
				t.Fatal(err)
			}
		}, 500 * time.Millisecond, nil},
		{"holder died: the lease expires", [2]time.Duration{waitPollFirst, waitPollMax}, 400 * time.Millisecond, false, func(t *testing.T, _ func()) {
			time.Sleep(400 * time.Millisecond)
		}, 500 * time.Millisecond, cachestore.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := stateNode(t, r, "a", "")
			b := stateNode(t, r, "b", "")
			b.pollFirst, b.pollMax = tc.poll[0], tc.poll[1]
			ctx := context.Background()
			release, ok, err := a.Lease(ctx, "k", tc.ttl)
			if err != nil || !ok {
				t.Fatalf("Lease: %v %v", ok, err)
			}
			defer release.Release()
			defer rdb.Del(ctx, "t:e:k")
			got := waitAsync(b, ctx, "k")
			time.Sleep(300 * time.Millisecond) // the waiter is past its short polls
			select {
			case res := <-got:
				t.Fatalf("WaitEntry returned while the lease was held: %+v", res)
			default:
			}
			if tc.store {
				if err := putNow(ctx, a, "k", entry([]byte("fetched"), cachestore.Other, time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			tc.end(t, release.Release)
			ended := time.Now()
			select {
			case res := <-got:
				if !errors.Is(res.err, tc.want) || tc.want == nil && string(res.ent.Body) != "fetched" {
					t.Fatalf("WaitEntry = %+v; want error %v", res, tc.want)
				}
				if d := res.at.Sub(ended); d > tc.within {
					t.Fatalf("WaitEntry returned %v after the lease ended; want within %v", d, tc.within)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("WaitEntry did not return within 5 s of the lease's end")
			}
		})
	}

	t.Run("bounded by the caller", func(t *testing.T) {
		a := stateNode(t, r, "a", "")
		b := stateNode(t, r, "b", "")
		release, _, _ := a.Lease(context.Background(), "held", 10*time.Second)
		defer release.Release()
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := b.WaitEntry(ctx, "held"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitEntry past max_wait: %v", err)
		}
		if d := time.Since(start); d > 400*time.Millisecond {
			t.Fatalf("WaitEntry took %v with a 150 ms bound", d)
		}
		if !b.Status().RedisOK {
			t.Fatal("the caller's deadline was taken for Redis being out of reach")
		}
	})
}

func TestLeaseRaceHasOneWinner(t *testing.T) {
	r := startRedisB(t)
	nodes := []*Cluster{stateNode(t, r, "a", ""), stateNode(t, r, "b", ""), stateNode(t, r, "c", "")}
	for round := range 5 {
		key := fmt.Sprint("race-", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 30 {
			wg.Go(func() {
				_, ok, err := nodes[i%3].Lease(context.Background(), key, 10*time.Second)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("round %d: %d of 30 concurrent Leases won; want 1", round, won)
		}
	}
}

// A lease is renewed while its holder works: it outlives its ttl as long
// as it is renewed, and no other node takes it. Renewal is fenced: a
// holder whose lease expired and was taken over can neither renew nor
// release its successor's. Release wakes the waiters.
func TestLeaseRenewalFencingAndRelease(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	la, ok, err := a.Lease(ctx, "k", ttl)
	if err != nil || !ok {
		t.Fatalf("Lease: %v %v", ok, err)
	}
	// Renewed every third of its ttl for three ttls: still a's.
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 3) {
		if held, err := la.Renew(ctx); err != nil || !held {
			t.Fatalf("Renew of a held lease: %v %v", held, err)
		}
		if _, ok, _ := b.Lease(ctx, "k", ttl); ok {
			t.Fatal("another node took a lease that was being renewed")
		}
	}
	// Not renewed: it expires, b takes it, and a's handle is fenced off.
	time.Sleep(ttl + 50*time.Millisecond)
	lb, ok, err := b.Lease(ctx, "k", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("Lease after expiry: %v %v", ok, err)
	}
	if held, err := la.Renew(ctx); err != nil || held {
		t.Fatalf("Renew of a lease that expired and was taken over: held %v, %v; want false", held, err)
	}
	rdb := r.client()
	defer rdb.Close()
	if d, _ := rdb.PTTL(ctx, "t:l:k").Result(); d < 9*time.Second {
		t.Fatalf("the stale Renew changed the successor's ttl to %v", d)
	}
	la.Release()
	if n, _ := rdb.Exists(ctx, "t:l:k").Result(); n != 1 {
		t.Fatal("a stale Release freed the successor's lease")
	}
	// The successor's Release wakes a waiter on another node at once.
	got := waitAsync(a, ctx, "k")
	time.Sleep(50 * time.Millisecond)
	released := time.Now()
	lb.Release()
	select {
	case res := <-got:
		if d := res.at.Sub(released); d > 300*time.Millisecond {
			t.Errorf("the waiter woke %v after the release", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the release did not wake the waiter")
	}
	if held, _ := lb.Renew(ctx); held {
		t.Fatal("Renew after Release: held")
	}
}

// A holder whose Redis is paused past its lease's ttl finds it lost.
func TestLeaseRenewAfterAPauseLongerThanTheTTL(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	ctx := context.Background()
	la, ok, err := a.Lease(ctx, "k", 200*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("Lease: %v %v", ok, err)
	}
	r.Pause()
	if _, err := la.Renew(ctx); err == nil {
		t.Fatal("Renew with Redis frozen: no error")
	}
	time.Sleep(400 * time.Millisecond)
	r.Resume()
	waitFor(t, 3*time.Second, "Renew answers again", func() bool {
		held, err := la.Renew(ctx)
		if err == nil && held {
			t.Fatal("Renew of a lease that expired while Redis was frozen: held")
		}
		return err == nil
	})
}
