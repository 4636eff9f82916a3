package budget

import (
	"container/list"
	"time"

	"go.uber.org/zap"
)

// Clients share the budget in two ways (Config.ClientQuota): fairly, by
// default, and under an explicit hard cap. Only Foreground calls with a
// Client take part: orders, the watchers and background work are outside.
//
// # Fair shares
//
// A is what remains of the window after the order and watch reserves (the
// Foreground allowance). A client is active from each call it asks the
// budget for until one Window later, and while a call of its waits for a
// slot; n is the number of active clients and the fair share is A/n. A
// client's use is its calls granted in the last Window.
//
// A client whose use is below its share is served as before: when a slot
// is free, else in turn as one frees. A client at or beyond its share may
// still take a free slot as long as what stays free covers the shares the
// other active clients have not used yet (the sum of share - use over
// them); otherwise it is refused at once (ErrClientQuota), and so are its
// calls already waiting, since any slot that frees is owed to the others
// first. So a lone client may use the whole of A; while clients compete,
// each is sure of A/n; and a client that stops asking gives its share
// back one Window after its last call.
//
// The sums are exact: the other clients' unused shares are summed over the
// clients with calls in the window (at most one per call of the window)
// plus A for each active client without one, and only when the asking
// client is at or beyond its share.

// overflowClient stands for the clients that arrive while MaxClients
// others are tracked: a flood of addresses costs no memory, and cannot
// multiply its share or its quota.
const overflowClient = "\x00overflow"

// fairClient is an active client.
type fairClient struct {
	id      string
	calls   []time.Time // its calls granted in the window, oldest first; pruned lazily
	seen    time.Time   // when it last asked for a call or stopped waiting for one
	waiting int         // its calls queued now
	elem    *list.Element
}

type fair struct {
	clients map[string]*fairClient   // the active clients
	lru     list.List                // of *fairClient, least recently seen first
	using   map[*fairClient]struct{} // the active clients that may have calls in the window
	warned  bool
}

// fairOn reports whether clients share the budget fairly (ClientQuota is
// not negative: "off" turns fair sharing and the cap off together).
func (b *Budget) fairOn() bool { return b.cfg.ClientQuota >= 0 }

// fairClientLocked marks c's client active now and returns it; nil when c
// is outside fair sharing.
func (b *Budget) fairClientLocked(c Call, p Priority, now time.Time) *fairClient {
	if p != Foreground || c.Client == "" || !b.fairOn() {
		return nil
	}
	f := &b.fair
	b.pruneFairLocked(now)
	fc := f.clients[c.Client]
	if fc == nil {
		if f.clients == nil {
			f.clients = make(map[string]*fairClient)
			f.using = make(map[*fairClient]struct{})
		}
		id := c.Client
		if len(f.clients) >= b.cfg.MaxClients {
			id = overflowClient
		}
		if fc = f.clients[id]; fc == nil {
			fc = &fairClient{id: id}
			fc.elem = f.lru.PushBack(fc)
			f.clients[id] = fc
		}
	}
	b.seenLocked(fc, now)
	return fc
}

func (b *Budget) seenLocked(fc *fairClient, now time.Time) {
	fc.seen = now
	if fc.elem != nil {
		b.fair.lru.MoveToBack(fc.elem)
	}
}

// pruneFairLocked forgets the clients no longer active. Their calls are
// all out of the window: each was granted when the client was last seen,
// or before.
func (b *Budget) pruneFairLocked(now time.Time) {
	f := &b.fair
	cut := now.Add(-b.cfg.Window)
	for range f.lru.Len() {
		e := f.lru.Front()
		fc := e.Value.(*fairClient)
		if fc.seen.After(cut) {
			return
		}
		if fc.waiting > 0 {
			b.seenLocked(fc, now) // still waiting: active
			continue
		}
		f.lru.Remove(e)
		fc.elem = nil
		delete(f.clients, fc.id)
		delete(f.using, fc)
	}
}

