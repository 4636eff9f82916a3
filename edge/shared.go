package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/internal/wait"
	"github.com/s360edge/s360edge/s360"
)

// leaseMargin is added to the fetch timeout for a waiter's bound on
// another node's call: that call may first wait for a budget slot and a
// token.
const leaseMargin = 10 * time.Second

// leaseRounds bounds how many times a node waits for other nodes' calls
// of one key before it gives up (errLeaseBusy) rather than call too.
const leaseRounds = 3

// A background fetch whose lease cannot be taken because the shared state
// fails tries again, from leaseRetryFirst doubling to leaseRetryMax, while
// the shared state has failed for less than sharedBlip: a Redis paused or
// restarted for a few seconds does not make every node refresh its
// catalog alone (one call per node and key). Past it the node goes on
// alone, as a single node.
const (
	leaseRetryFirst = 100 * time.Millisecond
	leaseRetryMax   = time.Second
	sharedBlip      = 10 * time.Second
)

// leaseKey takes key's fetch lease for this node's call and keeps it alive
// until the caller releases it; or returns the answer another node's call
// brought. When another node holds the lease, it waits for that call and,
// when nothing usable comes (the holder failed, or answered under a
// generation this node has left), takes the lease again: the nodes that
// waited then call one at a time, each reading the previous one's answer
// first, rather than all at once. After leaseRounds waits it gives up
// (errLeaseBusy): it does not call while another node may. When the shared
// state fails (past a short retry for a background fetch, retryLease), or
// when ctx ends, it returns neither: the node calls as a single node would.
func (e *Edge) leaseKey(ctx context.Context, fl *flight, a *asking) (*heldLease, *fetched) {
	call, key, canonical := fl.call, fl.key, fl.canonical
	delay := leaseRetryFirst
	for round := 0; round < leaseRounds; {
		l, ok, err := e.opts.Shared.Lease(ctx, key, leaseTTL)
		if err != nil {
			e.sharedFailed("taking a key's fetch lease", err)
			if !e.retryLease(fl) || !wait.Sleep(ctx, delay) {
				return nil, nil
			}
			delay = min(2*delay, leaseRetryMax)
			continue
		}
		e.sharedDown.Store(0)
		if ok {
			// The previous holder may have stored the answer and let the
			// lease go between the last read and this lease: read again.
			if f := e.sharedEntry(ctx, call, key, canonical, false, a); f != nil {
				l.Release()
				return nil, f
			}
			return e.keepLease(l, leaseTTL), nil
		}
		round++
		if f := e.sharedEntry(ctx, call, key, canonical, true, a); f != nil {
			return nil, f
		}
		if ctx.Err() != nil {
			return nil, nil
		}
	}
	return nil, &fetched{err: errLeaseBusy}
}

// retryLease says whether a fetch whose lease could not be taken (the
// shared state failed) tries again rather than call alone: a background
// one, while the shared state has failed for less than sharedBlip.
func (e *Edge) retryLease(fl *flight) bool {
	p, _ := fl.Priority()
	since := e.sharedDown.Load()
	return p == PriorityBackground && since != 0 && time.Since(time.Unix(0, since)) < sharedBlip
}

// sharedEntry reads key from the shared tier, after waiting for another
// node's lease on it when wait is set, and stores it locally when it is
// fresh. nil when there is nothing fresh for canonical.
// a is the caller's fetch: a copy read after a purge or an invalidation
// that concerns it is not trusted.
func (e *Edge) sharedEntry(ctx context.Context, call s360.Call, key string, canonical []byte, wait bool, a *asking) *fetched {
	var ent *cachestore.Entry
	var err error
	if wait {
		e.stats.sharedWaits.Add(1)
		wctx, cancel := context.WithTimeout(ctx, e.leaseWait())
		ent, err = e.opts.Shared.WaitEntry(wctx, key)
		if wctx.Err() != nil && ctx.Err() == nil {
			err = nil // the wait's bound: the holder is slow, nothing failed
		}
		cancel()
	} else {
		ent, err = e.opts.Shared.GetEntry(ctx, key)
	}
	if err != nil && !errors.Is(err, cachestore.ErrNotFound) {
		e.sharedFailed("reading the shared tier", err)
	}
	if ent == nil || !bytes.Equal(ent.Canonical, canonical) {
		return nil
	}
	policy, _ := e.policy()
	if fresh, _ := e.freshness(policy, call, ent, e.opts.Now()); !fresh {
		return nil
	}
	if _, fresh := e.keep(call, key, ent, a); !fresh {
		return nil // not trusted: kept stale, and called for
	}
	e.stats.sharedHits.Add(1)
	return &fetched{entry: ent, hit: true, shared: true}
}

// leaseWait bounds one wait for another node's call, as a coalesced
// request waits for its flight (the buyers' own waits are bounded in
// fetch), so that a 20 s getCatalogDetailed missed on N nodes is still one
// call.
func (e *Edge) leaseWait() time.Duration { return e.timeout() + leaseMargin }

