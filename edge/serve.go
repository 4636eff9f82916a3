package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// Result is the answer to one call. Exactly one of Entry, Resp and Err is
// set: a stored answer (the Body is shared: never modify it), an upstream
// answer that was not stored, or a failure.
type Result struct {
	Entry       *cachestore.Entry
	Resp        *upstream.Response
	Err         error
	CacheStatus string // RFC 9211 Cache-Status value
	Hit         bool   // Entry was served from the store: send Age
	Fetch       Fetch  // whether S-360 was called for this answer, and why not
}

// Fetch says what Serve did about S-360 for one answer: whether it was
// called and, when it was not, why.
type Fetch uint8

const (
	// Stored: not called, the store answered at once: fresh, or stale
	// while a refresh runs (Cache-Status says which).
	Stored Fetch = iota
	// Found: not called, the answer came while the request waited for
	// its turn: another fetch stored it, or the cluster's shared tier had
	// it.
	Found
	// Called: this request's fetch called S-360, whatever came of it.
	Called
	// Coalesced: another request's call of the same key, which this one
	// waited for.
	Coalesced
	// Refused: not called, held back by the budget, the monthly quota,
	// the key's floor (min_interval) or other nodes' calls of the key.
	Refused
	// Late: S-360 had not answered within stale_timeout; the stale
	// answer was given and the call goes on.
	Late
)

// Waited reports whether the request waited for S-360, or for the budget
// to let it call: the store did not answer it at once.
func (r Result) Waited() bool { return r.Fetch != Stored && r.Fetch != Found }

// FloorError says a call was not made because the method's per-key floor
// (min_interval) has not elapsed since the last call.
type FloorError struct {
	Name string
	Wait time.Duration
}

func (f *FloorError) Error() string {
	return fmt.Sprintf("%s was called for the same request less than its min_interval ago; next call allowed in %s", f.Name, f.Wait.Round(time.Second))
}

// Serve answers a cacheable call: from the store when fresh, else with one
// upstream call per key at a time. canonical is the canonical body
// (s360.Canonical), which is also what goes upstream; from is the client
// (IP) whose request it is, for the budget's fair shares and client quota.
// It also answers the feeds (Feed), from a short-lived copy of their last
// answer.
func (e *Edge) Serve(ctx context.Context, client *upstream.Client, call s360.Call, canonical []byte, from string) Result {
	policy, inst := e.policy()
	key := s360.Key(inst, call, canonical)
	now := e.opts.Now()
	ent, err := e.store.Get(key)
	if err != nil && !errors.Is(err, cachestore.ErrNotFound) {
		e.opts.Logger.Warn("reading the cache failed; treating as a miss", zap.Error(err))
	}
	if ent != nil && !bytes.Equal(ent.Canonical, canonical) {
		ent = nil // the key is a hash: another body (or an entry from before the hash) is a miss
	}
	var reason string
	if ent != nil {
		var fresh bool
		fresh, reason = e.freshness(policy, call, ent, now)
		switch {
		case fresh:
			e.stats.count(call.Class, outcomeHit)
			detail := ""
			if Feed(call) {
				detail = "feed-copy"
			}
			return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, detail), Fetch: Stored}
		case reason == "invalidated" && e.floorWait(call, key) <= 0:
			// Known to be outdated, and S-360 may be asked: the buyer
			// gets the new answer (within stale_timeout, else this one).
		case reason != "":
			// Purged, invalidated, of an older generation: answered at
			// once, and refreshed when the key's floor allows.
			e.stats.count(call.Class, outcomeStale)
			e.refreshLater(client, call, key, canonical, reason)
			return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, reason), Fetch: Stored}
		}
	}

	// With an old answer at hand, a buyer waits for S-360 no longer than
	// StaleTimeout; the fetch goes on and stores its answer.
	servable := ent != nil && (reason == "invalidated" || now.Sub(ent.FreshUntil) <= policy.StaleIfError)
	var staleAfter time.Duration
	if servable {
		staleAfter = policy.StaleTimeout
	}
	f, leader, err := e.fetch(ctx, client, &flight{call: call, key: key, canonical: canonical, from: from, p: PriorityForeground}, staleAfter)
	if errors.Is(err, errStaleTimeout) {
		e.stats.count(call.Class, outcomeStale)
		return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, e.opts.Now(), "stale-timeout"), Fetch: Late}
	}
	if err != nil { // this caller went away
		return Result{Err: err, Fetch: f.fetch(leader)}
	}
	if f.hit {
		e.stats.count(call.Class, outcomeHit)
		detail := ""
		if f.shared {
			detail = "shared"
		}
		return Result{Entry: f.entry, Hit: true, CacheStatus: hitStatus(f.entry, e.opts.Now(), detail), Fetch: Found}
	}
	fetch := f.fetch(leader)
	fwd := "miss"
	if ent != nil {
		fwd = "stale"
	}
	detail := ""
	if !leader {
		detail = "; detail=coalesced"
		e.stats.count(call.Class, outcomeCoalesced)
	} else {
		e.stats.count(call.Class, outcomeMiss)
	}
	if f.entry != nil {
		return Result{Entry: f.entry, CacheStatus: "s360edge; fwd=" + fwd + "; stored" + detail, Fetch: fetch}
	}
	// Nothing new to store: an old answer beats an error, within bounds.
	if servable {
		e.stats.count(call.Class, outcomeStale)
		return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, f.staleReason()), Fetch: fetch}
	}
	if f.resp != nil {
		return Result{Resp: f.resp, CacheStatus: "s360edge; fwd=" + fwd + detail, Fetch: fetch}
	}
	return Result{Err: f.err, CacheStatus: "s360edge; fwd=" + fwd + detail, Fetch: fetch}
}