// resetFairLocked forgets every client, when fair sharing is turned off.
// Calls still waiting keep their client, now outside fair sharing.
func (b *Budget) resetFairLocked() {
	for _, fc := range b.fair.clients {
		fc.elem = nil
	}
	b.fair = fair{}
}

// use prunes fc's calls to the window after cut and counts them.
func (fc *fairClient) use(cut time.Time) int {
	i := 0
	for i < len(fc.calls) && !fc.calls[i].After(cut) {
		i++
	}
	fc.calls = append(fc.calls[:0], fc.calls[i:]...)
	return len(fc.calls)
}

// heldLocked reports whether fc is at or beyond its fair share while the
// free slots are owed to other active clients' unused shares, and if so
// when it will be back within its share, other things equal.
func (b *Budget) heldLocked(fc *fairClient, now time.Time) (time.Duration, bool) {
	f := &b.fair
	if fc.elem == nil {
		return 0, false // fair sharing was turned off and on while it waited
	}
	b.pruneFairLocked(now) // fc stays: it was seen now, or it waits
	a, n := b.allowance(Foreground), len(f.clients)
	cut := now.Add(-b.cfg.Window)
	u := fc.use(cut)
	if u*n < a {
		return 0, false
	}
	// What the others have not used of their shares, times n (shares are
	// a/n: everything is counted in n-ths of a call).
	owed, users := 0, 0
	for o := range f.using {
		k := o.use(cut)
		if k == 0 {
			delete(f.using, o)
			continue
		}
		users++
		owed += max(a-k*n, 0)
	}
	owed += (n - users) * a
	if free := a - b.usedLocked(now); owed == 0 || (free-1)*n >= owed {
		return 0, false
	}
	if !f.warned {
		f.warned = true
		b.cfg.Logger.Warn("clients compete for the upstream budget: a client beyond its fair share gets stale answers or 429 "+
			"while the others have calls left of theirs",
			zap.Int("share", a/n), zap.Int("clients", n), zap.Duration("window", b.cfg.Window))
	}
	// Back within its share once its use is at most (a-1)/n.
	return fc.calls[u-(a-1)/n-1].Add(b.cfg.Window).Sub(now), true
}

// fairGrantLocked counts a call granted to fc at now.
func (b *Budget) fairGrantLocked(fc *fairClient, now time.Time) {
	if fc == nil || fc.elem == nil {
		return
	}
	fc.calls = append(fc.calls, now)
	b.fair.using[fc] = struct{}{}
	b.seenLocked(fc, now)
}

// fairRefundLocked takes back fc's call granted at at, not made.
func (b *Budget) fairRefundLocked(fc *fairClient, at time.Time) {
	if fc == nil {
		return
	}
	for i := len(fc.calls) - 1; i >= 0; i-- {
		if fc.calls[i].Equal(at) {
			fc.calls = append(fc.calls[:i], fc.calls[i+1:]...)
			return
		}
	}
}

// fairShareLocked is the share each active client is sure of now (what a
// newcomer would be: A divided among the active clients and it, when it
// is not one of them yet); 0 when fair sharing is off.
func (b *Budget) fairShareLocked(now time.Time) (share, clients int) {
	if !b.fairOn() {
		return 0, 0
	}
	b.pruneFairLocked(now)
	n := len(b.fair.clients)
	return b.allowance(Foreground) / max(n, 1), n
}

// The hard cap: an explicit ClientQuota, counted per ClientWindow from the
// moment a call is asked for (a waiting call holds its place in the cap).

type quota struct {
	clients   map[string][]time.Time // calls each client caused in the quota window, oldest first
	nextSweep time.Time
	warned    bool
	refusals  uint64 // refusals by the cap or the fair share
}

// quotaClientLocked is who c counts against, or "" when c is outside the
// cap: orders, the watchers and background work are, and every call when
// there is no cap.
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
			b.cfg.Logger.Warn("a client reached its client_quota of upstream calls; it gets stale answers or 429 until calls age out. "+
				"Without client_quota, clients share the budget fairly and a lone client may use all of it",
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
