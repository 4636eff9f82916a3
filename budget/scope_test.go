package budget

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	avail = "availabilityService/getEventAvailability"
	perf  = "availabilityService/getPerformanceAvailability"
	order = "externalOrderFacade/createOrUpdateOrder"
)

func fg(method, key string) Call { return Call{Priority: Foreground, Method: method, Key: key} }

// acquireNow asks for a slot with no patience: it is granted or refused.
func acquireNow(b *Budget, c Call) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	return b.AcquireCall(ctx, c)
}

func wantGranted(t *testing.T, b *Budget, c Call) {
	t.Helper()
	if err := acquireNow(b, c); err != nil {
		t.Fatalf("%+v refused: %v", c, err)
	}
}

func wantPaused(t *testing.T, b *Budget, c Call, scope Scope, retry time.Duration) {
	t.Helper()
	err := acquireNow(b, c)
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrPaused) || we.Scope != scope || we.RetryIn != retry {
		t.Fatalf("%+v: got %v (%+v), want paused at %v scope for %v", c, err, we, scope, retry)
	}
}

func newObserved(cfg Config) (*Budget, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg.Logger = zap.New(core)
	return New(cfg), logs
}

// With adaptive off, nothing is learned: every refusal pauses its scope.
// (TestLearnedLimits has what a refusal teaches otherwise.)
func TestPauseScopes(t *testing.T) {
	cfg := Config{Calls: 100, Window: time.Minute, MaxPause: 10 * time.Minute, FixedLimit: true}
	t.Run("a refused key pauses that key only", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, logs := newObserved(cfg)
			if s := b.PushbackCall(fg(avail, "k1"), 0); s != ScopeKey {
				t.Fatalf("scope %v, want key", s)
			}
			wantPaused(t, b, fg(avail, "k1"), ScopeKey, time.Minute)
			wantGranted(t, b, fg(avail, "k2"))
			wantGranted(t, b, fg(perf, "k3"))
			time.Sleep(time.Minute)
			wantGranted(t, b, fg(avail, "k1"))
			if s := b.Stats(); s.PausesByScope != (ScopeCounts{Key: 1}) || s.Pauses != 0 {
				t.Fatalf("stats %+v", s)
			}
			if n := logs.FilterMessageSnippet("pausing").FilterField(zap.String("scope", "key")).Len(); n != 1 {
				t.Fatalf("%d WARN lines for the key pause, want 1: %v", n, logs.All())
			}
		})
	})
	t.Run("two refused keys pause the method, Retry-After honoured", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			b.PushbackCall(fg(avail, "k1"), 0)
			time.Sleep(10 * time.Second)
			if s := b.PushbackCall(fg(avail, "k2"), 30*time.Second); s != ScopeMethod {
				t.Fatalf("scope %v, want method", s)
			}
			wantPaused(t, b, fg(avail, "k9"), ScopeMethod, 30*time.Second)
			wantGranted(t, b, fg(perf, "k3"))
			wantGranted(t, b, Call{Priority: Order, Method: order})
			s := b.Stats()
			if len(s.PausedMethods) != 1 || s.PausedMethods[0] != avail || !s.PausedUntil.IsZero() {
				t.Fatalf("stats %+v", s)
			}
			time.Sleep(30 * time.Second)
			wantGranted(t, b, fg(avail, "k9"))
		})
	})
	t.Run("refusals of two methods pause the institution but not orders", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			b.PushbackCall(fg(avail, "k1"), 0)
			if s := b.PushbackCall(fg(perf, "k2"), 0); s != ScopeInstitution {
				t.Fatalf("scope %v, want institution", s)
			}
			wantPaused(t, b, fg("catalogService/getCatalogDetailed", "c"), ScopeInstitution, time.Minute)
			wantPaused(t, b, Call{Priority: Watch, Method: "catalogService/getLastSetupUpdate"}, ScopeInstitution, time.Minute)
			wantGranted(t, b, Call{Priority: Order, Method: order})
			if s := b.Stats(); s.Pauses != 1 || s.PausesByScope != (ScopeCounts{Key: 1, Institution: 1}) {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("a refusal when the window is nearly full pauses the institution", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			for range 95 { // within 100/20 of the limit
				wantGranted(t, b, Call{Priority: Order, Method: order})
			}
			if s := b.PushbackCall(fg(avail, "k1"), 0); s != ScopeInstitution {
				t.Fatalf("scope %v, want institution", s)
			}
		})
	})
	t.Run("refusals a window apart stay at key scope", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			b.PushbackCall(fg(avail, "k1"), time.Second)
			time.Sleep(time.Minute)
			if s := b.PushbackCall(fg(perf, "k2"), time.Second); s != ScopeKey {
				t.Fatalf("scope %v, want key", s)
			}
		})
	})
	t.Run("a refused order pauses nothing, a second one its method only", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			o := Call{Priority: Order, Method: order}
			if s := b.PushbackCall(o, 0); s != ScopeCall {
				t.Fatalf("scope %v, want call", s)
			}
			wantGranted(t, b, o)
			if s := b.PushbackCall(o, 0); s != ScopeMethod {
				t.Fatalf("scope %v, want method", s)
			}
			wantPaused(t, b, o, ScopeMethod, time.Minute)
			wantGranted(t, b, fg(avail, "k1"))
		})
	})
	t.Run("echoes of a paused key do not escalate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			b.PushbackCall(fg(avail, "k1"), 0)
			if s := b.PushbackCall(fg(avail, "k1"), 0); s != ScopeKey {
				t.Fatalf("scope %v, want key", s)
			}
			wantGranted(t, b, fg(avail, "k2"))
			if s := b.Stats(); s.PausesByScope.Key != 1 || s.Pushbacks != 2 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
}

