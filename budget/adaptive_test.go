package budget

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
)

// answer has n calls granted and answered by S-360.
func answer(t *testing.T, b *Budget, n int) {
	t.Helper()
	for range n {
		wantGranted(t, b, Call{Priority: Order})
		b.Success()
	}
}

// refuseInstitution makes S-360 refuse two methods in a row: the
// institution scope, which is what lowers the limit.
func refuseInstitution(b *Budget) {
	b.PushbackCall(fg(avail, "a"), 0)
	b.PushbackCall(fg(perf, "b"), 0)
}

func TestAdaptiveLimit(t *testing.T) {
	cfg := Config{Calls: 150, Window: time.Minute}
	t.Run("decrease to 0.9 of the window's calls, one INFO line", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, logs := newObserved(cfg)
			answer(t, b, 60)
			for range 20 { // in flight when S-360 begins to refuse: not counted
				wantGranted(t, b, fg(avail, "x"))
			}
			refuseInstitution(b)
			s := b.Stats()
			if s.Limit != 150 || s.EffectiveLimit != 54 || s.LastAdjustment == nil || s.LastAdjustment.From != 150 || s.LastAdjustment.To != 54 {
				t.Fatalf("stats %+v", s)
			}
			// Echoes during the pause lower nothing further.
			b.PushbackCall(fg(avail, "c"), 0)
			if s := b.Stats(); s.EffectiveLimit != 54 || s.Adjustments != 1 {
				t.Fatalf("echo lowered the limit: %+v", s)
			}
			info := logs.FilterMessage("effective upstream limit adjusted")
			if info.Len() != 1 || info.All()[0].Level != zap.InfoLevel {
				t.Fatalf("want one INFO line, got %v", logs.All())
			}
			// Reserves keep their share (the client quota too: quota_test.go).
			if s.OrderReserve != 54*7/150 {
				t.Fatalf("reserves not scaled: %+v", s)
			}
		})
	})
	t.Run("answers of calls in flight at the refusal count", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			answer(t, b, 40)
			for range 20 { // S-360 took them before it refused; their answers come after
				wantGranted(t, b, fg(avail, "x"))
			}
			refuseInstitution(b)
			if got := b.Stats().EffectiveLimit; got != 36 {
				t.Fatalf("effective %d, want 36", got)
			}
			for range 20 {
				b.SuccessCall(fg(avail, "x"))
			}
			if s := b.Stats(); s.EffectiveLimit != 54 || s.LastAdjustment.To != 54 || s.Adjustments != 1 {
				t.Fatalf("after the late answers: %+v", s)
			}
			// Once a call was granted under the learned limit, answers are
			// no longer late.
			time.Sleep(time.Minute)
			wantGranted(t, b, fg(perf, "y"))
			answer(t, b, 10)
			if got := b.Stats().EffectiveLimit; got != 55 { // the quiet window's step
				t.Fatalf("effective %d, want 55", got)
			}
		})
	})
	t.Run("the lowered limit holds in every window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			answer(t, b, 60)
			refuseInstitution(b)
			time.Sleep(time.Minute) // the pause; the old calls age out
			b.Success()
			n := 0
			for acquireNow(b, Call{Priority: Order}) == nil {
				n++
			}
			if n != 55 { // 54, plus one for the window without pushback
				t.Fatalf("%d calls granted in the window after the decrease, want 55", n)
			}
		})
	})
	t.Run("increase by one per quiet window up to the ceiling", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 20, Window: time.Minute})
			answer(t, b, 20)
			refuseInstitution(b) // 20 → 18
			if got := b.Stats().EffectiveLimit; got != 18 {
				t.Fatalf("effective %d, want 18", got)
			}
			time.Sleep(time.Minute - time.Nanosecond)
			if got := b.Stats().EffectiveLimit; got != 18 {
				t.Fatalf("raised before a full window: %d", got)
			}
			time.Sleep(time.Nanosecond)
			if got := b.Stats().EffectiveLimit; got != 19 {
				t.Fatalf("after one quiet window %d, want 19", got)
			}
			// A refusal of any scope restarts the quiet window.
			time.Sleep(30 * time.Second)
			b.PushbackCall(fg(avail, "z"), time.Second)
			time.Sleep(time.Minute - time.Nanosecond)
			if got := b.Stats().EffectiveLimit; got != 19 {
				t.Fatalf("raised within a window of a refusal: %d", got)
			}
			time.Sleep(time.Hour)
			if s := b.Stats(); s.EffectiveLimit != 20 || s.LastAdjustment.To != 20 {
				t.Fatalf("ceiling: %+v", s)
			}
		})
	})
	t.Run("never below a tenth of rate_limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			refuseInstitution(b)
			if got := b.Stats().EffectiveLimit; got != 15 {
				t.Fatalf("effective %d, want 15", got)
			}
		})
	})
	t.Run("adaptive off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 150, Window: time.Minute, FixedLimit: true})
			for range 60 {
				wantGranted(t, b, Call{Priority: Order})
			}
			refuseInstitution(b)
			b.Restore(Learned{Limit: 40})
			if s := b.Stats(); s.EffectiveLimit != 150 || s.Adaptive || s.Adjustments != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("persistence round trip", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var saved []Learned
			b := New(cfg)
			b.OnAdjust(func(l Learned) { saved = append(saved, l) })
			answer(t, b, 100)
			refuseInstitution(b)
			if len(saved) != 1 || saved[0].Limit != 90 {
				t.Fatalf("saved %+v", saved)
			}
			// A new process: it starts from what was learned and grows a
			// full window later.
			b2 := New(cfg)
			b2.Restore(saved[0])
			if got := b2.Stats().EffectiveLimit; got != 90 {
				t.Fatalf("restored %d, want 90", got)
			}
			time.Sleep(time.Minute)
			if got := b2.Stats().EffectiveLimit; got != 91 {
				t.Fatalf("after a window %d, want 91", got)
			}
			// A reload keeps the learned limit below a new ceiling.
			b2.Update(Config{Calls: 80, Window: time.Minute})
			if got := b2.Stats().EffectiveLimit; got != 80 {
				t.Fatalf("after lowering rate_limit %d, want 80", got)
			}
		})
	})
}

