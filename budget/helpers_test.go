package budget

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// t0 is the instant every synctest bubble starts at.
var t0 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// bubbleClock moves the fake time of the synctest bubble the test runs in.
type bubbleClock struct{}

func (bubbleClock) Now() time.Time { return time.Now() }

// Advance lets d pass, every timer firing at its instant, and returns once
// everything the timers woke has settled.
func (bubbleClock) Advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// newTest builds a budget for a test running in a synctest bubble. Unless
// the test sets one, it has no order or watch reserve and a fixed limit, so
// that each test looks at one mechanism.
func newTest(cfg Config) (*Budget, bubbleClock) {
	if cfg.OrderReserve == 0 {
		cfg.OrderReserve = -1
	}
	if cfg.WatchReserve == 0 {
		cfg.WatchReserve = -1
	}
	cfg.FixedLimit = true
	return New(cfg), bubbleClock{}
}

// settled waits until every goroutine of the bubble is blocked, then fails
// unless cond holds: the goroutines under test need only CPU, never time.
func settled(t *testing.T, what string, cond func() bool) {
	t.Helper()
	synctest.Wait()
	if !cond() {
		t.Fatalf("settled without %s", what)
	}
}

func waitWaiting(t *testing.T, b *Budget, n int) {
	t.Helper()
	settled(t, fmt.Sprintf("%d waiters", n), func() bool { return b.Stats().Waiting == n })
}

// acquireAsync starts Acquire and waits until it is queued (or done).
func acquireAsync(t *testing.T, ctx context.Context, b *Budget, p Priority) <-chan error {
	t.Helper()
	n := b.Stats().Waiting
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, p) }()
	settled(t, "Acquire to queue", func() bool { return b.Stats().Waiting == n+1 || len(done) == 1 })
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

// recv returns what ch delivers once the bubble has settled, failing
// instead of hanging when nothing came.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	synctest.Wait()
	select {
	case v := <-ch:
		return v
	default:
		t.Fatal("no result")
		panic("unreachable")
	}
}