// A caller of a paused method is refused at once, while callers of other
// methods queued behind a full window keep their place and are served.
func TestPausedMethodDoesNotHoldOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Calls: 10, Window: time.Minute, OrderReserve: -1, WatchReserve: -1, Reserve: -1, FixedLimit: true})
		b.PushbackCall(fg(avail, "k1"), 0)
		b.PushbackCall(fg(avail, "k2"), 0)
		for range 10 {
			wantGranted(t, b, fg(perf, "x"))
		}
		done := make(chan error, 1)
		go func() { done <- b.AcquireCall(context.Background(), fg(perf, "y")) }()
		synctest.Wait()
		start := time.Now()
		wantPaused(t, b, fg(avail, "k3"), ScopeMethod, time.Minute)
		if err := <-done; err != nil || time.Since(start) != time.Minute {
			t.Fatalf("queued caller of another method: %v after %v", err, time.Since(start))
		}
	})
}

func TestWatchReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Calls: 20, Window: time.Minute, OrderReserve: 1, WatchReserve: 2, Reserve: 3})
		// Background stops at 20-1-2-3, buyers' misses at 20-1-2.
		for range 14 {
			wantGranted(t, b, Call{Priority: Background})
		}
		if err := acquireNow(b, Call{Priority: Background}); !errors.Is(err, ErrLimited) {
			t.Fatalf("background beyond its allowance: %v", err)
		}
		for range 3 {
			wantGranted(t, b, fg(avail, "k"))
		}
		if err := acquireNow(b, fg(avail, "k")); !errors.Is(err, ErrLimited) {
			t.Fatalf("a miss took the watch reserve: %v", err)
		}
		wantGranted(t, b, Call{Priority: Watch})
		wantGranted(t, b, Call{Priority: Watch})
		if err := acquireNow(b, Call{Priority: Watch}); !errors.Is(err, ErrLimited) {
			t.Fatalf("a poll took the order reserve: %v", err)
		}
		wantGranted(t, b, Call{Priority: Order})
		if s := b.Stats(); s.WatchReserve != 2 || s.Calls != 20 {
			t.Fatalf("stats %+v", s)
		}
	})
}
