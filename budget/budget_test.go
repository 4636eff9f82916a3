package budget

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name               string
		in                 Config
		calls, resv, order int
	}{
		{"all defaults", Config{}, DefaultCalls, DefaultCalls / 10, DefaultCalls / 20},
		{"one call has no reserve", Config{Calls: 1}, 1, 0, 0},
		{"two calls reserve one", Config{Calls: 2}, 2, 1, 0},
		{"three calls reserve one for orders", Config{Calls: 3}, 3, 1, 1},
		{"15 calls", Config{Calls: 15}, 15, 1, 1},
		{"60 calls", Config{Calls: 60}, 60, 6, 3},
		{"reserves off", Config{Calls: 10, Reserve: -1, OrderReserve: -1}, 10, 0, 0},
		{"reserve capped, 2 for the watchers", Config{Calls: 10, Reserve: 50}, 10, 6, 1},
		{"reserve capped, watch reserve off", Config{Calls: 10, Reserve: 50, WatchReserve: -1}, 10, 8, 1},
		{"order reserve capped", Config{Calls: 10, OrderReserve: 50}, 10, 0, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.in.withDefaults()
			if c.Calls != tc.calls || c.Reserve != tc.resv || c.OrderReserve != tc.order {
				t.Errorf("%+v: calls %d reserve %d order reserve %d, want %d %d %d", tc.in, c.Calls, c.Reserve, c.OrderReserve, tc.calls, tc.resv, tc.order)
			}
		})
	}
	c := Config{}.withDefaults()
	if c.Window != time.Minute || c.FirstPause != time.Minute || c.MaxPause != 10*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
}

func TestSlidingWindowAllowsNoBurstAtTheBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 3, Window: time.Minute})
		mustTry(t, b, Foreground) // t0
		clk.Advance(10 * time.Second)
		mustTry(t, b, Foreground) // t0+10s
		clk.Advance(40 * time.Second)
		mustTry(t, b, Foreground) // t0+50s
		mustRefuse(t, b, Foreground, 10*time.Second)

		// A token bucket refilled at t0+60s would let a burst of 3 through
		// here; the log frees exactly one slot as the t0 call ages out.
		clk.Advance(10*time.Second - time.Nanosecond)
		mustRefuse(t, b, Foreground, time.Nanosecond)
		clk.Advance(time.Nanosecond)
		mustTry(t, b, Foreground)
		mustRefuse(t, b, Foreground, 10*time.Second)
		if s := b.Stats(); s.Calls != 3 || s.Remaining != 0 || s.Granted != 4 || s.Rejections != 3 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestOnlyOrdersTakeTheOrderReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 10, Window: time.Minute, Reserve: 2, OrderReserve: 2})
		for range 6 {
			mustTry(t, b, Background)
		}
		mustRefuse(t, b, Background, time.Minute)
		mustTry(t, b, Foreground)
		mustTry(t, b, Foreground)
		mustRefuse(t, b, Foreground, time.Minute)
		// A storm of buyers' misses queued for the window leaves the order
		// slots alone.
		fg := acquireAsync(t, context.Background(), b, Foreground)
		mustTry(t, b, Order)
		mustTry(t, b, Order)
		mustRefuse(t, b, Order, time.Minute)
		if !pending(fg) {
			t.Fatal("a buyer's miss took an order slot")
		}
		if s := b.Stats(); s.OrderReserve != 2 || s.Calls != 10 {
			t.Fatalf("stats %+v", s)
		}
		clk.Advance(time.Minute)
		if err := recv(t, fg); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBackgroundCannotTakeTheReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 10, Window: time.Minute, Reserve: 2})
		for range 8 {
			mustTry(t, b, Background)
		}
		mustRefuse(t, b, Background, time.Minute)

		// A queued Background waiter does not hold back higher priorities.
		bg := acquireAsync(t, context.Background(), b, Background)
		mustTry(t, b, Foreground)
		mustTry(t, b, Order)
		mustRefuse(t, b, Order, time.Minute)
		if !pending(bg) {
			t.Fatal("background waiter granted from the reserve")
		}
		if s := b.Stats(); s.Remaining != 0 || s.Reserve != 2 {
			t.Fatalf("stats %+v", s)
		}
		clk.Advance(time.Minute)
		if err := recv(t, bg); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWaitersServedByPriorityThenFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 1, Window: time.Minute}) // no reserve with one call
		mustTry(t, b, Background)

		got := make(chan string, 8)
		start := func(name string, p Priority) {
			n := b.Stats().Waiting
			go func() {
				if err := b.Acquire(context.Background(), p); err != nil {
					got <- name + ": " + err.Error()
					return
				}
				got <- name
			}()
			waitWaiting(t, b, n+1)
		}
		start("b1", Background)
		start("f1", Foreground)
		start("b2", Background)
		start("o1", Order)
		start("f2", Foreground)

		// A newcomer does not overtake queued waiters of its priority.
		mustRefuse(t, b, Foreground, time.Minute)

		for i, want := range []string{"o1", "f1", "f2", "b1", "b2"} {
			clk.Advance(time.Minute)
			if g := recv(t, got); g != want {
				t.Fatalf("grant %d went to %s, want %s", i, g, want)
			}
			if w := b.Stats().Waiting; w != 4-i {
				t.Fatalf("after grant %d: %d waiting, want %d", i, w, 4-i)
			}
		}
		if s := b.Stats(); s.Waits != 5 || s.Granted != 6 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestCancelledWaiterLeavesItsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 1, Window: time.Minute})
		mustTry(t, b, Foreground)
		ctx, cancel := context.WithCancel(context.Background())
		first := acquireAsync(t, ctx, b, Foreground)
		second := acquireAsync(t, context.Background(), b, Foreground)

		clk.Advance(20 * time.Second)
		cancel()
		err := recv(t, first)
		var we *WaitError
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrLimited) || !errors.As(err, &we) || we.RetryIn != 40*time.Second {
			t.Fatalf("cancelled waiter: %v", err)
		}
		if s := b.Stats(); s.Waiting != 1 || s.Rejections != 1 {
			t.Fatalf("stats %+v", s)
		}
		clk.Advance(40 * time.Second)
		if err := recv(t, second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAcquireGivesUpAtOnceWhenItCannotMakeItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := newTest(Config{Calls: 1, Window: time.Minute})
		mustTry(t, b, Foreground)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := b.Acquire(ctx, Foreground)
		var we *WaitError
		if !errors.As(err, &we) || !errors.Is(err, ErrLimited) || we.Cause != nil || we.RetryIn != time.Minute {
			t.Fatalf("got %v", err)
		}
		if s := b.Stats(); s.Waits != 0 || s.Rejections != 1 || s.Waiting != 0 {
			t.Fatalf("stats %+v", s)
		}

		done, dcancel := context.WithCancel(context.Background())
		dcancel()
		if err := b.Acquire(done, Order); !errors.Is(err, context.Canceled) {
			t.Fatalf("ended context: %v", err)
		}
	})
}

func TestPushbackPausesEveryoneThenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 100, Window: time.Minute, MaxPause: 5 * time.Minute})
		b.Pushback(0)
		b.Pushback(0) // echoes of calls in flight: no doubling
		b.Pushback(0)
		// Orders pass institution pauses (TestScopes covers them).
		for _, p := range []Priority{Watch, Foreground, Background} {
			mustRefuse(t, b, p, time.Minute)
		}
		s := b.Stats()
		if s.Pauses != 1 || s.Pushbacks != 3 || !s.PausedUntil.Equal(t0.Add(time.Minute)) || !s.Probing {
			t.Fatalf("stats %+v", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := b.Acquire(ctx, Watch); !errors.Is(err, ErrPaused) {
			t.Fatalf("short deadline during a pause: %v", err)
		}
		b.Success() // an answer sent before the pause: ignored
		if !b.Stats().Probing {
			t.Fatal("Success during the pause ended it")
		}

		bg := acquireAsync(t, context.Background(), b, Background)
		fg := acquireAsync(t, context.Background(), b, Foreground)
		or := acquireAsync(t, context.Background(), b, Watch)

		// Without Retry-After the pause doubles after each failed probe, up to
		// MaxPause; each time a single waiter, by priority, is the probe.
		probe := func(pause time.Duration, ch <-chan error, left int) {
			t.Helper()
			clk.Advance(pause - time.Nanosecond)
			if w := b.Stats().Waiting; w != left+1 {
				t.Fatalf("%d waiting before the pause of %v ended, want %d", w, pause, left+1)
			}
			clk.Advance(time.Nanosecond)
			if err := recv(t, ch); err != nil {
				t.Fatal(err)
			}
			if w := b.Stats().Waiting; w != left {
				t.Fatalf("%d waiting after the probe, want %d", w, left)
			}
			mustRefuse(t, b, Watch, DefaultProbeTimeout)
		}
		probe(time.Minute, or, 2)
		b.Pushback(0)
		probe(2*time.Minute, fg, 1)
		b.Pushback(0)
		probe(4*time.Minute, bg, 0)
		b.Pushback(0)
		mustRefuse(t, b, Foreground, 5*time.Minute) // capped
		clk.Advance(5 * time.Minute)
		mustTry(t, b, Foreground)
		b.Pushback(0)
		mustRefuse(t, b, Foreground, 5*time.Minute)
		clk.Advance(5 * time.Minute)
		mustTry(t, b, Background)

		// The probe succeeded: everyone may call, and the backoff starts over.
		b.Success()
		for range 10 {
			mustTry(t, b, Foreground)
		}
		s = b.Stats()
		if s.Pauses != 5 || s.Pushbacks != 7 || s.Probing || !s.PausedUntil.IsZero() {
			t.Fatalf("stats %+v", s)
		}
		b.Pushback(0)
		mustRefuse(t, b, Watch, time.Minute)
	})
}

func TestPushbackHonoursRetryAfterCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 100, Window: time.Minute, MaxPause: 5 * time.Minute})
		b.Pushback(7 * time.Second)
		mustRefuse(t, b, Foreground, 7*time.Second)
		b.Pushback(3 * time.Second) // shorter: the pause in force stands
		mustRefuse(t, b, Foreground, 7*time.Second)
		b.Pushback(20 * time.Second) // longer: extends it, still one pause
		mustRefuse(t, b, Foreground, 20*time.Second)
		if s := b.Stats(); s.Pauses != 1 || s.Pushbacks != 3 {
			t.Fatalf("stats %+v", s)
		}
		clk.Advance(20 * time.Second)
		mustTry(t, b, Foreground)
		b.Pushback(time.Hour)
		mustRefuse(t, b, Foreground, 5*time.Minute)
		clk.Advance(5 * time.Minute)
		mustTry(t, b, Foreground)
		// Retry-After pauses leave the backoff alone: the first pause without
		// one is FirstPause.
		b.Pushback(0)
		mustRefuse(t, b, Foreground, time.Minute)
	})
}

func TestUnansweredProbeIsReplacedAfterProbeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 100, Window: time.Minute, ProbeTimeout: 10 * time.Second})
		b.Pushback(0)
		clk.Advance(time.Minute)
		mustTry(t, b, Foreground) // the probe; its call fails without a status
		mustRefuse(t, b, Foreground, 10*time.Second)
		w := acquireAsync(t, context.Background(), b, Foreground)
		clk.Advance(10 * time.Second)
		if err := recv(t, w); err != nil {
			t.Fatal(err)
		}
		if !b.Stats().Probing {
			t.Fatal("second probe ended probe mode")
		}
		b.Success()
		mustTry(t, b, Foreground)
		mustTry(t, b, Foreground)
	})
}

func TestUpdateKeepsHistoryAndPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 10, Window: time.Minute})
		for range 8 {
			mustTry(t, b, Foreground)
			clk.Advance(time.Second)
		} // grants at t0 .. t0+7s, now t0+8s
		b.Update(Config{Calls: 5, Window: time.Minute, OrderReserve: -1, WatchReserve: -1})
		// 8 calls in the window, 5 allowed: 4 must age out, the 4th at t0+3s.
		mustRefuse(t, b, Foreground, 55*time.Second)
		if s := b.Stats(); s.Limit != 5 || s.Calls != 8 || s.Remaining != 0 || s.Reserve != 1 {
			t.Fatalf("stats %+v", s)
		}
		w := acquireAsync(t, context.Background(), b, Foreground)
		clk.Advance(55*time.Second - time.Nanosecond)
		if !pending(w) {
			t.Fatal("granted before enough calls aged out")
		}
		clk.Advance(time.Nanosecond)
		if err := recv(t, w); err != nil {
			t.Fatal(err)
		}

		// Raising the limit serves waiters at once; a pause survives.
		mustRefuse(t, b, Order, time.Second)
		w = acquireAsync(t, context.Background(), b, Foreground)
		b.Update(Config{Calls: 20, Window: time.Minute, FixedLimit: true})
		if err := recv(t, w); err != nil {
			t.Fatal(err)
		}
		b.Pushback(0)
		b.Update(Config{Calls: 20, Window: time.Minute, FixedLimit: true, Floors: map[string]time.Duration{"x/y": time.Second}})
		if s := b.Stats(); s.PausedUntil.IsZero() || s.Pauses != 1 {
			t.Fatalf("pause lost in Update: %+v", s)
		}
		// A longer window still sees the calls the shorter one saw.
		b, clk = newTest(Config{Calls: 2, Window: time.Minute})
		mustTry(t, b, Foreground)
		clk.Advance(30 * time.Second)
		mustTry(t, b, Foreground)
		clk.Advance(50 * time.Second)
		mustTry(t, b, Foreground) // t0+80s; t0 has aged out
		b.Update(Config{Calls: 2, Window: 10 * time.Minute})
		mustRefuse(t, b, Foreground, 9*time.Minute+10*time.Second) // until t0+30s+10m
	})
}

