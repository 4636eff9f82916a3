package edge

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/upstream"
)

// Priority orders upstream calls in the budget: orders first, then the
// watchers' polls, then requests a buyer waits for, then background work.
type Priority = budget.Priority

const (
	PriorityOrder      = budget.Order
	PriorityForeground = budget.Foreground
	PriorityBackground = budget.Background
	// PriorityWatch is the watchers' polls: they alone (with orders) may
	// use the budget's watch reserve.
	PriorityWatch = budget.Watch
	// PriorityQueued is an order admitted from the order queue: after
	// orders posted directly, and never with the watch reserve.
	PriorityQueued = budget.Queued
)

// Gate is the institution's upstream budget as the edge sees it: a local
// budget.Budget, or a cluster.Budget shared through Redis.
type Gate interface {
	AcquireCall(ctx context.Context, c budget.Call) error
	Floor(name string) time.Duration
	FloorWait(key, name string) time.Duration
	MarkFetched(key, name string)
	RestoreFetched(key, name string, at time.Time)
	PushbackCall(c budget.Call, retryAfter time.Duration) budget.Scope
	SuccessCall(c budget.Call)
	// Update applies a config's limits (Settings.Budget).
	Update(budget.Config)
	// Stats is the budget's state, for the admin API and the status page.
	Stats() budget.Stats
	// Restore and OnAdjust keep the learned limits across restarts
	// (adaptive.go).
	Restore(budget.Learned)
	OnAdjust(func(budget.Learned))
	// OnGrant tells every grant: the status page's history and the
	// monthly quota's count (history.go, quota.go).
	OnGrant(func(at time.Time, n int))
}

var _ Gate = (*budget.Budget)(nil)

// Waits bounds how long a call may wait for a budget slot, by priority:
// a buyer waits a little, an order longer, background work until its
// context ends.
type Waits struct {
	Foreground time.Duration // default DefaultForegroundWait
	Order      time.Duration // default DefaultOrderWait
}

// The defaults of Waits: how long a buyer's call, and an order, may wait
// for a slot of the budget (max_wait, max_wait_order).
const (
	DefaultForegroundWait = 3 * time.Second
	DefaultOrderWait      = 30 * time.Second
)

// The edge is its clients' upstream.Gate: Acquire, Observe and MaxWait.
var _ upstream.Gate = (*Edge)(nil)

// Acquire admits an upstream call: every call, token calls included, takes
// a slot of the budget first, unless the monthly quota's plan refuses it
// or the call was admitted already (an order the order queue admitted in
// its turn, through Acquire).
// A call under a key's fetch lease (a cluster) leaves only while that
// lease is still this node's: it is renewed right after the slot is
// granted.
func (e *Edge) Acquire(ctx context.Context, c upstream.Call) error {
	if c.Lease != nil && c.Lease.Lost() {
		return errLeaseLost // no slot taken for a call that will not leave
	}
	for e.opts.Gate != nil && !c.Admitted {
		p, raised := priorityOf(c)
		if err := e.quotaRefusal(p); err != nil {
			return err
		}
		err := acquire(ctx, raised, e.opts.Gate, e.waitLimit(p), budgetCall(c, p))
		if raised != nil && raised.Err() != nil && ctx.Err() == nil && err != nil {
			// A buyer joined this flight while it queued: queue again
			// with the buyer's priority and max_wait.
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if c.Lease != nil {
		return c.Lease.Confirm(ctx)
	}
	return nil
}

// priorityOf is c's priority now: its flight's, with a context that ends
// when that rises, else its own.
func priorityOf(c upstream.Call) (Priority, context.Context) {
	if c.Flight != nil {
		return c.Flight.Priority()
	}
	return c.Priority, nil
}

// budgetCall describes c to the budget, at priority p.
func budgetCall(c upstream.Call, p Priority) budget.Call {
	return budget.Call{Priority: p, Method: c.Method, Key: c.Key, Client: c.Client}
}

// acquire takes a slot of g for c, waiting at most limit (0: until ctx
// ends), and giving up when raised is canceled.
func acquire(ctx, raised context.Context, g Gate, limit time.Duration, c budget.Call) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if raised != nil {
		defer context.AfterFunc(raised, cancel)()
	}
	if limit > 0 {
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	return g.AcquireCall(ctx, c)
}

// MaxWait bounds a call's wait for a token being renewed: no longer than
// for a budget slot.
func (e *Edge) MaxWait(c upstream.Call) time.Duration {
	p, _ := priorityOf(c)
	return e.waitLimit(p)
}

// waitLimit is how long a call of priority p may wait; 0 is unbounded.
func (e *Edge) waitLimit(p Priority) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch p {
	case PriorityForeground:
		return e.opts.Waits.Foreground
	case PriorityOrder:
		return e.opts.Waits.Order
	}
	return 0
}

// Observe sees S-360's answer to c: a 509/429 pauses the narrowest scope
// that explains it (the key, the method or the institution); any other
// answer below 500 ends a pause's probe.
func (e *Edge) Observe(c upstream.Call, status int, header http.Header) {
	if e.opts.Gate == nil {
		return
	}
	p, _ := priorityOf(c)
	switch bc := budgetCall(c, p); {
	case status == 509 || status == http.StatusTooManyRequests:
		e.stats.pushbacks.Add(1)
		e.opts.Gate.PushbackCall(bc, RetryAfter(header))
	case status < 500:
		e.opts.Gate.SuccessCall(bc)
	}
}

// RetryAfter reads a Retry-After header in seconds (S-360 is not known to
// send one); 0 when absent or unreadable.
func RetryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// Gate is the edge's budget, for statistics.
func (e *Edge) Gate() Gate { return e.opts.Gate }
