package budget

import "time"

// OnGrant sets fn to be told each slot granted (n = 1, at the grant) and
// each grant handed back unused (n = -1, at the time it was granted), for
// the status page's history. fn runs with the budget locked: it must be
// quick and must not call the budget.
func (b *Budget) OnGrant(fn func(at time.Time, n int)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onGrant = fn
}
