package budget

import (
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
			warns := logs.FilterMessageSnippet("client_quota off")
			if warns.Len() != 1 || warns.All()[0].Level != zap.WarnLevel {
				t.Fatalf("want one WARN naming client_quota off, got %v", logs.All())
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
	t.Run("off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 100, Window: time.Minute, ClientQuota: -1})
			for range 50 {
				wantGranted(t, b, client("a"))
			}
			if s := b.Stats(); s.ClientQuota != 0 || s.Clients != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("default is a fifth of the limit", func(t *testing.T) {
		if s := New(Config{Calls: 150}).Stats(); s.ClientQuota != 30 || s.ClientWindow != time.Minute {
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
