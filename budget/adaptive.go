package budget

import (
	"context"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/wait"
)

// Adjustment is a change of a learned limit.
type Adjustment struct {
	At     time.Time `json:"at"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// Learned is the adaptive limits' state worth keeping across restarts:
// the institution's effective limit and the limits learned for methods.
type Learned struct {
	Limit int       `json:"limit"`
	At    time.Time `json:"at"`
	// Methods holds the limits learned for methods ("service/method"),
	// those below Calls.
	Methods map[string]int `json:"methods,omitempty"`
}

// MethodLimit is the limit learned for one method, as Stats shows it.
type MethodLimit struct {
	Method         string      `json:"method"`
	Limit          int         `json:"limit"` // the method's calls allowed in any window
	Calls          int         `json:"calls"` // the method's calls granted in the window ending now
	LastAdjustment *Adjustment `json:"last_adjustment,omitempty"`
}

// Bounds on the per-method state: methods come from the allow-list, but
// an operator's allow of "service/*" lets any name of a service through.
const (
	maxMethodLimits  = 64  // learned limits; beyond, refusals of other methods pause them instead
	maxMethodsCalled = 256 // methods whose grants are counted; beyond, a new method is not counted
)

type adaptive struct {
	eff         int       // the effective limit
	lastRefusal time.Time // last pushback of any scope
	grownAt     time.Time // last change: the next increase is due a window after it or after lastRefusal
	last        Adjustment
	adjustments uint64
	onAdjust    func(Learned)
	// cut is set when a refusal lowered eff, with the grant count then
	// (Budget.granted): until another grant, a refusal is an echo of a
	// call made before the decrease.
	cut     bool
	cutAt   uint64
	cutFrom int                     // eff before that decrease
	methods map[string]*methodLimit // learned limits, by "service/method"
	calls   map[string][]time.Time  // each method's grants, oldest first, pruned to the window
	waiting int                     // callers waiting for their method's slot, outside the queue
}

// methodLimit is the limit learned for one method: it decreases like the
// institution's, to 0.9 × the method's calls S-360 answered in the window
// of a refusal, and grows by AdaptiveStep per window without a refusal of
// the method; back at Calls it is forgotten.
type methodLimit struct {
	eff       int
	grownAt   time.Time // last change
	refusedAt time.Time // last refusal of the method
	cut       bool      // lowered by a refusal, not restored ...
	since     int       // ... and the method's grants since
	cutAt     time.Time // ... when
	before    int       // ... and from what
	last      Adjustment
}

// OnAdjust sets fn to be told the learned limits after each change, to
// persist them. fn runs with the budget locked: it must not call the
// budget.
func (b *Budget) OnAdjust(fn func(Learned)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adaptive.onAdjust = fn
}

// Restore applies limits learned before a restart. They stay within
// [Calls/10, Calls], and are ignored with FixedLimit. Increases resume a
// full window from now: the time the sidecar was down says nothing.
func (b *Budget) Restore(l Learned) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.FixedLimit {
		return
	}
	now := time.Now()
	a := &b.adaptive
	for _, m := range slices.Sorted(maps.Keys(l.Methods)) {
		to := max(l.Methods[m], b.minLimit())
		ml := a.methods[m]
		if l.Methods[m] <= 0 || to >= b.cfg.Calls || (ml != nil && to >= ml.eff) {
			continue
		}
		if ml == nil {
			if len(a.methods) >= maxMethodLimits {
				continue
			}
			ml = &methodLimit{eff: b.cfg.Calls}
			if a.methods == nil {
				a.methods = make(map[string]*methodLimit)
			}
			a.methods[m] = ml
		}
		ml.grownAt = now
		ml.eff = to
	}
	if l.Limit <= 0 || l.Limit >= a.eff {
		return
	}
	a.grownAt = now
	b.setLimitLocked(now, max(l.Limit, b.minLimit()), "restored")
}

func (b *Budget) minLimit() int { return MinLimit(b.cfg) }

// grow is the additive increase of a limit eff last changed at grownAt
// and last refused at refusedAt: AdaptiveStep per full window since the
// later of the two, up to Calls. ok is false when no window has passed.
func (b *Budget) grow(now time.Time, eff int, grownAt, refusedAt time.Time) (to int, at time.Time, ok bool) {
	from := grownAt
	if refusedAt.After(from) {
		from = refusedAt
	}
	n := int(now.Sub(from) / b.cfg.Window)
	if n <= 0 {
		return eff, grownAt, false
	}
	return min(b.cfg.Calls, eff+n*b.cfg.AdaptiveStep), from.Add(time.Duration(n) * b.cfg.Window), true
}

// adaptLocked raises the learned limits by AdaptiveStep for each full
// window since their last change or refusal, whichever came later.
func (b *Budget) adaptLocked(now time.Time) {
	a := &b.adaptive
	if b.cfg.FixedLimit {
		return
	}
	if a.eff < b.cfg.Calls {
		if to, at, ok := b.grow(now, a.eff, a.grownAt, a.lastRefusal); ok {
			a.grownAt = at
			b.setLimitLocked(now, to, "a window without pushback")
		}
	}
	for m, ml := range a.methods {
		if to, at, ok := b.grow(now, ml.eff, ml.grownAt, ml.refusedAt); ok {
			ml.grownAt = at
			b.setMethodLimitLocked(now, m, ml, to, "a window without pushback of the method")
		}
	}
}

// learnLocked is what a refusal of method at scope teaches: the
// institution's limit at institution scope, the method's at method scope,
// and both when the method made most (three quarters or more) of the
// calls S-360 answered in the window, since either limit may then be the
// one S-360 enforces. It reports whether a learned limit explains the
// refusal: it lowered one, or it is the echo of a call made before the
// last decrease. Those need no pause: the lowered limit holds the calls.
func (b *Budget) learnLocked(now time.Time, method string, scope Scope) (explained bool) {
	if b.cfg.FixedLimit {
		return false
	}
	total, mine := b.acceptedLocked(now, method)
	most := method != "" && mine > 0 && 4*mine >= 3*total
	if scope == ScopeInstitution {
		b.withdrawLocked(now, method)
	}
	if scope == ScopeInstitution || most {
		explained = b.learnInstitutionLocked(now, total)
	}
	if (scope == ScopeMethod || most) && method != "" {
		explained = b.learnMethodLocked(now, method, mine) || explained
	}
	return explained
}

// learnInstitutionLocked lowers the effective limit to 0.9 × accepted,
// the calls S-360 answered in the window ending at its refusal.
func (b *Budget) learnInstitutionLocked(now time.Time, accepted int) (explained bool) {
	a := &b.adaptive
	if a.cut && b.granted <= a.cutAt {
		return true // an echo: nothing was granted since the last decrease
	}
	to := max(accepted*9/10, b.minLimit())
	if to >= a.eff {
		return false
	}
	a.grownAt = now
	a.cut, a.cutAt, a.cutFrom = true, b.granted, a.eff
	b.setLimitLocked(now, to, "institution pushback")
	return true
}

// lateAnswerLocked takes an answer to a call of method into the limits
// last lowered, when it came before any call was granted under them: the
// call was made before S-360 refused, which had counted it, so the limit
// rises to 0.9 × the calls answered (never above what it was before).
// Calls in flight when S-360 begins to refuse are answered after the
// refusal; without this, the more there are, the lower the limit learned.
func (b *Budget) lateAnswerLocked(now time.Time, method string) {
	a := &b.adaptive
	raise := func(eff *int, to int, last *Adjustment) bool {
		if to <= *eff {
			return false
		}
		*eff, last.To = to, to
		b.cfg.Logger.Debug("learned upstream limit raised by a late answer", zap.String("method", method), zap.Int("to", to))
		return true
	}
	changed := false
	if a.cut && b.granted <= a.cutAt {
		total, _ := b.acceptedLocked(now, "")
		if raise(&a.eff, min(total*9/10, a.cutFrom), &a.last) {
			b.relimitLocked()
			changed = true
		}
	}
	if ml := a.methods[method]; ml != nil && ml.cut && ml.since <= 0 {
		_, mine := b.acceptedLocked(now, method)
		changed = raise(&ml.eff, min(mine*9/10, ml.before), &ml.last) || changed
	}
	if changed {
		b.notifyLocked(now)
	}
}

// learnMethodLocked lowers method's limit to 0.9 × accepted, its calls
// S-360 answered in the window ending at its refusal.
func (b *Budget) learnMethodLocked(now time.Time, method string, accepted int) (explained bool) {
	a := &b.adaptive
	ml := a.methods[method]
	if ml != nil && ml.cut && ml.since <= 0 {
		return true // an echo
	}
	to := max(accepted*9/10, b.minLimit())
	if (ml == nil && to >= b.cfg.Calls) || (ml != nil && to >= ml.eff) {
		return false
	}
	if ml == nil {
		if len(a.methods) >= maxMethodLimits || a.calls[method] == nil && len(a.calls) >= maxMethodsCalled {
			return false // not counted: a limit could not be held
		}
		if a.methods == nil {
			a.methods = make(map[string]*methodLimit)
		}
		ml = &methodLimit{eff: b.cfg.Calls}
		a.methods[method] = ml
	}
	ml.grownAt, ml.refusedAt = now, now
	ml.cut, ml.since, ml.cutAt, ml.before = true, 0, now, ml.eff
	b.setMethodLimitLocked(now, method, ml, to, "method pushback")
	return true
}

// withdrawLocked undoes the decreases of other methods' limits than
// refused's made in the window ending now: S-360 has since refused at the
// institution's scope, which explains those refusals too. Two methods
// limited by the institution's limit would otherwise each keep about half
// of it as their own for many windows.
func (b *Budget) withdrawLocked(now time.Time, refused string) {
	for m, ml := range b.adaptive.methods {
		if m != refused && ml.cut && now.Sub(ml.cutAt) < b.cfg.Window && ml.before > ml.eff {
			ml.cut = false
			b.setMethodLimitLocked(now, m, ml, ml.before, "withdrawn: the institution's limit explains its refusals")
		}
	}
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
	b.notifyLocked(now)
}

// setMethodLimitLocked changes method's learned limit; at Calls it is
// forgotten.
func (b *Budget) setMethodLimitLocked(now time.Time, method string, ml *methodLimit, to int, reason string) {
	from := ml.eff
	if to == from {
		return
	}
	ml.eff = to
	ml.last = Adjustment{At: now, From: from, To: to, Reason: reason}
	if to >= b.cfg.Calls {
		delete(b.adaptive.methods, method)
	}
	b.cfg.Logger.Info("learned upstream limit of a method adjusted", zap.String("method", method), zap.Int("from", from),
		zap.Int("to", to), zap.Int("configured", b.cfg.Calls), zap.Duration("window", b.cfg.Window), zap.String("reason", reason))
	b.notifyLocked(now)
}

func (b *Budget) notifyLocked(now time.Time) {
	if b.adaptive.onAdjust != nil {
		b.adaptive.onAdjust(b.learnedLocked(now))
	}
}

// learnedLocked is the state Restore takes back.
func (b *Budget) learnedLocked(now time.Time) Learned {
	l := Learned{Limit: b.adaptive.eff, At: now}
	for m, ml := range b.adaptive.methods {
		if l.Methods == nil {
			l.Methods = make(map[string]int)
		}
		l.Methods[m] = ml.eff
	}
	return l
}

// updateMethodsLocked applies a reloaded config to the learned limits of
// methods: none with FixedLimit, none above Calls.
func (b *Budget) updateMethodsLocked() {
	for m, ml := range b.adaptive.methods {
		if b.cfg.FixedLimit || ml.eff >= b.cfg.Calls {
			delete(b.adaptive.methods, m)
		}
	}
}

// methodGrantedLocked counts a grant of method, made at now.
func (b *Budget) methodGrantedLocked(method string, now time.Time) {
	a := &b.adaptive
	if ml := a.methods[method]; ml != nil {
		ml.since++
	}
	if method == "" {
		return
	}
	calls, ok := a.calls[method]
	if !ok && len(a.calls) >= maxMethodsCalled {
		cut := now.Add(-b.cfg.Window)
		for m, c := range a.calls {
			if (len(c) == 0 || !c[len(c)-1].After(cut)) && a.methods[m] == nil {
				delete(a.calls, m)
			}
		}
		if len(a.calls) >= maxMethodsCalled {
			return
		}
	}
	if a.calls == nil {
		a.calls = make(map[string][]time.Time)
	}
	calls = calls[b.methodStart(calls, now):]
	a.calls[method] = append(calls, now)
}

// methodRefundedLocked takes back a grant of method made at at, whose
// call was never made.
func (b *Budget) methodRefundedLocked(method string, at time.Time) {
	a := &b.adaptive
	if ml := a.methods[method]; ml != nil && ml.since > 0 {
		ml.since--
	}
	calls := a.calls[method]
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Equal(at) {
			a.calls[method] = append(calls[:i], calls[i+1:]...)
			return
		}
	}
}

// methodStart is the index of the first of calls inside the window ending
// at now.
func (b *Budget) methodStart(calls []time.Time, now time.Time) int {
	start := now.Add(-b.cfg.Window)
	return sort.Search(len(calls), func(i int) bool { return calls[i].After(start) })
}

// methodCallsLocked counts method's grants in the window ending at now.
func (b *Budget) methodCallsLocked(method string, now time.Time) int {
	calls := b.adaptive.calls[method]
	return len(calls) - b.methodStart(calls, now)
}

// methodFullLocked reports whether method has used its learned limit in
// the window ending at now, and when it has a slot again.
func (b *Budget) methodFullLocked(method string, now time.Time) (at time.Time, full bool) {
	ml := b.adaptive.methods[method]
	if ml == nil {
		return time.Time{}, false
	}
	calls := b.adaptive.calls[method]
	i := b.methodStart(calls, now)
	excess := len(calls) - i - ml.eff // this many+1 grants must age out
	if excess < 0 {
		return time.Time{}, false
	}
	return calls[i+excess].Add(b.cfg.Window), true
}

// methodLimitsLocked lists the learned limits of methods, for Stats.
func (b *Budget) methodLimitsLocked(now time.Time) []MethodLimit {
	var out []MethodLimit
	for m, ml := range b.adaptive.methods {
		l := MethodLimit{Method: m, Limit: ml.eff, Calls: b.methodCallsLocked(m, now)}
		if !ml.last.At.IsZero() {
			last := ml.last
			l.LastAdjustment = &last
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(x, y MethodLimit) int { return strings.Compare(x.Method, y.Method) })
	return out
}

// methodWait tells AcquireCall that the call's method has used its
// learned limit until at: the caller waits for it outside the queue, so
// that it holds up no other method's callers.
type methodWait struct{ at time.Time }

func (e *methodWait) Error() string { return "waiting for a slot of the method's learned limit" }

// methodRoomLocked is nil when method is within its learned limit; else
// a *methodWait, or a refusal when its next slot comes after ctx's
// deadline.
func (b *Budget) methodRoomLocked(ctx context.Context, method string, now time.Time) error {
	at, full := b.methodFullLocked(method, now)
	if !full {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && dl.Before(at) {
		b.rejections++
		return &WaitError{Reason: ErrLimited, RetryIn: at.Sub(now), Scope: ScopeMethod}
	}
	b.waits++
	b.adaptive.waiting++
	return &methodWait{at}
}

// awaitMethodSlot waits until at, when the call's method may have a slot
// again.
func (b *Budget) awaitMethodSlot(ctx context.Context, at time.Time) error {
	var err error
	if !wait.Sleep(ctx, time.Until(at)) {
		err = &WaitError{Reason: ErrLimited, Cause: ctx.Err(), RetryIn: max(time.Until(at), 0), Scope: ScopeMethod}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adaptive.waiting--
	if err != nil {
		b.rejections++
	}
	return err
}
