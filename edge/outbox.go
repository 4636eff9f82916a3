package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The outbox makes a change this node found (a setup change, an
// availability invalidation) durable in the cluster: the change is applied
// here at once, and kept in the store (meta outbox/<seq>) until the
// cluster has it. One goroutine publishes the kept changes in order,
// retrying while the shared state is out of reach (Redis down, paused,
// restarted), and forgets one when it lands, or when the cluster refuses
// it as moot (ErrRefusedChange: the cluster's setup moved on, or the
// polling lease is another node's, which finds the change again). A change
// is in the cluster's state (generation, setup value, reference date) in
// the same step as its event, so every node has it at its next heartbeat
// at the latest (reconcile), stream or not.

// ErrRefusedChange is the shared state's refusal of a change that it has
// made moot: the outbox drops it. The cluster's errors wrap it.
var ErrRefusedChange = errors.New("the cluster refused the change")

const (
	metaOutboxPrefix = "outbox/" // + %016x sequence number: the store's order is the outbox's
	// outboxMax bounds the changes kept: past it (hours of an outage with
	// frequent availability changes) the oldest are dropped.
	outboxMax = 10000
	// Retries of a publish that failed: from outboxRetryFirst doubling to
	// outboxRetryMax, so that a change lands within a second of Redis's
	// return.
	outboxRetryFirst = 50 * time.Millisecond
	outboxRetryMax   = time.Second
)

// outboxEntry is one change kept.
type outboxEntry struct {
	Event Event `json:"event"`
	// Tier: the shared tier's invalidation of Event.Tags failed when the
	// change was found; it is done again before the event is published.
	Tier bool `json:"tier,omitempty"`
}

// outbox is the in-memory view of the changes kept.
type outbox struct {
	mu      sync.Mutex
	seq     uint64 // last sequence number used
	n       int    // changes kept
	gens    int    // of them, generation changes
	failing bool   // publishing fails: logged once
	kick    chan struct{}
}

// openOutbox counts the changes a previous run left and starts publishing
// them; Open calls it in a cluster.
func (e *Edge) openOutbox() error {
	e.outbox.kick = make(chan struct{}, 1)
	err := e.store.ScanMeta(metaOutboxPrefix, func(name string, v []byte) bool {
		var seq uint64
		fmt.Sscanf(name[len(metaOutboxPrefix):], "%x", &seq)
		e.outbox.seq = max(e.outbox.seq, seq)
		e.outbox.n++
		var ent outboxEntry
		if json.Unmarshal(v, &ent) == nil && ent.Event.Kind == EventGeneration {
			e.outbox.gens++
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("reading the changes to publish: %w", err)
	}
	e.bg.Add(1)
	go e.drainOutbox()
	e.kickOutbox()
	return nil
}

func (e *Edge) kickOutbox() {
	select {
	case e.outbox.kick <- struct{}{}:
	default:
	}
}

// pendingGenerations is the number of generation changes this node found
// that the cluster does not have yet: while there is one, the cluster's
// state is behind this node's, and a sync does not take it back.
func (e *Edge) pendingGenerations() int {
	e.outbox.mu.Lock()
	defer e.outbox.mu.Unlock()
	return e.outbox.gens
}

// enqueue keeps ev for the cluster and wakes the publisher. A change the
// store cannot keep is published once, as before the outbox.
func (e *Edge) enqueue(ev Event, tier bool) {
	if e.opts.Shared == nil {
		return
	}
	b, err := json.Marshal(outboxEntry{Event: ev, Tier: tier})
	if err == nil {
		e.outbox.mu.Lock()
		e.outbox.seq++
		if err = e.store.PutMeta(fmt.Sprintf("%s%016x", metaOutboxPrefix, e.outbox.seq), b); err == nil {
			e.outbox.n++
			if ev.Kind == EventGeneration {
				e.outbox.gens++
			}
		}
		e.outbox.mu.Unlock()
	}
	if err != nil {
		// Off the caller's goroutine: it may hold genMu, which a sync
		// being delivered waits for.
		e.opts.Logger.Warn("keeping a change for the other nodes failed; publishing it once", zap.String("kind", string(ev.Kind)), zap.Error(err))
		e.background(func(ctx context.Context) { e.publish(ctx, ev) })
		return
	}
	e.kickOutbox()
}

// drainOutbox publishes the kept changes, in order, until the edge closes.
func (e *Edge) drainOutbox() {
	defer e.bg.Done()
	delay := outboxRetryFirst
	for {
		var retry *time.Timer
		if e.publishKept(e.ctx) {
			delay = outboxRetryFirst
			retry = time.NewTimer(time.Hour) // the next change kicks
		} else {
			retry = time.NewTimer(delay)
			delay = min(2*delay, outboxRetryMax)
		}
		select {
		case <-e.ctx.Done():
			retry.Stop()
			return
		case <-e.outbox.kick:
		case <-retry.C:
		}
		retry.Stop()
	}
}

// publishKept publishes the kept changes in order; false when one failed
// and is to be tried again.
func (e *Edge) publishKept(ctx context.Context) bool {
	type kept struct {
		name string
		ent  outboxEntry
	}
	var all []kept
	err := e.store.ScanMeta(metaOutboxPrefix, func(name string, v []byte) bool {
		var ent outboxEntry
		if err := json.Unmarshal(v, &ent); err != nil {
			e.opts.Logger.Warn("dropping an unreadable change kept for the other nodes", zap.Error(err))
			ent.Event.Kind = "" // dropped below
		}
		all = append(all, kept{name, ent})
		return true
	})
	if err != nil {
		e.opts.Logger.Warn("reading the changes to publish failed", zap.Error(err))
		return false
	}
	if extra := len(all) - outboxMax; extra > 0 {
		e.opts.Logger.Warn("too many changes kept for the other nodes: dropping the oldest", zap.Int("dropped", extra))
		for _, k := range all[:extra] {
			e.forget(k.name, k.ent.Event.Kind)
		}
		all = all[extra:]
	}
	for _, k := range all {
		if ctx.Err() != nil {
			return false
		}
		ev := k.ent.Event
		if ev.Kind != "" {
			if err := e.publishChange(ctx, k.ent); errors.Is(err, ErrRefusedChange) {
				e.opts.Logger.Info("the cluster refused a change as moot; it follows the cluster's state", zap.String("kind", string(ev.Kind)), zap.Error(err))
			} else if err != nil {
				e.stats.sharedErrors.Add(1)
				if e.setPublishFailing(true) {
					e.opts.Logger.Warn("publishing a change to the other nodes failed; trying again until it lands", zap.String("kind", string(ev.Kind)), zap.Error(err))
				}
				return false
			}
		}
		e.forget(k.name, ev.Kind)
	}
	if e.setPublishFailing(false) {
		e.opts.Logger.Info("publishing changes to the other nodes works again")
	}
	return true
}

// publishChange lands one kept change: the shared tier's invalidation
// first when it is still to do, so that no node refills its store from
// the tier after applying the event.
func (e *Edge) publishChange(ctx context.Context, k outboxEntry) error {
	if k.Tier && len(k.Event.Tags) > 0 {
		if err := e.opts.Shared.Invalidate(ctx, k.Event.Tags); err != nil {
			return err
		}
	}
	return e.opts.Shared.Publish(ctx, k.Event)
}

// forget drops a kept change, published or moot.
func (e *Edge) forget(name string, kind EventKind) {
	e.outbox.mu.Lock()
	defer e.outbox.mu.Unlock()
	if err := e.store.DeleteMeta(name); err != nil {
		e.opts.Logger.Warn("forgetting a published change failed; it will be published again", zap.Error(err))
		return
	}
	e.outbox.n--
	if kind == EventGeneration {
		e.outbox.gens--
	}
}

// setPublishFailing records whether publishing fails, and reports a
// change of that state.
func (e *Edge) setPublishFailing(failing bool) bool {
	e.outbox.mu.Lock()
	defer e.outbox.mu.Unlock()
	if e.outbox.failing == failing {
		return false
	}
	e.outbox.failing = failing
	return true
}
