package edge

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// PriorityWatch is the watchers' polls: they alone (with orders) may use
// the budget's watch reserve.
const PriorityWatch = budget.Watch

type (
	priorityKey struct{}
	callKeyKey  struct{}
	clientKey   struct{}
)

// WithCallKey marks ctx with the cache key of the call made under it, so
// that a 509 on it pauses that key (budget pause scopes).
func WithCallKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, callKeyKey{}, key)
}

// CallKeyOf returns ctx's cache key; "" for calls that are not cached.
func CallKeyOf(ctx context.Context) string {
	k, _ := ctx.Value(callKeyKey{}).(string)
	return k
}

// WithClient marks ctx with the client (its IP) whose request causes the
// calls made under it, for the budget's client quota.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// ClientOf returns ctx's client; "" for the sidecar's own calls.
func ClientOf(ctx context.Context) string {
	c, _ := ctx.Value(clientKey{}).(string)
	return c
}

// budgetCall describes the call made under ctx to path to the budget.
func budgetCall(ctx context.Context, path string, p Priority) budget.Call {
	c, ok := s360.Parse(path)
	if !ok {
		// The token call, made under the context of the call that
		// needed it: it is not that call's key.
		return budget.Call{Priority: p, Method: "auth", Client: ClientOf(ctx)}
	}
	return budget.Call{Priority: p, Method: c.Name(), Key: CallKeyOf(ctx), Client: ClientOf(ctx)}
}

// WithPriority marks ctx with the budget priority of the calls made under
// it; the upstream client's Wait hook reads it.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf returns ctx's priority: a flight's current one (see flight),
// else the one ctx is marked with; unmarked calls are foreground.
func PriorityOf(ctx context.Context) Priority {
	if fl := flightOf(ctx); fl != nil {
		p, _ := fl.priority()
		return p
	}
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok {
		return p
	}
	return PriorityForeground
}

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

// Wait is the upstream client's Wait hook: every upstream call, token
// calls included, takes a slot of the budget first. A call under a key's
// fetch lease (a cluster) leaves only while that lease is still this
// node's: it is renewed right after the slot is granted.
func (e *Edge) Wait(ctx context.Context, path string) error {
	lease := leaseOf(ctx)
	if path == upstream.AuthPath {
		lease = nil // the token's call, not the key's
	}
	if lease != nil && lease.lost.Load() {
		return errLeaseLost // no slot taken for a call that will not leave
	}
	if err := e.waitBudget(ctx, path); err != nil {
		return err
	}
	if lease != nil {
		return lease.confirm(ctx, e)
	}
	return nil
}

func (e *Edge) waitBudget(ctx context.Context, path string) error {
	if e.opts.Gate == nil {
		return nil
	}
	for {
		p, raised := PriorityOf(ctx), context.Context(nil)
		if fl := flightOf(ctx); fl != nil {
			p, raised = fl.priority()
		}
		if path == upstream.AuthPath {
			// Every call needs the token: renewing it goes first.
			p = PriorityOrder
		}
		if err := e.quotaRefusal(p); err != nil {
			return err
		}
		err := e.acquire(ctx, raised, budgetCall(ctx, path, p))
		if raised != nil && raised.Err() != nil && ctx.Err() == nil && err != nil {
			// A buyer joined this flight while it queued: queue again
			// with the buyer's priority and max_wait.
			continue
		}
		return err
	}
}

// acquire takes a budget slot for c, waiting at most c's wait limit, and
// giving up when raised is canceled.
func (e *Edge) acquire(ctx, raised context.Context, c budget.Call) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if raised != nil {
		defer context.AfterFunc(raised, cancel)()
	}
	if limit := e.waitLimit(c.Priority); limit > 0 {
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	return e.opts.Gate.AcquireCall(ctx, c)
}

// MaxWait is the upstream client's MaxWait hook: a caller waits for a
// token being renewed no longer than for a budget slot.
func (e *Edge) MaxWait(ctx context.Context) time.Duration {
	return e.waitLimit(PriorityOf(ctx))
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

// Observe is the upstream client's Observe hook: S-360's 509/429 pauses
// the narrowest scope that explains it (the key, the method or the
// institution); any other answer below 500 ends a pause's probe.
func (e *Edge) Observe(ctx context.Context, path string, status int, header http.Header) {
	if e.opts.Gate == nil {
		return
	}
	c := budgetCall(ctx, path, PriorityOf(ctx))
	switch {
	case status == 509 || status == http.StatusTooManyRequests:
		e.stats.pushbacks.Add(1)
		e.opts.Gate.PushbackCall(c, RetryAfter(header))
	case status < 500:
		e.opts.Gate.SuccessCall(c)
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

// Gate is the edge's budget, for config reloads and statistics.
func (e *Edge) Gate() Gate { return e.opts.Gate }