// errStaleTimeout ends a buyer's wait for a fetch when a stale answer is at
// hand.
var errStaleTimeout = errors.New("stale_timeout reached")

// feeds are the methods that tell what changed: S-360 refuses them when
// repeated within their floor, and the website may call them as often as
// it likes, so the website's calls are answered from a copy of the last
// answer of the same request, kept for the floor.
//
// Keyed by service and method, so that the lookup on every hit builds no
// string.
var feeds = func() map[[2]string]bool {
	m := make(map[[2]string]bool)
	for name, meth := range s360.Methods {
		if meth.Feed {
			service, method, _ := strings.Cut(name, "/")
			m[[2]string{service, method}] = true
		}
	}
	return m
}()

// Feed reports whether call is one of the feeds (getUpdatedAvailabilities,
// getLastSetupUpdate, isCatalogServiceAlive), which Serve answers though
// they are not cacheable.
func Feed(call s360.Call) bool {
	return feeds[[2]string{call.Service, call.Method}]
}

// feedCopyTTL is how long a copy of a feed's answer is served, the feeds'
// default floor.
const feedCopyTTL = time.Minute

// freshness says whether an entry is fresh, or else which stale answer it
// may give at once ("" when it is too old to serve without a call).
func (e *Edge) freshness(p Policy, call s360.Call, ent *cachestore.Entry, now time.Time) (bool, string) {
	switch cachestore.Marked(ent.Tags) {
	case cachestore.InvalidatedTag:
		// S-360 reported a change: answered until its refresh is in,
		// whatever its age (see Serve).
		return false, "invalidated"
	case cachestore.PurgedTag:
		// A soft purge: answered until its refresh is in, whatever its age.
		return false, "purged"
	}
	if call.Class == s360.Catalog && ent.Generation != e.gen.Load() {
		// The setup changed: serve the old catalog until the new one is
		// in, rather than make buyers wait 20 s for getCatalogDetailed.
		return false, "generation"
	}
	if now.Before(ent.FreshUntil) {
		return true, ""
	}
	if now.Sub(ent.FreshUntil) <= p.StaleWhileRevalidate {
		return false, "stale-while-revalidate"
	}
	return false, ""
}

