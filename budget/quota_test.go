package budget

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
)

func client(id string) Call { return Call{Priority: Foreground, Method: avail, Key: "k", Client: id} }

func wantQuota(t *testing.T, b *Budget, c Call, retry time.Duration) {
	t.Helper()
	err := acquireNow(b, c)
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrClientQuota) || we.RetryIn != retry {
		t.Fatalf("%+v: got %v, want the client quota, retry in %v", c, err, retry)
	}
}

func TestClientQuota(t *testing.T) {
	cfg := Config{Calls: 100, Window: time.Minute, ClientQuota: 3}
	t.Run("a client over its quota is refused, others and its orders are not", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, logs := newObserved(cfg)
			for range 3 {
				wantGranted(t, b, client("203.0.113.9"))
				time.Sleep(10 * time.Second)
			}
			wantQuota(t, b, client("203.0.113.9"), 30*time.Second)
			wantQuota(t, b, client("203.0.113.9"), 30*time.Second)
			wantGranted(t, b, client("198.51.100.1"))
			// The buyer's own browsing never costs them their order, nor
			// the watchers and refreshes they triggered.
			for _, p := range []Priority{Order, Watch, Background} {
				wantGranted(t, b, Call{Priority: p, Method: order, Client: "203.0.113.9"})
			}
			time.Sleep(30 * time.Second)
			wantGranted(t, b, client("203.0.113.9"))
			s := b.Stats()
			if s.ClientQuota != 3 || s.QuotaRefusals != 2 || s.Clients != 2 {
				t.Fatalf("stats %+v", s)
			}
			warns := logs.FilterMessageSnippet("client_quota")
			if warns.Len() != 1 || warns.All()[0].Level != zap.WarnLevel {
				t.Fatalf("want one WARN naming client_quota, got %v", logs.All())
			}
		})
	})
	t.Run("a refused or abandoned call does not count", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 2, Window: time.Minute, ClientQuota: 2, OrderReserve: -1, WatchReserve: -1})
			wantGranted(t, b, Call{Priority: Order})
			wantGranted(t, b, Call{Priority: Order})
			if err := acquireNow(b, client("a")); !errors.Is(err, ErrLimited) {
				t.Fatalf("full window: %v", err)
			}
			time.Sleep(time.Minute)
			wantGranted(t, b, client("a"))
			wantGranted(t, b, client("a"))
		})
	})
	t.Run("the cap is scaled to the effective limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 150, Window: time.Minute, ClientQuota: 30})
			answer(t, b, 60)
			refuseInstitution(b) // learns 54
			if s := b.Stats(); s.EffectiveLimit != 54 || s.ClientQuota != 54*30/150 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("default: no cap, fair sharing", func(t *testing.T) {
		// 150 less the order reserve (7) and the watch reserve (3).
		if s := New(Config{Calls: 150}).Stats(); s.ClientQuota != 0 || s.FairShare != 140 || s.ClientWindow != time.Minute {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("a flood of addresses stays bounded and shares one quota", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 1000, Window: time.Minute, ClientQuota: 2, MaxClients: 4})
			granted := 0
			for i := range 200 {
				if acquireNow(b, client(fmt.Sprintf("10.0.%d.%d", i/256, i%256))) == nil {
					granted++
				}
			}
			// 4 tracked clients, then one shared quota for the rest.
			if s := b.Stats(); s.Clients != 5 || granted != 4+2 {
				t.Fatalf("%d granted, stats %+v", granted, s)
			}
			// Once the tracked clients are idle for a window, newcomers
			// take their place.
			time.Sleep(time.Minute)
			wantGranted(t, b, client("192.0.2.1"))
			wantGranted(t, b, client("192.0.2.1"))
			wantQuota(t, b, client("192.0.2.1"), time.Minute)
			if s := b.Stats(); s.Clients > 5 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
}

// take asks for calls of the clients in turn, each until it is refused, and
// returns how many each was granted and why each was refused last.
func take(b *Budget, ids ...string) (map[string]int, map[string]error) {
	got, last := map[string]int{}, map[string]error{}
	for len(last) < len(ids) {
		for _, id := range ids {
			if last[id] != nil {
				continue
			}
			if err := acquireNow(b, client(id)); err != nil {
				last[id] = err
			} else {
				got[id]++
			}
		}
	}
	return got, last
}

func wantRefused(t *testing.T, what string, err, reason error) {
	t.Helper()
	if !errors.Is(err, reason) {
		t.Fatalf("%s: %v, want %v", what, err, reason)
	}
}

func TestFairShares(t *testing.T) {
	// 100 calls a minute less the order (6) and watch (4) reserves: the
	// clients share 90.
	cfg := Config{Calls: 100, Window: time.Minute, OrderReserve: 6, WatchReserve: 4, FixedLimit: true}
	t.Run("a lone client may use the whole budget but the reserves", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			got, last := take(b, "backend")
			if got["backend"] != 90 {
				t.Fatalf("granted %d, want 90", got["backend"])
			}
			// What stops it is the window, not a share: nobody else asked.
			wantRefused(t, "the 91st call", last["backend"], ErrLimited)
			wantGranted(t, b, Call{Priority: Watch, Method: avail})
			wantGranted(t, b, Call{Priority: Order, Method: order, Client: "backend"})
			if s := b.Stats(); s.QuotaRefusals != 0 || s.Clients != 1 || s.FairShare != 90 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("two competing clients each get half of what remains", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, logs := newObserved(cfg)
			for range 30 {
				wantGranted(t, b, client("a")) // alone at first
			}
			time.Sleep(time.Second)
			got, last := take(b, "a", "b")
			if got["a"]+30 != 45 || got["b"] != 45 {
				t.Fatalf("a got %d, b %d; want 45 each", got["a"]+30, got["b"])
			}
			// a was refused for its share while b still had some of its own
			// (retry: when a is back within its share, its first call of
			// 0:00 aged out), b by the full window.
			var we *WaitError
			if !errors.As(last["a"], &we) || !errors.Is(we, ErrClientQuota) || we.RetryIn != 59*time.Second {
				t.Fatalf("a: %v, want its share reached, retry in 59s", last["a"])
			}
			wantRefused(t, "b", last["b"], ErrLimited)
			if s := b.Stats(); s.FairShare != 45 || s.Clients != 2 || s.QuotaRefusals != 1 {
				t.Fatalf("stats %+v", s)
			}
			if w := logs.FilterMessageSnippet("fair share"); w.Len() != 1 || w.All()[0].Level != zap.WarnLevel {
				t.Fatalf("want one WARN about the fair share, got %v", logs.All())
			}
		})
	})
	t.Run("a client that took everything alone leaves the freed slots to a newcomer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			for range 90 { // one a second, from 0:00 to 1:29
				wantGranted(t, b, client("crawler"))
				time.Sleep(time.Second)
			}
			// At 1:30 the crawler's calls of 0:00 to 0:30 have aged out. The
			// buyer, new, may take them all: the crawler, far beyond its
			// share, is refused them.
			got, last := take(b, "buyer", "crawler")
			if got["buyer"] != 31 || got["crawler"] != 0 {
				t.Fatalf("buyer got %d, crawler %d; want 31, 0", got["buyer"], got["crawler"])
			}
			wantRefused(t, "crawler", last["crawler"], ErrClientQuota)
			wantRefused(t, "buyer", last["buyer"], ErrLimited)
		})
	})
	t.Run("a client that goes quiet gives its share back one window after its last call", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			take(b, "a", "b") // 45 each at 0:00
			time.Sleep(30 * time.Second)
			wantRefused(t, "b at 0:30, the window full", acquireNow(b, client("b")), ErrLimited)
			time.Sleep(30 * time.Second)
			// 1:00: every call aged out. b is quiet, but asked 30 s ago: its
			// share waits for it.
			got, last := take(b, "a")
			if got["a"] != 45 {
				t.Fatalf("a got %d while b is active, want its share, 45", got["a"])
			}
			wantRefused(t, "a", last["a"], ErrClientQuota)
			time.Sleep(30 * time.Second)
			// 1:30: b has not asked for a window: a may take what is left.
			if got, _ := take(b, "a"); got["a"] != 45 {
				t.Fatalf("a got %d once b was gone, want the 45 left", got["a"])
			}
			if s := b.Stats(); s.Clients != 1 || s.FairShare != 90 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("a waiting client is active: the calls of a client beyond its share are refused, queued ones too", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			take(b, "crawler")
			queued := make(chan error, 3)
			for range 3 { // alone: it waits for the window, as anyone would
				go func() { queued <- b.AcquireCall(context.Background(), client("crawler")) }()
			}
			waitWaiting(t, b, 3)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			buyer := make(chan error, 1)
			go func() { buyer <- b.AcquireCall(ctx, client("buyer")) }()
			for range 3 {
				wantRefused(t, "a queued call of the crawler", recv(t, (<-chan error)(queued)), ErrClientQuota)
			}
			waitWaiting(t, b, 1)
			wantRefused(t, "a new call of the crawler", acquireNow(b, client("crawler")), ErrClientQuota)
			// The first slot that frees is the buyer's.
			time.Sleep(time.Minute)
			if err := recv(t, (<-chan error)(buyer)); err != nil {
				t.Fatalf("buyer: %v", err)
			}
		})
	})
	t.Run("an explicit client_quota caps a client even alone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := cfg
			c.ClientQuota, c.ClientWindow = 10, 30*time.Second
			b := New(c)
			got, last := take(b, "backend")
			if got["backend"] != 10 {
				t.Fatalf("granted %d, want the cap, 10", got["backend"])
			}
			wantQuota(t, b, client("backend"), 30*time.Second)
			wantRefused(t, "the 11th call", last["backend"], ErrClientQuota)
			// The fair shares still apply under the cap.
			c.ClientQuota = 60
			b = New(c)
			if got, _ := take(b, "a", "b"); got["a"] != 45 || got["b"] != 45 {
				t.Fatalf("under a cap of 60: %v, want 45 each", got)
			}
		})
	})
	t.Run("off: first come, first served", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := cfg
			c.ClientQuota = -1
			b := New(c)
			wantGranted(t, b, client("b"))
			if got, _ := take(b, "a"); got["a"] != 89 {
				t.Fatalf("a got %d, want all that b left, 89", got["a"])
			}
			if s := b.Stats(); s.ClientQuota != 0 || s.FairShare != 0 || s.Clients != 0 || s.QuotaRefusals != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("turned off by a reload, on again", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			take(b, "a", "b")
			off := cfg
			off.ClientQuota = -1
			b.Update(off)
			if s := b.Stats(); s.Clients != 0 || s.FairShare != 0 {
				t.Fatalf("off: %+v", s)
			}
			b.Update(cfg)
			time.Sleep(time.Minute)
			if got, _ := take(b, "a"); got["a"] != 90 {
				t.Fatalf("on again, alone: %d, want 90", got["a"])
			}
		})
	})
}
