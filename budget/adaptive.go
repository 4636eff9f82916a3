package budget

import (
	"time"

	"go.uber.org/zap"
)

// Adjustment is a change of the effective limit.
type Adjustment struct {
	At     time.Time `json:"at"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// Learned is the adaptive limit's state worth keeping across restarts.
type Learned struct {
	Limit int       `json:"limit"`
	At    time.Time `json:"at"`
}

type adaptive struct {
	eff         int       // the effective limit
	lastRefusal time.Time // last pushback of any scope
	grownAt     time.Time // last change: the next increase is due a window after it or after lastRefusal
	last        Adjustment
	adjustments uint64
	onAdjust    func(Learned)
}

// OnAdjust sets fn to be told each new effective limit, to persist it. fn
// runs with the budget locked: it must not call the budget.
func (b *Budget) OnAdjust(fn func(Learned)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adaptive.onAdjust = fn
}

// Restore applies a limit learned before a restart. It stays within
// [Calls/10, Calls], and is ignored with FixedLimit. Increases resume a
// full window from now: the time the sidecar was down says nothing.
func (b *Budget) Restore(l Learned) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.FixedLimit || l.Limit <= 0 || l.Limit >= b.adaptive.eff {
		return
	}
	now := time.Now()
	b.adaptive.grownAt = now
	b.setLimitLocked(now, max(l.Limit, b.minLimit()), "restored")
}

func (b *Budget) minLimit() int { return MinLimit(b.cfg) }

// adaptLocked raises the effective limit by AdaptiveStep for each full
// window since the last change or pushback, whichever came later.
func (b *Budget) adaptLocked(now time.Time) {
	a := &b.adaptive
	if b.cfg.FixedLimit || a.eff >= b.cfg.Calls {
		return
	}
	from := a.grownAt
	if a.lastRefusal.After(from) {
		from = a.lastRefusal
	}
	n := int(now.Sub(from) / b.cfg.Window)
	if n <= 0 {
		return
	}
	a.grownAt = from.Add(time.Duration(n) * b.cfg.Window)
	b.setLimitLocked(now, min(b.cfg.Calls, a.eff+n*b.cfg.AdaptiveStep), "a window without pushback")
}

// decreaseLocked lowers the effective limit to 0.9 × accepted, the calls
// S-360 answered in the window ending at its refusal.
func (b *Budget) decreaseLocked(now time.Time, accepted int) {
	to := max(accepted*9/10, b.minLimit())
	if b.cfg.FixedLimit || to >= b.adaptive.eff {
		return
	}
	b.adaptive.grownAt = now
	b.setLimitLocked(now, to, "institution pushback")
}

func (b *Budget) setLimitLocked(now time.Time, to int, reason string) {
	a := &b.adaptive
	from := a.eff
	if to == from {
		return
	}
	a.eff = to
	b.relimitLocked()
	a.adjustments++
	a.last = Adjustment{At: now, From: from, To: to, Reason: reason}
	b.cfg.Logger.Info("effective upstream limit adjusted", zap.Int("from", from), zap.Int("to", to),
		zap.Int("configured", b.cfg.Calls), zap.Duration("window", b.cfg.Window), zap.String("reason", reason))
	if a.onAdjust != nil {
		a.onAdjust(Learned{Limit: to, At: now})
	}
}