// fakeS360 enforces S-360's rate limits as s360sim does: fixed windows
// aligned on multiples of window, a limit per what countOf says a call
// counts against (the institution, its endpoint, ...), refused calls not
// counted, and a Retry-After of retryAfter on refusals.
type fakeS360 struct {
	window     time.Duration
	limit      int
	countOf    func(method string) string
	retryAfter time.Duration

	mu       sync.Mutex
	start    time.Time
	n        map[string]int
	refused  map[int]int            // refusals by window index
	accepted map[int]map[string]int // accepted calls by window index and method
}

func newFakeS360(window time.Duration, limit int, countOf func(string) string) *fakeS360 {
	return &fakeS360{window: window, limit: limit, countOf: countOf, n: map[string]int{},
		refused: map[int]int{}, accepted: map[int]map[string]int{}}
}

func institutionWide(string) string { return "" }

func perEndpoint(method string) string { return strings.SplitN(method, "/", 2)[0] }

// call is one call of method reaching S-360 now; false is a 509.
func (s *fakeS360) call(method string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	i := int(now.Sub(t0) / s.window)
	if start := now.Truncate(s.window); !start.Equal(s.start) {
		s.start = start
		clear(s.n)
	}
	k := s.countOf(method)
	if s.n[k] >= s.limit {
		s.refused[i]++
		return false
	}
	s.n[k]++
	if s.accepted[i] == nil {
		s.accepted[i] = map[string]int{}
	}
	s.accepted[i][method]++
	return true
}

// storm sends distinct misses through b to s for d: one every `every`,
// taking the methods in turn, each waiting for a slot at most 3 s (the
// default max_wait); a granted call reaches S-360 20 ms later.
func storm(b *Budget, s *fakeS360, methods []string, every, d time.Duration) {
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		c := fg(methods[i%len(methods)], fmt.Sprint(i))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if b.AcquireCall(ctx, c) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
			if s.call(c.Method) {
				b.SuccessCall(c)
			} else {
				b.PushbackCall(c, s.retryAfter)
			}
		})
		time.Sleep(every)
	}
	wg.Wait()
}

// checkLearned fails unless S-360 refused calls in the first window only,
// and every later window (but the last, cut short) had 80 to 100 % of the
// limit of each thing S-360 counts.
func checkLearned(t *testing.T, s *fakeS360, windows int) {
	t.Helper()
	for i, n := range s.refused {
		if i != 0 {
			t.Errorf("%d refusals in window %d; want them all in the first (refusals by window: %v)", n, i, s.refused)
		}
	}
	if s.refused[0] == 0 {
		t.Errorf("S-360 refused nothing: the test tests nothing")
	}
	for i := 1; i < windows-1; i++ {
		counted := map[string]int{}
		for m, n := range s.accepted[i] {
			counted[s.countOf(m)] += n
		}
		for k, n := range counted {
			if n < s.limit*8/10 || n > s.limit {
				t.Errorf("window %d: %d calls counted against %q, want 80 to 100 %% of %d (%v)", i, n, k, s.limit, s.accepted)
			}
		}
	}
}

