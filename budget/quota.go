package budget

import (
	"time"

	"go.uber.org/zap"
)

// overflowClient is the one quota shared by clients that arrive while
// MaxClients others are being tracked: a flood of addresses costs no
// memory, and cannot multiply its quota.
const overflowClient = "\x00overflow"

type quota struct {
	clients   map[string][]time.Time // calls each client caused in the quota window, oldest first
	nextSweep time.Time
	warned    bool
	refusals  uint64
}

// quotaClientLocked is who c counts against, or "" when c is outside the
// quota: orders, the watchers and background work are.
func (b *Budget) quotaClientLocked(c Call, p Priority, now time.Time) string {
	if p != Foreground || c.Client == "" || b.lim.quota <= 0 {
		return ""
	}
	q := &b.quota
	if _, ok := q.clients[c.Client]; ok {
		return c.Client
	}
	if q.clients == nil {
		q.clients = make(map[string][]time.Time)
	}
	if len(q.clients) >= b.cfg.MaxClients && !now.Before(q.nextSweep) {
		// Sweeping is linear in the table: at most ten times a window.
		q.nextSweep = now.Add(b.cfg.ClientWindow / 10)
		cut := now.Add(-b.cfg.ClientWindow)
		for id, calls := range q.clients {
			if len(calls) == 0 || !calls[len(calls)-1].After(cut) {
				delete(q.clients, id)
			}
		}
	}
	if len(q.clients) >= b.cfg.MaxClients {
		return overflowClient
	}
	return c.Client
}

// reserveQuotaLocked counts a call against client's quota, or says when
// the client may call again.
func (b *Budget) reserveQuotaLocked(client string, now time.Time) (time.Duration, bool) {
	q := &b.quota
	calls := q.clients[client]
	cut := now.Add(-b.cfg.ClientWindow)
	i := 0
	for i < len(calls) && !calls[i].After(cut) {
		i++
	}
	calls = append(calls[:0], calls[i:]...)
	if len(calls) >= b.lim.quota {
		q.clients[client] = calls
		if !q.warned {
			q.warned = true
			b.cfg.Logger.Warn("a client reached its quota of upstream calls; it gets stale answers or 429 until calls age out. "+
				"If the website's own backend is the only caller, set client_quota off",
				zap.Int("quota", b.lim.quota), zap.Duration("window", b.cfg.ClientWindow))
		}
		return calls[len(calls)-b.lim.quota].Add(b.cfg.ClientWindow).Sub(now), false
	}
	q.clients[client] = append(calls, now)
	return 0, true
}

// unreserveQuotaLocked gives back a reservation whose call was not made.
func (b *Budget) unreserveQuotaLocked(client string, at time.Time) {
	if client == "" {
		return
	}
	calls := b.quota.clients[client]
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Equal(at) {
			b.quota.clients[client] = append(calls[:i], calls[i+1:]...)
			return
		}
	}
}
