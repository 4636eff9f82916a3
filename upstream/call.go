package upstream

import (
	"context"
	"net/http"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
)

// Call is one upstream call: what the Client POSTs, and what its Gate
// needs to admit the call and to account for its answer.
type Call struct {
	Path   string     // what is POSTed to: an S-360 REST-RPC path, or AuthPath
	Method string     // "service/method"; "auth" for the token
	Class  s360.Class // the method's class (an order, a catalog call...)
	Key    string     // the cache key; "" for calls that are not cached
	Client string     // who caused the call (client IP), for the budget's fair shares and client quota; "" for the sidecar's own
	// Priority is the call's place in the budget, unless Flight gives it.
	// Its zero value is budget.Order: always set it.
	Priority budget.Priority
	// Flight, when set, is the shared fetch the call is made for: its
	// priority replaces Priority, and may rise while the call waits.
	Flight Flight
	// Lease, when set, must still be held when the call leaves.
	Lease Lease
	// Admitted is set on a call that holds its slot of the budget already:
	// an order the order queue admitted in its turn. The Gate lets it leave
	// at once.
	Admitted bool
}

// CallOf is the call of the S-360 method c at priority p, caused by client
// ("" for the sidecar's own calls).
func CallOf(c s360.Call, client string, p budget.Priority) Call {
	return Call{Path: c.Path(), Method: c.Name(), Class: c.Class, Client: client, Priority: p}
}

// tokenCall fetches the operator's token. Every call needs the token, so
// renewing it goes first (budget.Order); it is no client's, whoever needed
// it first.
var tokenCall = Call{Path: AuthPath, Method: "auth", Priority: budget.Order}

// Flight is the shared fetch of one cache key that a call is made for
// (package edge's): a caller who joins it may raise its priority while the
// call waits for the budget.
type Flight interface {
	// Priority is the flight's priority now, and a context that ends
	// when it rises.
	Priority() (budget.Priority, context.Context)
}

// Lease is a right to make a call that can be lost while the call waits:
// in a cluster, this node's fetch lease of the call's key, which another
// node may take once it expired.
type Lease interface {
	// Lost reports that the lease is known to be lost, without asking.
	Lost() bool
	// Confirm renews the lease right before the call leaves, and fails
	// when it is no longer held.
	Confirm(ctx context.Context) error
}

// Gate admits a Client's calls, token calls included: the institution's
// budget, as the edge keeps it.
type Gate interface {
	// Acquire waits until call may leave, or refuses it.
	Acquire(ctx context.Context, call Call) error
	// Observe sees the status and headers of every answer to call.
	Observe(call Call, status int, header http.Header)
	// MaxWait bounds how long call waits for a token that another call
	// is fetching; 0 is until its context ends.
	MaxWait(call Call) time.Duration
}