// TestLearnedLimits runs the budget's defaults (150 a minute) against an
// S-360 allowing 60 calls a minute in each of the ways it may count them,
// under steady distinct misses (300 a minute offered) for five minutes.
func TestLearnedLimits(t *testing.T) {
	const (
		a = "availabilityService/getEventAvailability"
		p = "setupService/listPriceLevels" // another endpoint
	)
	t.Run("one method against the institution's limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			s := newFakeS360(time.Minute, 60, institutionWide)
			storm(b, s, []string{a}, 200*time.Millisecond, 5*time.Minute)
			checkLearned(t, s, 5)
			// The method made every call: both limits learned it.
			st := b.Stats()
			if st.Limit != 150 || st.EffectiveLimit < 54 || st.EffectiveLimit > 60 || len(st.MethodLimits) != 1 ||
				st.MethodLimits[0].Method != a || st.MethodLimits[0].Limit < 54 || st.MethodLimits[0].Limit > 60 {
				t.Errorf("stats %+v", st)
			}
			if st.Pauses != 0 || st.PausesByScope.Method != 0 {
				t.Errorf("a refusal the learned limits explain paused: %+v", st)
			}
			t.Logf("refusals by window %v, accepted %v", s.refused, s.accepted)
		})
	})
	t.Run("one method against its endpoint's limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			s := newFakeS360(time.Minute, 60, perEndpoint)
			storm(b, s, []string{a}, 200*time.Millisecond, 5*time.Minute)
			checkLearned(t, s, 5)
			if st := b.Stats(); len(st.MethodLimits) != 1 || st.MethodLimits[0].Limit > 60 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("refusals by window %v, accepted %v", s.refused, s.accepted)
		})
	})
	t.Run("two methods each limited separately", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			s := newFakeS360(time.Minute, 60, perEndpoint)
			storm(b, s, []string{a, p}, 200*time.Millisecond, 5*time.Minute)
			checkLearned(t, s, 5)
			// Refusals of two methods: the institution's limit, 0.9 × 120.
			// Neither method made most of the calls: neither has one.
			if st := b.Stats(); st.EffectiveLimit < 108 || st.EffectiveLimit > 120 || len(st.MethodLimits) != 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("refusals by window %v, accepted %v", s.refused, s.accepted)
		})
	})
	t.Run("two methods against the institution's limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			s := newFakeS360(time.Minute, 60, institutionWide)
			storm(b, s, []string{a, p}, 200*time.Millisecond, 5*time.Minute)
			checkLearned(t, s, 5)
			if st := b.Stats(); st.EffectiveLimit < 54 || st.EffectiveLimit > 60 || len(st.MethodLimits) != 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("refusals by window %v, accepted %v", s.refused, s.accepted)
		})
	})
	t.Run("Retry-After pauses, and the limits are learned too", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			s := newFakeS360(time.Minute, 60, institutionWide)
			s.retryAfter = 90 * time.Second
			storm(b, s, []string{a}, 200*time.Millisecond, 30*time.Second)
			st := b.Stats()
			if st.PausesByScope.Method != 1 || len(st.PausedMethods) != 1 || st.EffectiveLimit != 54 ||
				len(st.MethodLimits) != 1 || st.MethodLimits[0].Limit != 54 {
				t.Fatalf("stats %+v", st)
			}
			// The method waits out Retry-After, not the learned limit's
			// slot: 90 s from the refusal, in the second window.
			refusedAt := t0.Add(12 * time.Second) // the 61st call, at 5 a second
			wantPaused(t, b, fg(a, "x"), ScopeMethod, refusedAt.Add(90*time.Second+20*time.Millisecond+200*time.Millisecond).Sub(time.Now()))
			storm(b, s, []string{a}, 200*time.Millisecond, 4*time.Minute)
			if s.refused[0] == 0 || s.refused[1]+s.refused[2]+s.refused[3]+s.refused[4] != 0 {
				t.Errorf("refusals by window %v", s.refused)
			}
		})
	})
}

// refuseMethod makes S-360 refuse two keys of one method: the method's
// scope, which teaches its limit.
func refuseMethod(b *Budget, method string) {
	b.PushbackCall(fg(method, "r1"), 0)
	b.PushbackCall(fg(method, "r2"), 0)
}