// TestFloorOf is how configured floors combine with the defaults.
func TestFloorOf(t *testing.T) {
	b := New(Config{Floors: map[string]time.Duration{
		"availabilityService/*":                    30 * time.Second,
		"availabilityService/getSeatsAvailability": 2 * time.Minute,
	}})
	for name, want := range map[string]time.Duration{
		"catalogService/getCatalogDetailed":            10 * time.Minute,
		"catalogService/getCatalog":                    10 * time.Minute,
		"catalogService/getPOSConfig":                  0,
		"availabilityService/getEventAvailability":     30 * time.Second, // configured wildcard
		"availabilityService/getSeatsAvailability":     2 * time.Minute,  // configured exact
		"availabilityService/getUpdatedAvailabilities": time.Minute,      // the feed's floor: a configured wildcard leaves it
		"externalOrderFacade/createOrUpdateOrder":      0,
		"nonsense": 0,
	} {
		t.Run(name, func(t *testing.T) {
			if got := b.Floor(name); got != want {
				t.Errorf("Floor(%s) = %v, want %v", name, got, want)
			}
		})
	}
	if d := DefaultFloors()["availabilityService/*"]; d != time.Minute {
		t.Errorf("default availability floor %v", d)
	}
	// A configured wildcard covers the service's exact defaults too,
	// unless an exact floor is configured beside it.
	wild := New(Config{Floors: map[string]time.Duration{"catalogService/*": 0}})
	if got := wild.Floor("catalogService/getCatalogDetailed"); got != 0 {
		t.Errorf("catalogService/* 0 left getCatalogDetailed at %v", got)
	}
	both := New(Config{Floors: map[string]time.Duration{"catalogService/*": 0, "catalogService/getCatalog": time.Hour}})
	if got := both.Floor("catalogService/getCatalog"); got != time.Hour {
		t.Errorf("exact floor beside a wildcard: %v", got)
	}
	if got := New(Config{Floors: map[string]time.Duration{"availabilityService/*": time.Hour}}).Floor("availabilityService/getUpdatedAvailabilities"); got != time.Minute {
		t.Errorf("a wildcard changed the feed's floor: %v", got)
	}
}

// TestFloors is how long a fetched key waits, as time passes and reloads
// change its floor.
func TestFloors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Floors: map[string]time.Duration{
			"availabilityService/*":                    30 * time.Second,
			"availabilityService/getSeatsAvailability": 2 * time.Minute,
		}})
		const cat = "catalogService/getCatalogDetailed"
		if w := b.FloorWait("k1", cat); w != 0 {
			t.Fatalf("unfetched key waits %v", w)
		}
		b.MarkFetched("k1", cat)
		clk.Advance(4 * time.Minute)
		b.MarkFetched("k2", cat)
		if w := b.FloorWait("k1", cat); w != 6*time.Minute {
			t.Fatalf("k1 waits %v", w)
		}
		if w := b.FloorWait("k2", cat); w != 10*time.Minute {
			t.Fatalf("k2 waits %v", w)
		}
		b.MarkFetched("feed", "availabilityService/getUpdatedAvailabilities")
		if w := b.FloorWait("feed", "availabilityService/getUpdatedAvailabilities"); w != time.Minute {
			t.Fatalf("feed waits %v", w)
		}
		clk.Advance(6 * time.Minute)
		if w := b.FloorWait("k1", cat); w != 0 {
			t.Fatalf("k1 still waits %v", w)
		}
		if w := b.FloorWait("k2", cat); w != 4*time.Minute {
			t.Fatalf("k2 waits %v", w)
		}

		// A reload that shortens the floor applies to keys already fetched.
		b.Update(Config{Floors: map[string]time.Duration{cat: time.Minute}})
		if w := b.FloorWait("k2", cat); w != 0 {
			t.Fatalf("k2 waits %v after the floor was shortened", w)
		}
	})
}

func TestFloorKeysAreForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{})
		const avail = "availabilityService/getEventAvailability"
		for i := range 10000 {
			b.MarkFetched(string(rune('a'+i%26))+time.Duration(i).String(), avail)
		}
		if n := b.Stats().FloorKeys; n != 10000 {
			t.Fatalf("%d keys remembered, want 10000", n)
		}
		clk.Advance(time.Minute)
		b.MarkFetched("last", avail)
		if n := b.Stats().FloorKeys; n != 1 {
			t.Fatalf("%d keys remembered after their floor, want 1", n)
		}
		// Between sweeps a key past its floor is dropped when looked up.
		clk.Advance(time.Minute - time.Nanosecond)
		b.MarkFetched("other", avail)
		clk.Advance(time.Minute)
		if w := b.FloorWait("other", avail); w != 0 {
			t.Fatalf("waits %v", w)
		}
		if n := b.Stats().FloorKeys; n != 1 {
			t.Fatalf("%d keys remembered, want 1", n)
		}
	})
}

func TestWaitErrorMessage(t *testing.T) {
	err := &WaitError{Reason: ErrPaused, Cause: context.DeadlineExceeded, RetryIn: 1500 * time.Millisecond}
	want := "waiting for an upstream slot: upstream asked to pause (retry in 1.5s): context deadline exceeded"
	if err.Error() != want {
		t.Fatalf("got %q", err.Error())
	}
	if !errors.Is(err, ErrPaused) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrLimited) {
		t.Fatal("wrong matches")
	}
}

func TestRealClock(t *testing.T) {
	// The one test on the wall clock: the AfterFunc path with real timers.
	b := New(Config{Calls: 2, Window: 30 * time.Millisecond})
	start := time.Now()
	for range 3 {
		if err := b.Acquire(context.Background(), Foreground); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("third call after %v, within the window", d)
	}
}

// A probe granted to a waiter whose context ended at the same moment is
// handed back: the slot and the probe role go to the next caller. The race
// cannot be provoked from outside, so the waiter is driven by hand.
func TestRefundedProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clk := newTest(Config{Calls: 10, Window: time.Minute})
		b.Pushback(0)
		clk.Advance(time.Minute)
		w := &waiter{p: Foreground, ready: make(chan struct{})}
		b.mu.Lock()
		w.elem = b.queues[Foreground].PushBack(w)
		b.waiting++
		b.dispatchLocked(clk.Now())
		b.mu.Unlock()
		if !w.granted || w.lease.IsZero() {
			t.Fatalf("waiter not granted the probe: %+v", w)
		}
		mustRefuse(t, b, Watch, DefaultProbeTimeout)
		b.mu.Lock()
		b.refundLocked(w)
		b.dispatchLocked(clk.Now())
		b.mu.Unlock()
		if s := b.Stats(); s.Calls != 0 || s.Granted != 0 {
			t.Fatalf("refund not counted: %+v", s)
		}
		mustTry(t, b, Watch)
		mustRefuse(t, b, Watch, DefaultProbeTimeout)
	})
}

// A queued order may use the order reserve but never the watch reserve:
// while it waits for the window, a watcher's poll behind it is served, and
// an order posted directly (Order) still passes both.
func TestQueuedLeavesTheWatchReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, clock := newTest(Config{Calls: 10, Window: time.Minute, OrderReserve: 1, WatchReserve: 3})
		ctx := context.Background()
		for range 7 { // the allowance of Queued: 10 - 3
			mustTry(t, b, Queued)
		}
		queued := acquireAsync(t, ctx, b, Queued)
		watch := acquireAsync(t, ctx, b, Watch)
		select {
		case err := <-watch:
			if err != nil {
				t.Fatalf("watch behind a queued order: %v", err)
			}
		default:
			t.Fatal("the watcher's poll waits behind a queued order, inside the watch reserve")
		}
		if len(queued) != 0 {
			t.Fatal("a queued order was granted a slot of the watch reserve")
		}
		mustTry(t, b, Watch)
		mustTry(t, b, Order) // the 10th: orders posted directly keep every slot
		mustRefuse(t, b, Watch, time.Minute)
		if len(queued) != 0 {
			t.Fatal("a queued order was granted beyond its allowance")
		}
		clock.Advance(time.Minute)
		if err := <-queued; err != nil {
			t.Fatalf("queued order once the window moved: %v", err)
		}
	})
}
