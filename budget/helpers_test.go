package budget

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTest builds a budget on a fake clock. Unless the test sets one, it
// has no order or watch reserve and a fixed limit, so that each test
// looks at one mechanism.
func newTest(cfg Config) (*Budget, *FakeClock) {
	clk := NewFakeClock(t0)
	cfg.Clock = clk
	if cfg.OrderReserve == 0 {
		cfg.OrderReserve = -1
	}
	if cfg.WatchReserve == 0 {
		cfg.WatchReserve = -1
	}
	cfg.FixedLimit = true
	return New(cfg), clk
}

// waitFor spins until cond holds. The goroutines under test need only CPU,
// never time, so this is not a sleep; the real-time limit only turns a
// hang into a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	limit := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(limit) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func waitWaiting(t *testing.T, b *Budget, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d waiters", n), func() bool { return b.Stats().Waiting == n })
}

// acquireAsync starts Acquire and waits until it is queued (or done).
func acquireAsync(t *testing.T, ctx context.Context, b *Budget, p Priority) <-chan error {
	t.Helper()
	n := b.Stats().Waiting
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, p) }()
	waitFor(t, "Acquire to queue", func() bool { return b.Stats().Waiting == n+1 || len(done) == 1 })
	return done
}

func mustTry(t *testing.T, b *Budget, p Priority) {
	t.Helper()
	if ok, retry := b.TryAcquire(p); !ok {
		t.Fatalf("TryAcquire(%v) refused, retry in %v", p, retry)
	}
}

func mustRefuse(t *testing.T, b *Budget, p Priority, wantRetry time.Duration) {
	t.Helper()
	ok, retry := b.TryAcquire(p)
	if ok {
		t.Fatalf("TryAcquire(%v) granted, want refused", p)
	}
	if retry != wantRetry {
		t.Fatalf("TryAcquire(%v) retryIn = %v, want %v", p, retry, wantRetry)
	}
}

func pending(ch <-chan error) bool { return len(ch) == 0 }

// recv returns what ch delivers, failing instead of hanging when nothing
// comes: grants happen inside Advance, so the result is due at once.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	var v T
	waitFor(t, "a result", func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}