func TestMethodLimit(t *testing.T) {
	cfg := Config{Calls: 100, Window: time.Minute, OrderReserve: -1, WatchReserve: -1, Reserve: -1}
	// answerMethod has n calls of method granted and answered.
	answerMethod := func(t *testing.T, b *Budget, method string, n int) {
		t.Helper()
		for i := range n {
			c := fg(method, fmt.Sprint("ok", i))
			wantGranted(t, b, c)
			b.SuccessCall(c)
		}
	}
	t.Run("learned from the method's answers, holds its calls, not the others'", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, logs := newObserved(cfg)
			answerMethod(t, b, avail, 20)
			answerMethod(t, b, perf, 20) // the method made half the calls: the institution is not taught
			refuseMethod(b, avail)
			s := b.Stats()
			if s.EffectiveLimit != 100 || len(s.MethodLimits) != 1 || s.MethodLimits[0].Method != avail ||
				s.MethodLimits[0].Limit != 18 || s.MethodLimits[0].Calls != 20 || s.MethodLimits[0].LastAdjustment.From != 100 ||
				s.PausesByScope.Method != 0 || len(s.PausedMethods) != 0 {
				t.Fatalf("stats %+v", s)
			}
			if n := logs.FilterMessage("learned upstream limit of a method adjusted").FilterField(zap.String("method", avail)).Len(); n != 1 {
				t.Fatalf("%d INFO lines, want 1: %v", n, logs.All())
			}
			// Echoes of calls in flight teach nothing more, and pause nothing.
			b.PushbackCall(fg(avail, "r3"), 0)
			if s := b.Stats(); s.MethodLimits[0].Limit != 18 || s.PausesByScope.Method != 0 {
				t.Fatalf("an echo: %+v", s)
			}
			// 20 calls of the method in the window, 18 allowed: a caller who
			// cannot wait is refused, with when the method's slot frees.
			err := acquireNow(b, fg(avail, "k"))
			var we *WaitError
			if !errors.As(err, &we) || !errors.Is(err, ErrLimited) || we.RetryIn != time.Minute || we.Scope != ScopeMethod {
				t.Fatalf("over the method's limit: %v (%+v)", err, we)
			}
			wantGranted(t, b, fg(perf, "k"))
		})
	})
	t.Run("its callers wait outside the queue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 40, Window: time.Minute, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1})
			answerMethod(t, b, perf, 20)
			time.Sleep(5 * time.Second)
			b.Restore(Learned{Methods: map[string]int{avail: 18}}) // grows a window later, at 65 s
			time.Sleep(5 * time.Second)
			answerMethod(t, b, avail, 17)
			answerMethod(t, b, perf, 3) // the window full: 40 calls
			// Queued for the window: two callers of the method, then one of
			// another.
			acquire := func(method, key string) chan error {
				done := make(chan error, 1)
				go func() { done <- b.AcquireCall(context.Background(), fg(method, key)) }()
				return done
			}
			first := acquire(avail, "y1")
			waitWaiting(t, b, 1)
			second := acquire(avail, "y2")
			waitWaiting(t, b, 2)
			other := acquire(perf, "y")
			waitWaiting(t, b, 3)
			// The first 20 age out: the window has room. The first caller
			// takes the method's last slot; the second waits for the method
			// outside the queue, and the third is served.
			time.Sleep(50 * time.Second)
			if err := recv(t, other); err != nil {
				t.Fatalf("the other method's caller: %v", err)
			}
			if err := recv(t, first); err != nil {
				t.Fatalf("the method's first caller: %v", err)
			}
			// Waiting counts it, the queue does not hold it: a newcomer of
			// another method is served at once.
			if !pending(second) || b.Stats().Waiting != 1 {
				t.Fatalf("the method's second caller, at its limit: %v %+v", pending(second), b.Stats())
			}
			wantGranted(t, b, fg(perf, "z"))
			// A newcomer of the method at its limit waits outside too.
			late := acquire(avail, "y3")
			synctest.Wait()
			if !pending(late) || b.Stats().Waiting != 2 {
				t.Fatalf("a newcomer of the method at its limit: %v %+v", pending(late), b.Stats())
			}
			time.Sleep(10 * time.Second) // the method's 17 age out
			if err := recv(t, second); err != nil {
				t.Fatalf("the method's second caller: %v", err)
			}
			if err := recv(t, late); err != nil {
				t.Fatalf("the newcomer: %v", err)
			}
			if s := b.Stats(); s.MethodLimits[0].Calls != 3 || s.Calls != 5 || s.Waiting != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("withdrawn when another method's refusal shows the institution's limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			answerMethod(t, b, avail, 30)
			answerMethod(t, b, perf, 30)
			refuseMethod(b, avail) // 27: S-360 refused two keys of one method first
			if s := b.PushbackCall(fg(perf, "r"), 0); s != ScopeInstitution {
				t.Fatalf("scope %v", s)
			}
			if s := b.Stats(); s.EffectiveLimit != 54 || len(s.MethodLimits) != 0 || s.Pauses != 0 {
				t.Fatalf("stats %+v", s)
			}
			// An echo of the method refused first teaches it nothing again.
			b.PushbackCall(fg(avail, "r3"), 0)
			if s := b.Stats(); s.EffectiveLimit != 54 || len(s.MethodLimits) != 0 {
				t.Fatalf("after an echo %+v", s)
			}
		})
	})
	t.Run("grows by one per quiet window, forgotten at Calls", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Calls: 20, Window: time.Minute})
			answerMethod(t, b, avail, 5)
			answerMethod(t, b, perf, 5)
			refuseMethod(b, avail) // 0.9 × 5, but at least 20/10
			if s := b.Stats(); len(s.MethodLimits) != 1 || s.MethodLimits[0].Limit != 4 {
				t.Fatalf("stats %+v", s)
			}
			time.Sleep(time.Minute)
			if s := b.Stats(); s.MethodLimits[0].Limit != 5 {
				t.Fatalf("after a quiet window %+v", s)
			}
			// Another method's refusal does not hold its growth back.
			b.PushbackCall(fg(perf, "z"), 0)
			time.Sleep(time.Minute)
			if s := b.Stats(); s.MethodLimits[0].Limit != 6 {
				t.Fatalf("after a second window %+v", s)
			}
			time.Sleep(time.Hour)
			if s := b.Stats(); len(s.MethodLimits) != 0 {
				t.Fatalf("not forgotten at the ceiling: %+v", s)
			}
		})
	})
	t.Run("a refusal nothing learned explains pauses", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(cfg)
			answerMethod(t, b, avail, 5)
			answerMethod(t, b, perf, 20)
			refuseMethod(b, avail) // 0.9 × 5, but at least 100/10
			time.Sleep(time.Second)
			// Calls granted under the lowered limit, and S-360 refuses
			// again having answered fewer than it: another client of the
			// institution, or a limit below the lowest one learned.
			answerMethod(t, b, avail, 3)
			if s := b.PushbackCall(fg(avail, "again"), 0); s != ScopeMethod {
				t.Fatalf("scope %v", s)
			}
			wantPaused(t, b, fg(avail, "k"), ScopeMethod, time.Minute)
			if s := b.Stats(); s.PausesByScope.Method != 1 || s.MethodLimits[0].Limit != 10 {
				t.Fatalf("stats %+v", s)
			}
		})
	})
	t.Run("persisted, restored, dropped by adaptive off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var saved []Learned
			b := New(cfg)
			b.OnAdjust(func(l Learned) { saved = append(saved, l) })
			answerMethod(t, b, avail, 50)
			refuseMethod(b, avail) // the only method: both limits
			if len(saved) != 2 || saved[1].Limit != 45 || !saved[1].At.Equal(t0) || !reflect.DeepEqual(saved[1].Methods, map[string]int{avail: 45}) {
				t.Fatalf("saved %+v, want the last with the institution's 45 and the method's", saved)
			}
			b2 := New(cfg)
			b2.Restore(saved[1])
			if s := b2.Stats(); s.EffectiveLimit != 45 || len(s.MethodLimits) != 1 || s.MethodLimits[0].Limit != 45 {
				t.Fatalf("restored %+v", s)
			}
			b2.Update(Config{Calls: 40, Window: time.Minute})
			if s := b2.Stats(); s.EffectiveLimit != 40 || len(s.MethodLimits) != 0 {
				t.Fatalf("rate_limit lowered below what was learned: %+v", s)
			}
			b3 := New(cfg)
			b3.Restore(saved[1])
			b3.Update(Config{Calls: 100, Window: time.Minute, FixedLimit: true})
			if s := b3.Stats(); s.EffectiveLimit != 100 || len(s.MethodLimits) != 0 {
				t.Fatalf("adaptive off: %+v", s)
			}
			b3.Restore(saved[1])
			if s := b3.Stats(); len(s.MethodLimits) != 0 {
				t.Fatalf("restored with adaptive off: %+v", s)
			}
		})
	})
}