// sharedFailed counts a failed call of the shared state; the edge goes on
// with its local tier, so it is only worth a DEBUG line (the cluster logs
// Redis going down and up).
func (e *Edge) sharedFailed(what string, err error) {
	e.stats.sharedErrors.Add(1)
	e.sharedDown.CompareAndSwap(0, time.Now().UnixNano())
	e.opts.Logger.Debug(what+" failed; going on as a single node", zap.Error(err))
}

// poller says whether this node runs the watchers' polls now, and at which
// multiple of their intervals.
func (e *Edge) poller() (bool, int) {
	if e.opts.Shared == nil {
		return true, 1
	}
	run, factor := e.opts.Shared.Poller()
	return run, max(factor, 1)
}

// publish hands an operator's purge to the other nodes, once: a failure
// (Redis down) leaves it applied here only; it is logged once until
// publishing works again. The poller's changes go through the outbox
// (enqueue), which retries until they land.
func (e *Edge) publish(ctx context.Context, ev Event) {
	if e.opts.Shared == nil {
		return
	}
	if err := e.opts.Shared.Publish(ctx, ev); err != nil {
		e.stats.sharedErrors.Add(1)
		if e.publishFailing.CompareAndSwap(false, true) {
			e.opts.Logger.Warn("publishing a change to the other nodes failed; it is applied on this node only", zap.String("kind", string(ev.Kind)), zap.Error(err))
		}
		return
	}
	if e.publishFailing.CompareAndSwap(true, false) {
		e.opts.Logger.Info("publishing changes to the other nodes works again")
	}
}

// applyEvent applies another node's change, or the cluster's state (an
// EventSync, at each join and heartbeat); the cluster calls it on one
// goroutine, in stream order.
func (e *Edge) applyEvent(ev Event) {
	if !e.hold() {
		return // closing
	}
	defer e.bg.Done()
	switch ev.Kind {
	case EventGeneration, EventSync:
		e.adoptReference(ev.Reference)
		e.adoptGeneration(ev)
	case EventInvalidate:
		if err := e.invalidateLocal(ev.Tags); err != nil {
			e.opts.Logger.Warn("applying another node's availability invalidation failed", zap.Error(err))
		}
		e.adoptReference(ev.Reference)
	case EventPurge:
		req, err := purgeOf(ev)
		if err == nil {
			_, err = e.purgeLocal(req)
		}
		if err != nil {
			e.opts.Logger.Warn("applying another node's purge failed", zap.Error(err))
		}
	}
}

// adoptReference moves the updates poll's reference date forward to ref,
// the cluster's (every change before it was published, and is applied
// here before ref is), never back: a later date of this node's own is as
// good. "" or unreadable: nothing.
func (e *Edge) adoptReference(ref string) {
	t, err := time.Parse(time.RFC3339Nano, ref)
	if err != nil {
		return
	}
	e.refMu.Lock()
	defer e.refMu.Unlock()
	if b, err := e.store.GetMeta(metaUpdatesRef); err == nil {
		if cur, err := time.Parse(time.RFC3339Nano, string(b)); err == nil && !cur.Before(t) {
			return
		}
	}
	if err := e.store.PutMeta(metaUpdatesRef, []byte(ref)); err != nil {
		e.opts.Logger.Warn("storing the updates poll's reference date failed", zap.Error(err))
	}
}

// adoptGeneration makes the cluster's catalog generation this node's, so
// that every node stamps and compares catalog entries with the same number,
// and refreshes the catalog ahead through the shared tier and the keys'
// leases (one S-360 call per key for the cluster). Generation 0 is a
// cluster that has none yet: the node keeps its own, and the poller gives
// the cluster its own (Redis restarted empty may have lost the last
// change).
//
// A sync (the cluster's state, every heartbeat) does not take a node back
// while a generation change it found has not landed in the cluster yet:
// the cluster's state is behind it then. Events always apply: they are
// the cluster's, in its order.
//
// Generations are derived from the setup value (GenerationOf), so nodes
// that saw a change alone agree on its number. A node may still meet the
// cluster at the same number for another setup value (numbers given by a
// version that counted them): its catalog entries may tell an older
// setup, so they are soft-purged and refreshed through the shared tier.
func (e *Edge) adoptGeneration(ev Event) {
	e.genMu.Lock()
	if ev.Kind == EventSync && e.pendingGenerations() > 0 {
		e.genMu.Unlock()
		return
	}
	cur := e.gen.Load()
	prev, _ := e.store.GetMeta(metaSetupLast) // none or unreadable: the entries cannot be vouched for
	adopt := ev.Generation != 0 && ev.Generation != cur
	collided := !adopt && ev.Generation != 0 && ev.Setup != nil && !bytes.Equal(prev, ev.Setup)
	var err error
	if adopt {
		err = e.store.PutMeta(metaGeneration, binary.BigEndian.AppendUint64(nil, ev.Generation))
		e.gen.Store(ev.Generation)
	}
	if err == nil && ev.Setup != nil && !bytes.Equal(prev, ev.Setup) {
		// The value this node compares with when it becomes the poller.
		err = e.store.PutMeta(metaSetupLast, ev.Setup)
	}
	if ev.Kind == EventSync && ev.Generation == 0 && cur != 0 && prev != nil {
		if run, factor := e.poller(); run && factor == 1 {
			// The cluster has no state (a new or emptied Redis): the
			// poller's is the cluster's.
			e.enqueue(Event{Kind: EventGeneration, Generation: cur, Setup: prev}, false)
		}
	}
	e.genMu.Unlock()
	if err != nil {
		e.opts.Logger.Warn("persisting the cluster's catalog generation failed", zap.Error(err))
	}
	if collided {
		e.opts.Logger.Info("this node's catalog generation is the cluster's but for another setup value: refreshing its catalog", zap.Uint64("generation", ev.Generation))
		if _, err := e.purgeLocal(PurgeRequest{Class: cachestore.Catalog}); err != nil {
			e.opts.Logger.Warn("marking this node's catalog for refresh failed", zap.Error(err))
		}
	}
	if !adopt {
		return
	}
	e.stats.gens.Add(1)
	e.stats.lastSetupChange.Store(e.opts.Now().UnixNano())
	e.opts.Logger.Info("adopted the cluster's catalog generation", zap.Uint64("generation", ev.Generation), zap.String("from", string(ev.Kind)))
	e.refreshAhead()
}

