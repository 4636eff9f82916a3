package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
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
}

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
// (s360.Canonical), which is also what goes upstream.
func (e *Edge) Serve(ctx context.Context, client *upstream.Client, call s360.Call, canonical []byte) Result {
	policy, inst := e.policy()
	key := s360.Key(inst, call, canonical)
	now := e.opts.Now()
	ent, err := e.store.Get(key)
	if err != nil && !errors.Is(err, cachestore.ErrNotFound) {
		e.opts.Logger.Warn("reading the cache failed; treating as a miss", zap.Error(err))
	}
	if ent != nil {
		fresh, reason := e.freshness(policy, call, ent, now)
		switch {
		case fresh:
			e.stats.count(call.Class, outcomeHit)
			return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, "")}
		case reason != "":
			e.stats.count(call.Class, outcomeStale)
			e.refreshLater(client, call, key, canonical)
			return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, reason)}
		}
	}

	f, leader, err := e.fetch(ctx, client, call, key, canonical, PriorityForeground)
	if err != nil { // this caller went away
		return Result{Err: err}
	}
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
		return Result{Entry: f.entry, CacheStatus: "s360edge; fwd=" + fwd + "; stored" + detail}
	}
	// Nothing new to store: an old answer beats an error, within bounds.
	if ent != nil && now.Sub(ent.FreshUntil) <= policy.StaleIfError {
		e.stats.count(call.Class, outcomeStale)
		return Result{Entry: ent, Hit: true, CacheStatus: hitStatus(ent, now, f.staleReason())}
	}
	if f.resp != nil {
		return Result{Resp: f.resp, CacheStatus: "s360edge; fwd=" + fwd + detail}
	}
	return Result{Err: f.err, CacheStatus: "s360edge; fwd=" + fwd + detail}
}

// freshness says whether an entry is fresh, or else which stale answer it
// may give at once ("" when it is too old to serve without a call).
func (e *Edge) freshness(p Policy, call s360.Call, ent *cachestore.Entry, now time.Time) (bool, string) {
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
	s := "s360edge; hit; ttl=" + strconv.FormatInt(int64(ent.FreshUntil.Sub(now)/time.Second), 10)
	if detail != "" {
		s += "; detail=" + detail
	}
	return s
}

// fetched is the outcome of one upstream fetch, shared by coalesced callers.
type fetched struct {
	entry *cachestore.Entry  // stored answer
	resp  *upstream.Response // answer not stored (not a success, or not cacheable)
	err   error              // no answer: *upstream.Error or *FloorError
}

func (f *fetched) staleReason() string {
	var ue *upstream.Error
	switch {
	case f.resp != nil && (f.resp.Status == 509 || f.resp.Status == http.StatusTooManyRequests):
		return "stale-throttled"
	case errors.As(f.err, new(*FloorError)), errors.As(f.err, &ue) && ue.Kind == upstream.Refused:
		return "stale-throttled"
	}
	return "stale-if-error"
}

// fetch makes (or joins) the one upstream call for key. The call runs
// detached from the caller: if the caller that started it goes away, the
// others still get the answer, and it is still stored. err is set only
// when this caller's own context ended first.
func (e *Edge) fetch(ctx context.Context, client *upstream.Client, call s360.Call, key string, canonical []byte, p Priority) (*fetched, bool, error) {
	// led is written by the flight goroutine only if this caller started
	// the flight; it is read only after the flight's answer arrived.
	led := false
	ch := e.flight.DoChan(key, func() (any, error) {
		led = true
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.opts.Timeout+time.Minute)
		defer cancel()
		return e.fetchAndStore(WithPriority(fctx, p), client, call, key, canonical), nil
	})
	e.waiting.Add(1)
	defer e.waiting.Add(-1)
	select {
	case r := <-ch:
		return r.Val.(*fetched), led, nil
	case <-ctx.Done():
		return nil, false, &upstream.Error{Kind: upstream.Canceled, Err: fmt.Errorf("waiting for %s: %w", call.Name(), ctx.Err())}
	}
}

func (e *Edge) fetchAndStore(ctx context.Context, client *upstream.Client, call s360.Call, key string, canonical []byte) *fetched {
	if client == nil {
		return &fetched{err: &upstream.Error{Kind: upstream.Unreachable, Err: errors.New("no upstream client attached")}}
	}
	if e.opts.Gate != nil {
		if wait := e.opts.Gate.FloorWait(key, call.Name()); wait > 0 {
			return &fetched{err: &FloorError{Name: call.Name(), Wait: wait}}
		}
	}
	// The answer belongs to the generation current when it was asked
	// for: a setup change during a 20 s getCatalogDetailed must leave it
	// stale.
	gen := e.gen.Load()
	resp, err := client.Do(WithCallKey(ctx, key), call.Path(), canonical)
	e.stats.upstream(call.Class, resp, err)
	if err != nil {
		return &fetched{err: err}
	}
	if !s360.Success(resp.Status, resp.Body) || !call.Class.Cacheable() {
		return &fetched{resp: resp}
	}
	if e.opts.Gate != nil {
		e.opts.Gate.MarkFetched(key, call.Name())
	}
	policy, _ := e.policy()
	now := e.opts.Now()
	fresh := now.Add(policy.maxAge(call))
	ent := &cachestore.Entry{
		Status:     resp.Status,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       resp.Body,
		StoredAt:   now,
		FreshUntil: fresh,
		StaleUntil: fresh.Add(max(policy.StaleWhileRevalidate, policy.StaleIfError)),
		Class:      storeClass(call.Class),
		Generation: gen,
		Tags:       Tags(call, canonical),
	}
	if err := e.store.Put(key, ent); err != nil {
		e.opts.Logger.Warn("storing an answer failed; serving it uncached", zap.String("method", call.Name()), zap.Error(err))
	} else {
		e.stats.stored.Add(1)
	}
	return &fetched{entry: ent}
}

// refreshLater refreshes a stale entry in the background, once per key.
func (e *Edge) refreshLater(client *upstream.Client, call s360.Call, key string, canonical []byte) {
	e.background(func(ctx context.Context) {
		// Another refresh (refresh-ahead, or an earlier request) may have
		// stored a fresh answer since this request looked.
		policy, _ := e.policy()
		if ent, err := e.store.Get(key); err == nil {
			if fresh, _ := e.freshness(policy, call, ent, e.opts.Now()); fresh {
				return
			}
		}
		e.fetch(ctx, client, call, key, canonical, PriorityBackground)
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

// Tags are the invalidation handles of an availability entry: the
// products, performances and events its request names.
func Tags(call s360.Call, canonical []byte) []string {
	if call.Class != s360.Availability {
		return nil
	}
	var tags []string
	for _, f := range [...]struct{ field, prefix string }{
		{"productIds", "product:"}, {"productId", "product:"}, {"composedProductId", "product:"},
		{"performanceIds", "performance:"}, {"performanceId", "performance:"},
		{"eventIds", "event:"},
	} {
		v := gjson.GetBytes(canonical, f.field)
		if v.IsArray() {
			for _, id := range v.Array() {
				tags = append(tags, f.prefix+id.Raw)
			}
		} else if v.Exists() {
			tags = append(tags, f.prefix+v.Raw)
		}
	}
	return tags
}

// flightWaiters is the number of callers waiting on upstream fetches.
func (e *Edge) flightWaiters() int64 { return e.waiting.Load() }
