package edge

import (
	"context"
	"errors"
	"time"

	"github.com/s360edge/s360edge/cachestore"
)

// Shared is the state several sidecars of one institution share so that
// they act toward S-360 as one (package cluster implements it on Redis).
// Options.Shared is nil for a single node: then nothing here is used.
//
// Every method is bounded in time by the implementation (Redis calls time
// out at 50 ms on the hot path); an error means the shared state is out of
// reach, and the edge goes on with its local tier alone.
type Shared interface {
	// GetEntry reads key's entry from the shared tier;
	// cachestore.ErrNotFound when there is none.
	GetEntry(ctx context.Context, key string) (*cachestore.Entry, error)
	// Mark is the shared state's clock now, taken before a call: the
	// call's start, for PutEntry.
	Mark(ctx context.Context) (int64, error)
	// PutEntry stores ent in the shared tier until its StaleUntil. An
	// entry whose call began (mark) before an invalidation or purge of one
	// of its tags, of its class, of its key or of everything, or whose
	// mark cannot be judged (0: unknown), is not stored: ErrInvalidated.
	PutEntry(ctx context.Context, key string, ent *cachestore.Entry, mark int64) error
	// Invalidate drops from the shared tier every entry carrying one of
	// tags (availability invalidations), and marks the tags as
	// invalidated now.
	Invalidate(ctx context.Context, tags []string) error
	// Purge drops from the shared tier what an EventPurge names: every
	// entry (no Class, Key or Tags), one class, one key, or tags, and
	// marks what it names (every class for everything) as Invalidate
	// marks tags, so that PutEntry refuses the answer of a call begun
	// before.
	Purge(ctx context.Context, ev Event) error
	// Lease takes, for ttl, the cluster-wide right to call S-360 for key.
	// ok is false when another node holds it: WaitEntry then. The lease
	// (never nil when ok) is renewed by its holder while it waits and
	// calls, and released when it is done.
	Lease(ctx context.Context, key string, ttl time.Duration) (lease KeyLease, ok bool, err error)
	// WaitEntry waits until key's lease is released (or has expired) or
	// ctx ends, then reads key's entry from the shared tier.
	WaitEntry(ctx context.Context, key string) (*cachestore.Entry, error)
	// Poller says whether this node runs the watchers' polls now, and at
	// which multiple of their intervals: (true, 1) on the node holding the
	// polling lease, (false, 0) on the others, and (true, nodes) on every
	// node while the shared state is out of reach.
	Poller() (poll bool, factor int)
	// Publish appends ev to the cluster's durable event stream, which every
	// other node applies, and writes the cluster's state it changes
	// (generation and setup, reference date) in the same step. A
	// generation event lands only while the cluster's setup is ev.From
	// (ErrSuperseded otherwise: the cluster moved on); an invalidation
	// fails when this node does not hold the polling lease (fencing; the
	// new poller finds the change again); an operator's EventPurge may
	// come from any node. Any other error: the shared state is out of
	// reach, and the edge's outbox tries again.
	Publish(ctx context.Context, ev Event) error
	// Subscribe registers the edge's handler of the other nodes' events:
	// fn is called on one goroutine, in stream order, for every event
	// published since the last one this node applied (catch-up after a
	// restart or an outage included), and with an EventSync when the node
	// (re)joins and then every heartbeat (reconcile).
	Subscribe(fn func(Event))
}

// KeyLease is a key's fetch lease, held by this node.
type KeyLease interface {
	// Renew extends the lease by its ttl if this node still holds it
	// (fenced: a lease that expired, and may be another node's, is not
	// extended): held is false then. An error: the shared state is out of
	// reach.
	Renew(ctx context.Context) (held bool, err error)
	// Release gives the lease up if it is still this node's, and wakes
	// the waiters of every node. Only its first call does anything.
	Release()
}

// ErrInvalidated is PutEntry's refusal of an answer asked for before an
// invalidation or a purge of what it tells about: the node keeps it stale.
var ErrInvalidated = errors.New("an invalidation ran in the cluster since the call began")

// EventKind says what an Event carries.
type EventKind string

const (
	// EventGeneration: the setup changed; Generation is the new catalog
	// generation and Setup the canonical getLastSetupUpdate answer.
	EventGeneration EventKind = "generation"
	// EventInvalidate: products' availability changed; Tags are the
	// availability tags invalidated, Reference the updates poll's next
	// referenceDate.
	EventInvalidate EventKind = "invalidate"
	// EventPurge: an operator purged everything, or Class, Key or Tags
	// (Soft: marked for refresh rather than deleted).
	EventPurge EventKind = "purge"
	// EventSync: the node (re)joined, or reconciles (every heartbeat);
	// Generation, Setup and Reference are the cluster's current ones
	// (zero, nil and "" when it has none yet).
	EventSync EventKind = "sync"
)

// Event is one change every node of a cluster applies.
type Event struct {
	Kind       EventKind `json:"kind"`
	Generation uint64    `json:"generation,omitempty"`
	Setup      []byte    `json:"setup,omitempty"`
	Tags       []string  `json:"tags,omitempty"`
	Reference  string    `json:"reference,omitempty"`
	Class      string    `json:"class,omitempty"` // cachestore.Class name
	Key        string    `json:"key,omitempty"`
	Soft       bool      `json:"soft,omitempty"`
	Node       string    `json:"node,omitempty"` // the publisher
	// From is, on an EventGeneration handed to Publish, the setup value
	// the change was seen from (nil: none): the cluster takes the change
	// only while its own setup is that value, so that a change seen late
	// never takes it back. Not sent to the other nodes.
	From []byte `json:"from,omitempty"`
}