func hitStatus(ent *cachestore.Entry, now time.Time, detail string) string {
	b := make([]byte, 0, 64) // on the stack: one allocation, the string
	b = append(b, "s360edge; hit; ttl="...)
	b = strconv.AppendInt(b, int64(ent.FreshUntil.Sub(now)/time.Second), 10)
	if detail != "" {
		b = append(append(b, "; detail="...), detail...)
	}
	return string(b)
}

// fetched is the outcome of one upstream fetch, shared by coalesced callers.
type fetched struct {
	entry  *cachestore.Entry  // stored answer
	hit    bool               // entry was found in the store: no call made
	shared bool               // with hit: found in the cluster's shared tier
	resp   *upstream.Response // answer not stored (not a success, or not cacheable)
	err    error              // no answer: *upstream.Error or *FloorError
}

func (f *fetched) staleReason() string {
	switch {
	case f.resp != nil && (f.resp.Status == 509 || f.resp.Status == http.StatusTooManyRequests):
		return "stale-throttled"
	case f.refused():
		return "stale-throttled"
	}
	return "stale-if-error"
}

// refused says the fetch did not call S-360 because the key's floor, the
// budget, the quota or another node's lease held it back.
func (f *fetched) refused() bool {
	var ue *upstream.Error
	return errors.As(f.err, new(*FloorError)) || errors.As(f.err, &ue) && ue.Kind == upstream.Refused
}

// fetch is what the fetch did about S-360, for a caller that led it or
// joined it; f is nil when the caller stopped waiting for it.
func (f *fetched) fetch(led bool) Fetch {
	switch {
	case f != nil && f.hit:
		return Found
	case f != nil && f.refused():
		return Refused
	case led:
		return Called
	}
	return Coalesced
}

// reachedS360 says whether a call may have reached S-360, which counts
// calls, not successes: any answer (5xx, 509, in_progress included), and a
// timeout or a cut after the request was sent, start the key's floor. Only
// a call known not to have been sent does not: refused by the budget, no
// token, no connection (upstream.Error.Sent is false).
func reachedS360(err error) bool {
	return err == nil || upstream.Sent(err)
}

const metaFloorPrefix = "floor/" // + cache key: "<RFC 3339 call time> <service/method>"

// markFetched starts the key's floor and persists it for the floor's
// length, so that a restart (and a setup change after it) cannot bring a
// call within the floor.
func (e *Edge) markFetched(key, name string) {
	if e.opts.Gate == nil {
		return
	}
	e.opts.Gate.MarkFetched(key, name)
	d := e.opts.Gate.Floor(name)
	if d <= 0 {
		return
	}
	v := e.opts.Now().UTC().Format(time.RFC3339Nano) + " " + name
	if err := e.store.PutMetaTTL(metaFloorPrefix+key, []byte(v), d); err != nil {
		e.opts.Logger.Warn("persisting a floor failed; a restart within it may call S-360 early", zap.String("method", name), zap.Error(err))
	}
}

// floorWait is how long until key may be fetched upstream again.
func (e *Edge) floorWait(call s360.Call, key string) time.Duration {
	if e.opts.Gate == nil {
		return 0
	}
	return e.opts.Gate.FloorWait(key, call.Name())
}

// restoreFloors gives the budget the floors persisted before a restart.
func (e *Edge) restoreFloors() error {
	if e.opts.Gate == nil {
		return nil
	}
	err := e.store.ScanMeta(metaFloorPrefix, func(name string, v []byte) bool {
		at, method, ok := strings.Cut(string(v), " ")
		t, err := time.Parse(time.RFC3339Nano, at)
		if !ok || err != nil {
			e.opts.Logger.Warn("ignoring an unreadable persisted floor", zap.String("method", method))
			return true
		}
		e.opts.Gate.RestoreFetched(strings.TrimPrefix(name, metaFloorPrefix), method, t)
		return true
	})
	if err != nil {
		return fmt.Errorf("restoring the floors: %w", err)
	}
	return nil
}