// PurgeRequest is an operator's purge: everything, or one Class (catalog
// or availability), one Key or one Tag. Soft by default: entries are
// marked stale, still served (detail=purged) and refreshed; Hard deletes
// them.
type PurgeRequest struct {
	Class cachestore.Class // 0 = not by class
	Key   string
	Tag   string
	Hard  bool
}

// ErrPurgeRequest is a purge naming more than one of Class, Key and Tag.
var ErrPurgeRequest = errors.New("give at most one of class, key and tag")

// Purge applies an operator's purge to the local store (refreshing the
// catalog entries a soft purge marked) and, in a cluster, to the shared
// tier and every other node. It returns the number of local entries
// purged; the cluster's part, when it fails, is logged, not returned: the
// local purge is done.
func (e *Edge) Purge(ctx context.Context, req PurgeRequest) (int, error) {
	set := 0
	for _, b := range []bool{req.Class != 0, req.Key != "", req.Tag != ""} {
		if b {
			set++
		}
	}
	if set > 1 {
		return 0, ErrPurgeRequest
	}
	ev := Event{Kind: EventPurge, Key: req.Key, Soft: !req.Hard}
	if req.Class != 0 {
		ev.Class = req.Class.String()
	}
	if req.Tag != "" {
		ev.Tags = []string{req.Tag}
	}
	if e.opts.Shared != nil {
		// The shared tier first, so that no node refills its store
		// from it between the local purges.
		if err := e.opts.Shared.Purge(ctx, ev); err != nil {
			e.sharedFailed("purging the shared tier", err)
			e.opts.Logger.Warn("purging the shared tier failed; other nodes may refill their stores from it", zap.Error(err))
		}
	}
	n, err := e.purgeLocal(req)
	if err != nil {
		return n, err
	}
	e.publish(ctx, ev)
	return n, nil
}

// purgeOf is the purge an EventPurge names.
func purgeOf(ev Event) (PurgeRequest, error) {
	req := PurgeRequest{Key: ev.Key, Hard: !ev.Soft}
	if ev.Class != "" {
		c, err := cachestore.ParseClass(ev.Class)
		if err != nil {
			return req, fmt.Errorf("purge event: %w", err)
		}
		req.Class = c
	}
	switch len(ev.Tags) {
	case 0:
	case 1:
		req.Tag = ev.Tags[0]
	default:
		return req, errors.New("purge event: more than one tag")
	}
	return req, nil
}

// purgeLocal applies req to the local store and refreshes the catalog
// entries a soft purge marked. The fetches in progress that req concerns
// are marked first: an answer asked for before the purge, stored after
// this look at the store, is kept stale (and so refreshed), soft or hard.
func (e *Edge) purgeLocal(req PurgeRequest) (int, error) {
	e.markAsking(cachestore.PurgedTag, req.concerns)
	s := e.store
	var n int
	var err error
	switch {
	case req.Key != "" && req.Hard:
		if _, gerr := s.Get(req.Key); gerr == nil {
			n = 1
		}
		err = s.Delete(req.Key)
	case req.Key != "":
		n, err = s.SoftPurgeKey(req.Key)
	case req.Tag != "" && req.Hard:
		n, err = s.PurgeTag(req.Tag)
	case req.Tag != "":
		n, err = s.SoftPurgeTag(req.Tag)
	case req.Class != 0 && req.Hard:
		n, err = s.PurgeClass(req.Class)
	case req.Class != 0:
		n, err = s.SoftPurgeClass(req.Class)
	case req.Hard:
		n, err = s.PurgeAll()
	default:
		n, err = s.SoftPurgeAll()
	}
	if !req.Hard && n > 0 {
		e.RefreshPurged()
	}
	return n, err
}
