package budget

import (
	"slices"
	"time"
)

// This file exports what a budget shared between several nodes (package
// cluster) needs of this one, so that both decide with the same numbers.

// WithDefaults returns c with its zero fields set as New sets them.
func (c Config) WithDefaults() Config { return c.withDefaults() }

// Limits are an effective limit and the reserves and client quota scaled
// to it.
type Limits struct{ Calls, Order, Watch, Reserve, Quota int }

// ScaledLimits is what a budget configured with cfg (defaults applied)
// allows while its effective limit is eff.
func ScaledLimits(cfg Config, eff int) Limits {
	l := scaledLimits(cfg, eff)
	return Limits{Calls: l.calls, Order: l.order, Watch: l.watch, Reserve: l.reserve, Quota: l.quota}
}

// Allowance is how many calls of a window priority p may take.
func (l Limits) Allowance(p Priority) int {
	return limits{calls: l.Calls, order: l.Order, watch: l.Watch, reserve: l.Reserve}.allowance(p.valid())
}

// MinLimit is the lowest effective limit an institution pushback can
// bring cfg's limit to.
func MinLimit(cfg Config) int { return max(cfg.Calls/10, 1) }

// AddGrants counts n calls granted elsewhere at at (by a cluster's shared
// budget) in the window, so that this budget, when it takes over, does not
// forget them. OnGrant is not told: they are not this budget's grants.
func (b *Budget) AddGrants(at time.Time, n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(time.Now())
	i := b.head + sortedAfter(b.live(), at)
	b.log = slices.Insert(b.log, i, slices.Repeat([]time.Time{at}, n)...)
}

// sortedAfter is the index of the first time in ts after at.
func sortedAfter(ts []time.Time, at time.Time) int {
	i, _ := slices.BinarySearchFunc(ts, at, func(t, at time.Time) int {
		if t.After(at) {
			return 1
		}
		return -1
	})
	return i
}
