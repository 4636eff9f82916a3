package edge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/s360edge/s360edge/internal/wait"
	"github.com/s360edge/s360edge/upstream"
)

// A key's fetch lease lives as long as the work it guards: its holder
// renews it while it waits for a budget slot and while it calls, and
// releases it when the answer is stored (or the call failed). Right
// before the call leaves, the holder renews it once more, synchronously:
// a holder that finds it lost (it expired, Redis restarted empty) does not
// call, but reads the shared tier and the key's floor again, and takes the
// lease again or waits for its new holder. So the cluster makes one call
// per key while Redis answers, however long the budget makes a call wait.

// leaseTTL is a fetch lease's life between renewals (every third of it).
// A holder that dies leaves it to expire: the waiters take over within it.
const leaseTTL = 10 * time.Second

// errLeaseLost is Acquire's refusal of a call whose lease another
// node may hold now: fetchAndStore goes back to the shared tier.
var errLeaseLost = errors.New("this node's lease of the key expired before the call")

// errLeaseBusy ends a fetch that waited leaseRounds times for other
// nodes' calls of the key without getting the lease: it does not call
// (two calls of one key), it answers as when the budget refuses.
var errLeaseBusy = &upstream.Error{Kind: upstream.Refused, Err: errors.New("other nodes' calls of this key are still out")}

// heldLease keeps a key's lease alive while its holder waits and calls.
// It is the upstream.Lease of the holder's call.
type heldLease struct {
	l    KeyLease
	e    *Edge
	lost atomic.Bool // a renewal found it expired
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// keepLease renews l every third of ttl until release.
func (e *Edge) keepLease(l KeyLease, ttl time.Duration) *heldLease {
	h := &heldLease{l: l, e: e, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		wait.Every(h.stop, ttl/3, func() bool {
			held, err := l.Renew(context.Background())
			if err != nil {
				e.sharedFailed("renewing a key's fetch lease", err)
				return true // Redis out of reach: the lease may outlive the outage
			}
			if !held {
				h.lost.Store(true)
			}
			return held
		})
	}()
	return h
}

// release stops the renewals and gives the lease up.
func (h *heldLease) release() {
	h.once.Do(func() {
		close(h.stop)
		<-h.done
		h.l.Release()
	})
}

// Lost reports that a renewal found the lease expired.
func (h *heldLease) Lost() bool { return h.lost.Load() }

// Confirm renews the lease right before the call leaves: errLeaseLost
// when it is no longer this node's. When the shared state does not
// answer, the node goes on as a single node would.
func (h *heldLease) Confirm(ctx context.Context) error {
	if h.lost.Load() {
		return errLeaseLost
	}
	held, err := h.l.Renew(ctx)
	if err != nil {
		h.e.sharedFailed("renewing a key's fetch lease before the call", err)
		return nil
	}
	if !held {
		h.lost.Store(true)
		return errLeaseLost
	}
	return nil
}
