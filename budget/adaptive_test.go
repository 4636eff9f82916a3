package budget

import (
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