// fetchAndStore is fl's work: the store, in a cluster the shared tier and
// the key's lease, the floor, then S-360; a success is stored.
func (e *Edge) fetchAndStore(ctx context.Context, client *upstream.Client, fl *flight) *fetched {
	call, key, canonical := fl.call, fl.key, fl.canonical
	// Every caller fetches only what it found missing or not fresh; a
	// flight that ended between its lookup and this one may have stored
	// the answer since.
	if got, err := e.store.Get(key); err == nil && bytes.Equal(got.Canonical, canonical) {
		policy, _ := e.policy()
		if fresh, _ := e.freshness(policy, call, got, e.opts.Now()); fresh {
			return &fetched{entry: got, hit: true}
		}
	}
	// From here on, what is purged or invalidated for the key makes an
	// answer read or asked for before it stale (marks.go).
	a := e.beginAsking(call, key, canonical)
	defer e.endAsking(a)
	// In a cluster, the shared tier, then the key's lease, come before
	// S-360: the cluster makes one call per key. Feeds' copies stay local.
	shared := e.opts.Shared != nil && !Feed(call)
	var held *heldLease
	defer func() {
		if held != nil {
			held.release()
		}
	}()
	var (
		gen  uint64
		mark int64
		resp *upstream.Response
		err  error
	)
	for lost := 0; ; lost++ {
		if shared {
			if f := e.sharedEntry(ctx, call, key, canonical, false, a); f != nil {
				return f
			}
			h, f := e.leaseKey(ctx, fl, a)
			if f != nil {
				return f
			}
			held = h
		}
		uc := upstream.Call{Path: call.Path(), Method: call.Name(), Class: call.Class, Key: key, Client: fl.from, Flight: fl}
		if held != nil {
			uc.Lease = held
		}
		if client == nil {
			return &fetched{err: &upstream.Error{Kind: upstream.Unreachable, Err: errors.New("no upstream client attached")}}
		}
		if wait := e.floorWait(call, key); wait > 0 {
			return &fetched{err: &FloorError{Name: call.Name(), Wait: wait}}
		}
		// The answer belongs to the generation current when it was asked
		// for: a setup change during a 20 s getCatalogDetailed must leave
		// it stale. Likewise an answer asked for before a reported change
		// or a purge: only those from now on concern it.
		gen = e.gen.Load()
		e.restart(a)
		// The same for the cluster: an invalidation or a purge another
		// node runs while the call is out keeps its answer out of the
		// shared tier.
		if shared {
			if mark, err = e.opts.Shared.Mark(ctx); err != nil {
				e.sharedFailed("reading the shared clock", err)
			}
		}
		resp, err = client.Do(ctx, uc, canonical)
		if errors.Is(err, errLeaseLost) && lost < leaseRounds {
			// The lease expired while the call waited (Redis paused past
			// it): another node may have called since. The shared tier,
			// the lease and the floor again, as at first.
			held.release()
			held = nil
			continue
		}
		break
	}
	e.stats.upstream(call.Class, resp, err)
	if reachedS360(err) {
		e.markFetched(key, call.Name())
	}
	if err != nil {
		return &fetched{err: err}
	}
	feed := Feed(call)
	if !s360.Success(resp.Status, resp.Body) || !(call.Class.Cacheable() || feed) {
		return &fetched{resp: resp}
	}
	policy, _ := e.policy()
	now := e.opts.Now()
	var ent *cachestore.Entry
	if feed {
		ent = feedEntry(canonical, resp.Body, now, feedCopyTTL)
	} else {
		fresh := now.Add(policy.maxAge(call))
		ent = &cachestore.Entry{
			Status:     resp.Status,
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       resp.Body,
			StoredAt:   now,
			FreshUntil: fresh,
			StaleUntil: fresh.Add(max(policy.StaleWhileRevalidate, policy.StaleIfError)),
			Class:      storeClass(call.Class),
			Generation: gen,
			Tags:       e.tags(call, canonical),
			Canonical:  canonical,
		}
	}
	// In a cluster the shared tier first (other nodes take only fresh
	// copies from it): when it refuses the answer, another node
	// invalidated or purged it since the call began, and this node may not
	// have applied that event yet; the answer is then kept stale here
	// without being stored fresh first. Every purge and invalidation works
	// on the shared tier before the local stores, so a put that lands
	// first is dropped by it.
	if shared && a.marked() == "" {
		err := e.opts.Shared.PutEntry(ctx, key, ent, mark)
		switch {
		case errors.Is(err, ErrInvalidated):
			return &fetched{entry: e.keepStale(call, key, ent, refusedMark(call))}
		case err != nil:
			e.sharedFailed("storing an answer in the shared tier", err)
		}
	}
	// An invalidation or a purge that ran while the call was out missed
	// this entry (it was not stored yet): it is kept stale, never stored
	// fresh first (keep).
	ent, _ = e.keep(call, key, ent, a)
	return &fetched{entry: ent}
}

