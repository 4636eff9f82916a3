package budget

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestNeverMoreThanCallsInAnyWindow drives a budget with random arrivals of
// every priority, blocking and non-blocking, cancellations, pushbacks and
// successes in a synctest bubble, records the instant of every grant, and
// checks every window-length interval of them.
func TestNeverMoreThanCallsInAnyWindow(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runProperty(t, seed, false) })
		})
	}
	// With the adaptive limit and scoped pushbacks: the limit moves, the
	// configured one still holds in every window.
	for seed := uint64(13); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed, "-adaptive"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runProperty(t, seed, true) })
		})
	}
}

func runProperty(t *testing.T, seed uint64, adaptive bool) {
	rng := rand.New(rand.NewPCG(seed, 42))
	calls := 1 + rng.IntN(8)
	const window = time.Minute
	cfg := Config{Calls: calls, Window: window, ProbeTimeout: 5 * time.Second, MaxPause: 4 * time.Minute}
	b, clk := newTest(cfg)
	if adaptive {
		calls = 10 + rng.IntN(20)
		cfg.Calls = calls
		b = New(cfg)
	}
	methods := []string{avail, perf}
	randomCall := func() Call {
		return Call{Method: methods[rng.IntN(2)], Key: fmt.Sprint(rng.IntN(3))}
	}

	var (
		mu                sync.Mutex
		grants            []time.Time
		started, finished atomic.Int64
		cancels           []context.CancelFunc
	)
	record := func() {
		mu.Lock()
		grants = append(grants, clk.Now())
		mu.Unlock()
	}
	// settle: every goroutine started has returned or is queued, and
	// every grant is recorded, so the clock may move on.
	settle := func() {
		settled(t, "goroutines to settle", func() bool {
			f := finished.Load()
			s := b.Stats()
			mu.Lock()
			n := len(grants)
			mu.Unlock()
			return f+int64(s.Waiting) == started.Load() && uint64(n) == s.Granted
		})
	}
	// In the bubble, a grant made by the budget's timer is recorded at the
	// instant it was made: time moves on only once every goroutine blocks.
	advance := func(d time.Duration) {
		clk.Advance(d)
		settle()
	}
	// Three clients (and the sidecar's own calls) share the budget fairly.
	clients := []string{"", "a", "b", "c"}
	acquire := func(ctx context.Context, p Priority) {
		started.Add(1)
		// With the adaptive limit, calls name their method: the methods'
		// learned limits hold some of them, outside the queue.
		c := Call{Priority: p, Client: clients[rng.IntN(len(clients))]}
		if adaptive {
			m := randomCall()
			c.Method, c.Key = m.Method, m.Key
		}
		go func() {
			defer finished.Add(1)
			if b.AcquireCall(ctx, c) == nil {
				record()
			}
		}()
	}

	for range 400 {
		switch r := rng.IntN(100); {
		case r < 45:
			for range 1 + rng.IntN(4) {
				p := Priority(rng.IntN(int(numPriorities)))
				switch rng.IntN(4) {
				case 0:
					if ok, _ := b.TryAcquire(p); ok {
						record()
					}
				case 1:
					acquire(context.Background(), p)
				case 2:
					ctx, cancel := context.WithCancel(context.Background())
					cancels = append(cancels, cancel)
					acquire(ctx, p)
				case 3:
					// Gives up at once when a pause outlasts it.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					cancels = append(cancels, cancel)
					acquire(ctx, p)
				}
			}
			settle()
		case r < 85:
			advance(time.Duration(rng.IntN(20_000)) * time.Millisecond)
		case r < 93:
			if len(cancels) > 0 {
				i := rng.IntN(len(cancels))
				cancels[i]()
				cancels = slices.Delete(cancels, i, i+1)
				settle()
			}
		case r < 96:
			if adaptive {
				b.PushbackCall(randomCall(), time.Duration(rng.IntN(3))*30*time.Second)
			} else {
				b.Pushback(time.Duration(rng.IntN(3)) * 30 * time.Second)
			}
			settle()
		default:
			if adaptive {
				b.SuccessCall(randomCall())
			} else {
				b.Success()
			}
			settle()
		}
	}
	for _, c := range cancels {
		c()
	}
	settle()
	for b.Stats().Waiting > 0 {
		b.Success()
		settle()
		advance(window)
	}
	settle()

	slices.SortFunc(grants, func(a, b time.Time) int { return a.Compare(b) })
	if s := b.Stats(); uint64(len(grants)) != s.Granted || len(grants) < 2*calls {
		t.Fatalf("%d grants recorded, %d counted (limit %d)", len(grants), s.Granted, calls)
	}
	for i, g := range grants {
		end := g.Add(window)
		n := 0
		for _, h := range grants[i:] {
			if !h.Before(end) {
				break
			}
			n++
		}
		if n > calls {
			t.Fatalf("%d grants in [%v, %v), limit %d", n, g.Sub(t0), end.Sub(t0), calls)
		}
	}
	t.Logf("limit %d: %d grants over %v, %+v", calls, len(grants), clk.Now().Sub(t0), b.Stats())
}
