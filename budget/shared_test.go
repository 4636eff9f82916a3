package budget

import (
	"testing"
	"testing/synctest"
	"time"
)

// AddGrants counts grants made elsewhere: they hold their slots for a
// window from when they were made, and OnGrant is not told.
func TestAddGrantsHoldSlots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clock := newTest(Config{Calls: 3, Window: time.Second})
		told := 0
		b.OnGrant(func(time.Time, int) { told++ })
		if ok, _ := b.TryAcquire(Foreground); !ok {
			t.Fatal("first slot refused")
		}
		clock.Advance(500 * time.Millisecond)
		// Two made elsewhere half a second ago, before the local one's
		// neighbour: the log stays in order.
		b.AddGrants(time.Now().Add(-250*time.Millisecond), 2)
		if ok, retry := b.TryAcquire(Foreground); ok || retry != 500*time.Millisecond {
			t.Fatalf("window of 3 holding 3: granted %v, retry in %v; want refused, 500ms (the local grant ages out first)", ok, retry)
		}
		clock.Advance(500 * time.Millisecond)
		if ok, _ := b.TryAcquire(Foreground); !ok {
			t.Fatal("the oldest grant aged out, yet refused")
		}
		if ok, retry := b.TryAcquire(Foreground); ok || retry != 250*time.Millisecond {
			t.Fatalf("granted %v, retry in %v; want refused until the added grants age out (250ms)", ok, retry)
		}
		if told != 2 {
			t.Errorf("OnGrant told of %d grants, want the 2 local ones", told)
		}
		if s := b.Stats(); s.Granted != 2 || s.Calls != 3 {
			t.Errorf("stats: granted %d (want 2, this budget's), calls %d (want 3 in the window)", s.Granted, s.Calls)
		}
	})
}

// ScaledLimits is the arithmetic a Budget decides with.
func TestScaledLimitsMatchTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		eff  int
	}{
		{"defaults", Config{}, DefaultCalls},
		{"learned lower", Config{}, 60},
		{"small", Config{Calls: 5}, 2},
		{"explicit reserves", Config{Calls: 100, OrderReserve: 10, WatchReserve: 5, Reserve: 20, ClientQuota: 7}, 50},
		{"no reserves", Config{Calls: 20, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.WithDefaults()
			b := New(tc.cfg)
			b.mu.Lock()
			b.adaptive.eff = tc.eff
			b.relimitLocked()
			l := ScaledLimits(cfg, tc.eff)
			for p := Order; p < numPriorities; p++ {
				if got, want := l.Allowance(p), b.allowance(p); got != want {
					t.Errorf("%v: allowance %d, the budget's %d", p, got, want)
				}
			}
			if l.Quota != b.lim.quota || l.Calls != tc.eff {
				t.Errorf("quota %d (budget %d), calls %d (want %d)", l.Quota, b.lim.quota, l.Calls, tc.eff)
			}
			b.mu.Unlock()
		})
	}
}