// feedEntry is a copy of a feed's answer, served for ttl and then gone.
func feedEntry(canonical, body []byte, now time.Time, ttl time.Duration) *cachestore.Entry {
	return &cachestore.Entry{
		Canonical:  canonical,
		Status:     http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       body,
		StoredAt:   now,
		FreshUntil: now.Add(ttl),
		StaleUntil: now.Add(ttl),
		Class:      cachestore.Other,
	}
}

func (e *Edge) put(call s360.Call, key string, ent *cachestore.Entry) bool {
	if err := e.store.Put(key, ent); err != nil {
		e.opts.Logger.Warn("storing an answer failed; serving it uncached", zap.String("method", call.Name()), zap.Error(err))
		return false
	}
	e.stats.stored.Add(1)
	return true
}

// refreshLater refreshes a stale entry in the background, once per key:
// nothing starts while a call or a refresh for the key is under way or
// waits for its floor, so a burst of stale hits costs no goroutines. A
// purged or invalidated entry, or one of an older catalog generation, is
// refreshed as soon as its floor allows (refreshKey waits it out).
func (e *Edge) refreshLater(client *upstream.Client, call s360.Call, key string, canonical []byte, reason string) {
	e.fmu.Lock()
	busy := e.flights[key] != nil || e.refreshing[key] || e.retrying(key)
	if !busy {
		e.refreshing[key] = true
	}
	e.fmu.Unlock()
	if busy {
		return
	}
	e.background(func(ctx context.Context) {
		defer func() {
			e.fmu.Lock()
			delete(e.refreshing, key)
			e.fmu.Unlock()
		}()
		if reason != "stale-while-revalidate" {
			e.refreshKey(ctx, key, 0)
			return
		}
		// A fresh answer another refresh stored since this request looked
		// is found by the flight's leader, which reads the store first.
		e.fetch(ctx, client, &flight{call: call, key: key, canonical: canonical, p: PriorityBackground}, 0)
	})
}

func storeClass(c s360.Class) cachestore.Class {
	switch c {
	case s360.Catalog:
		return cachestore.Catalog
	case s360.Availability:
		return cachestore.Availability
	}
	return cachestore.Other
}

// tags is s360.Tags, logging at DEBUG what could not be tagged.
func (e *Edge) tags(call s360.Call, canonical []byte) []string {
	tags := s360.Tags(call, canonical)
	if len(tags) == 1 && tags[0] == s360.UntaggedTag {
		e.opts.Logger.Debug("availability request names no product, performance or event id: its entry is invalidated on any reported change", zap.String("method", call.Name()))
	}
	return tags
}

// flightWaiters is the number of callers waiting on upstream fetches.
func (e *Edge) flightWaiters() int64 { return e.waiting.Load() }
