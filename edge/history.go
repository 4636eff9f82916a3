package edge

import (
	"sync"
	"time"
)

// historyMinutes is how far back the status page's chart of budget use
// reaches; the ring is this many minutes, whatever the traffic.
const historyMinutes = 60

// history counts the budget's grants per minute over the last hour.
type history struct {
	mu     sync.Mutex
	minute [historyMinutes]int64 // Unix minute each slot counts, 0 = never
	calls  [historyMinutes]int
}

// grant counts n grants (-1: one handed back) in t's minute.
func (h *history) grant(t time.Time, n int) {
	m := t.Unix() / 60
	i := m % historyMinutes
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.minute[i] != m {
		if n < 0 {
			return // a grant from a minute the ring no longer holds
		}
		h.minute[i], h.calls[i] = m, 0
	}
	h.calls[i] += n
}

// Minute is the upstream calls the budget granted in one minute.
type Minute struct {
	Start time.Time `json:"start"`
	Calls int       `json:"calls"`
}

// last returns the historyMinutes minutes ending with now's, oldest first;
// minutes without grants, or older than the ring, count 0.
func (h *history) last(now time.Time) []Minute {
	out := make([]Minute, historyMinutes)
	cur := now.Unix() / 60
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range out {
		m := cur - historyMinutes + 1 + int64(k)
		out[k].Start = time.Unix(m*60, 0).UTC()
		if i := m % historyMinutes; h.minute[i] == m {
			out[k].Calls = h.calls[i]
		}
	}
	return out
}

// keepHistory counts the gate's grants: they make the status page's
// history and the monthly quota's count.
func (e *Edge) keepHistory() {
	if g := e.opts.Gate; g != nil {
		g.OnGrant(func(at time.Time, n int) {
			e.history.grant(at, n)
			e.countGrant(at, n)
		})
	}
}

// BudgetHistory returns the calls granted per minute over the last hour,
// oldest first, the current minute last. It is kept in memory only.
func (e *Edge) BudgetHistory() []Minute { return e.history.last(e.opts.Now()) }
