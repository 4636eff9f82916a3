package budget

import "time"

// OnGrant sets fn to be told the time of each slot granted, for the status
// page's history. fn runs with the budget locked: it must be quick and must
// not call the budget. Slots handed back later are not untold.
func (b *Budget) OnGrant(fn func(time.Time)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onGrant = fn
}
