package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// Watch configures the edge's S-360-aware invalidation: the setup watcher
// (getLastSetupUpdate → catalog generations, then refresh-ahead) and the
// availability watcher (getUpdatedAvailabilities → per-product invalidations).
type Watch struct {
	SetupPoll   time.Duration // getLastSetupUpdate interval; 0 = off
	UpdatesPoll time.Duration // getUpdatedAvailabilities interval; 0 = off
	Version     string        // service version of the watchers' calls; default "v1_33"
	BatchSize   int           // product ids per getUpdatedAvailabilities call; default 100
}

const (
	DefaultWatchVersion = "v1_33"
	DefaultBatchSize    = 100

	metaSetupLast  = "setup.last"        // canonical body of the last successful getLastSetupUpdate
	metaUpdatesRef = "updates.reference" // start of the last successful updates poll, RFC 3339

	// maxBackoff caps the interval multiplier after consecutive failed polls.
	maxBackoff = 4
	// maxRefreshFailures bounds the retries of one key's refresh-ahead
	// when S-360 fails (floors are waited out, not counted): buyers'
	// requests still refresh the entry on their own.
	maxRefreshFailures = 5
	// updatesOverlap is subtracted from the reference date: S-360 stamps
	// changes with its own clock, in milliseconds, so a change in the same
	// millisecond as our previous poll, or hidden by a small clock skew,
	// would otherwise be missed for good. The cost is that such a change
	// is reported (and invalidated) twice.
	updatesOverlap = time.Second
	refDateLayout  = "2006-01-02T15:04:05.000Z"
)

func (w Watch) withDefaults() Watch {
	if w.Version == "" {
		w.Version = DefaultWatchVersion
	}
	if w.BatchSize <= 0 {
		w.BatchSize = DefaultBatchSize
	}
	return w
}

// watchState is the watchers' part of the Edge. cfg, cancel and retries
// are guarded by Edge.mu.
type watchState struct {
	cfg     Watch
	cancel  context.CancelFunc // stops the running poll loops
	starts  int                // times the loops were (re)started, for tests
	retries map[string]*time.Timer

	setupMu   sync.Mutex // one setup poll at a time, also across a restart of the loops
	updatesMu sync.Mutex // one updates poll at a time
}

// SetWatch (re)configures the watchers. It is called on every config load:
// the same settings leave the running loops alone, different ones restart
// them. The loops stop in Close. The first poll happens at once, so that a
// setup change made while the sidecar was down is seen right after start.
func (e *Edge) SetWatch(w Watch) {
	w = w.withDefaults()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || (e.watch.cancel != nil && e.watch.cfg == w) {
		return
	}
	if e.watch.cancel != nil {
		e.watch.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.watch.cfg, e.watch.cancel = w, cancel
	e.watch.starts++
	if w.SetupPoll > 0 {
		e.pollLoop(ctx, w.SetupPoll, func() int { return 1 }, e.pollSetup)
	}
	if w.UpdatesPoll > 0 {
		e.pollLoop(ctx, w.UpdatesPoll, e.updatesCost, e.pollUpdates)
	}
}

// stopWatchLocked stops the loops and pending refresh retries; Close calls
// it with e.mu held.
func (e *Edge) stopWatchLocked() {
	if e.watch.cancel != nil {
		e.watch.cancel()
	}
	for k, t := range e.watch.retries {
		t.Stop()
		delete(e.watch.retries, k)
	}
}

func (e *Edge) watchConfig() Watch {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.watch.cfg.withDefaults()
}

// pollLoop runs poll now and then every interval, doubling the interval
// after each consecutive failure up to maxBackoff times. A monthly quota's
// plan may stretch the interval (each poll costing cost() calls); it is
// asked again at least every `every`, so that a reload or a new month
// applies without waiting out a long stretch. Called with e.mu held and
// the edge open, so Close's bg.Wait sees the Add.
func (e *Edge) pollLoop(ctx context.Context, every time.Duration, cost func() int, poll func(context.Context) error) {
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		failures := 0
		for {
			// In a cluster only the poller calls S-360; the others
			// tick on to take over when it goes.
			run, factor := e.poller()
			switch {
			case !run:
				failures = 0
			case poll(ctx) != nil:
				failures++
			default:
				failures = 0
			}
			for last := time.Now(); ; {
				wait := max(backoff(every, failures), e.pollInterval(every, cost()))*time.Duration(factor) - time.Since(last)
				if wait <= 0 {
					break
				}
				t := time.NewTimer(min(wait, every))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
	}()
}

// backoff is the delay before the next poll after failures consecutive
// failed ones.
func backoff(every time.Duration, failures int) time.Duration {
	f := 1
	for range failures {
		if f *= 2; f >= maxBackoff {
			return every * maxBackoff
		}
	}
	return every * time.Duration(f)
}

// watchCall makes one watcher call at background priority. Only an HTTP 200
// success envelope counts; anything else is an error. date is S-360's Date
// header, zero when absent or unreadable.
func (e *Edge) watchCall(ctx context.Context, call s360.Call, body []byte) (answer []byte, date time.Time, err error) {
	client := e.Client()
	if client == nil {
		return nil, time.Time{}, errNoClient
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout()+time.Minute)
	defer cancel()
	resp, err := client.Do(ctx, upstream.CallOf(call, "", PriorityWatch), body)
	e.stats.upstream(call.Class, resp, err)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("calling %s: %w", call.Name(), err)
	}
	if !s360.Success(resp.Status, resp.Body) {
		return nil, time.Time{}, fmt.Errorf("calling %s: S-360 answered HTTP %d with statusCode %q", call.Name(), resp.Status, s360.StatusCode(resp.Body))
	}
	date, _ = http.ParseTime(resp.Header.Get("Date"))
	return resp.Body, date, nil
}

var errNoClient = errors.New("no upstream client attached")

// pollFailed counts and logs a failed poll, unless the poll was stopped
// (reload with new settings, Close): that is no failure of S-360.
func (e *Edge) pollFailed(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	e.stats.pollFailures.Add(1)
	e.opts.Logger.Warn("S-360 poll failed; nothing changes until the next one", zap.String("method", method), zap.Error(err))
	return err
}

// pollSetup asks S-360 whether the catalog setup changed and, if so,
// starts a new catalog generation and refreshes the catalog ahead.
//
// The whole answer body counts (canonical, requestId dropped): its field
// name is not documented. The first poll ever has nothing to compare with:
// if the store holds catalog entries stored before the edge opened (a store
// from before the watcher, or one whose meta was lost) their age is
// unknown, so a new generation is started; otherwise the value is just
// recorded. Entries fetched since the edge opened are as new as the value:
// a bump for them would refetch, on every node of a cluster, a catalog
// fetched a moment ago.
func (e *Edge) pollSetup(ctx context.Context) error {
	e.watch.setupMu.Lock()
	defer e.watch.setupMu.Unlock()
	if e.Client() == nil {
		return nil // not attached yet: nothing to poll with
	}
	w := e.watchConfig()
	e.stats.setupPolls.Add(1)
	call := s360.Call{Service: "catalogService", Version: w.Version, Method: "getLastSetupUpdate", Class: s360.Uncached}
	body, _, err := e.watchCall(ctx, call, []byte("{}"))
	if err != nil {
		return e.pollFailed(ctx, call.Method, err)
	}
	e.keepFeedCopy(call, []byte("{}"), body, max(feedCopyTTL, w.SetupPoll))
	value, err := s360.Canonical(body)
	if err != nil {
		return e.pollFailed(ctx, call.Method, fmt.Errorf("reading getLastSetupUpdate: %w", err))
	}
	changed, err := e.setupValue(value)
	if err != nil {
		return e.pollFailed(ctx, call.Method, err)
	}
	e.stats.lastSetupPoll.Store(e.opts.Now().UnixNano())
	if changed {
		e.refreshAhead()
	}
	return nil
}

// keepFeedCopy stores a watcher's answer as the copy the website's
// identical call of the feed is answered with, so that the website never
// repeats the sidecar's poll upstream.
func (e *Edge) keepFeedCopy(call s360.Call, canonical, body []byte, ttl time.Duration) {
	_, inst := e.policy()
	e.put(call, s360.Key(inst, call, canonical), feedEntry(canonical, body, e.opts.Now(), ttl))
}

// hasCatalogBefore reports whether a catalog entry stored before t is cached.
func (e *Edge) hasCatalogBefore(t time.Time) bool {
	found := false
	err := e.store.Keys(cachestore.Catalog, func(_ string, ent *cachestore.Entry) bool {
		found = ent.StoredAt.Before(t)
		return !found
	})
	if err != nil {
		// Counted as no catalog: the value is recorded, the generation kept.
		e.opts.Logger.Warn("listing the cached catalog failed", zap.Error(err))
	}
	return found
}

// setupValue compares value, the setup poll's answer, with the last one
// and starts a new generation when it changed (see pollSetup for the
// first poll). It runs under genMu: a sync from the cluster, behind this
// change, cannot come between the comparison, the generation, the value
// and the change kept for the cluster.
func (e *Edge) setupValue(value []byte) (changed bool, err error) {
	e.genMu.Lock()
	defer e.genMu.Unlock()
	prev, err := e.store.GetMeta(metaSetupLast)
	switch {
	case errors.Is(err, cachestore.ErrNotFound):
		changed = e.hasCatalogBefore(e.opened)
	case err != nil:
		return false, err
	default:
		changed = !bytes.Equal(prev, value)
	}
	if changed {
		return true, e.newGeneration(prev, value)
	}
	if prev == nil {
		return false, e.store.PutMeta(metaSetupLast, value)
	}
	return false, nil
}

// newGeneration makes every catalog entry stale at once: entries carry the
// generation they were fetched in, and Serve compares it with the current
// one. The generation is the setup value's (GenerationOf), so that nodes
// of a cluster that saw the same change alone (Redis out of reach) agree
// on its number, and an entry fetched under a setup value is current
// wherever that value is. In a cluster the change is kept for the other
// nodes (the outbox), seen from prev. Called with genMu held.
//
// The generation is persisted before the value: a crash in between
// repeats the change at the next start, which gives the same number.
func (e *Edge) newGeneration(prev, value []byte) error {
	g := GenerationOf(value)
	if g != e.gen.Load() {
		if err := e.store.PutMeta(metaGeneration, binary.BigEndian.AppendUint64(nil, g)); err != nil {
			return fmt.Errorf("storing the catalog generation: %w", err)
		}
		e.gen.Store(g)
		e.stats.gens.Add(1)
		e.stats.lastSetupChange.Store(e.opts.Now().UnixNano())
		e.opts.Logger.Info("S-360 setup changed: new catalog generation", zap.Uint64("generation", g))
	}
	if err := e.store.PutMeta(metaSetupLast, value); err != nil {
		return err
	}
	e.enqueue(Event{Kind: EventGeneration, Generation: g, Setup: value, From: prev}, false)
	return nil
}

// GenerationOf is the catalog generation of a setup value (the canonical
// getLastSetupUpdate answer): 53 bits of its SHA-256, never 0 (no
// generation), exact in JSON numbers and metrics.
func GenerationOf(setup []byte) uint64 {
	h := sha256.Sum256(setup)
	return max(binary.BigEndian.Uint64(h[:8])&(1<<53-1), 1)
}

// refreshAhead refetches, one at a time, the cached catalog entries of an
// older generation, so that buyers get hits rather than wait for S-360.
// Until an entry is refreshed, Serve answers with it (detail=generation).
func (e *Edge) refreshAhead() {
	gen := e.gen.Load()
	e.refreshCatalog(func(ent *cachestore.Entry) bool { return ent.Generation != gen })
}

// RefreshPurged refetches, one at a time and each as soon as its floor
// allows, the catalog entries a soft purge marked; until then Serve answers
// with them (detail=purged). Availability entries, far more numerous, are
// refreshed on their next request.
func (e *Edge) RefreshPurged() {
	e.refreshCatalog(func(ent *cachestore.Entry) bool { return slices.Contains(ent.Tags, cachestore.PurgedTag) })
}

func (e *Edge) refreshCatalog(stale func(*cachestore.Entry) bool) {
	e.background(func(ctx context.Context) {
		var keys []string
		err := e.store.Keys(cachestore.Catalog, func(key string, ent *cachestore.Entry) bool {
			if stale(ent) {
				keys = append(keys, key)
			}
			return true
		})
		if err != nil {
			e.opts.Logger.Warn("listing catalog entries to refresh failed", zap.Error(err))
		}
		for _, k := range keys {
			if ctx.Err() != nil {
				return
			}
			e.refreshKey(ctx, k, 0)
		}
	})
}

// refreshKey refetches one stale key (an older catalog generation, a soft
// purge, an invalidation) through the coalescing fetch, so it shares the call with a buyer's
// miss and respects the floors. A floor is waited out on a timer; a failure
// is retried at the setup poll interval.
func (e *Edge) refreshKey(ctx context.Context, key string, failures int) {
	call, ok := e.parseKey(key)
	if !ok {
		return // not ours to refresh (another institution's key on this directory)
	}
	ent, err := e.store.Get(key)
	if err != nil {
		if !errors.Is(err, cachestore.ErrNotFound) {
			e.opts.Logger.Warn("reading an entry to refresh failed", zap.String("method", call.Name()), zap.Error(err))
		}
		return // gone
	}
	if ent.Canonical == nil {
		return // stored before entries kept their canonical body: it ages out
	}
	policy, _ := e.policy()
	if fresh, _ := e.freshness(policy, call, ent, e.opts.Now()); fresh {
		return // a buyer's request already refreshed it
	}
	f, _, err := e.fetch(ctx, e.Client(), &flight{call: call, key: key, canonical: ent.Canonical, p: PriorityBackground}, 0)
	if err != nil {
		return // closing
	}
	var fe *FloorError
	switch {
	case f.hit: // another flight refreshed it
	case f.entry != nil:
		e.stats.refreshes.Add(1)
	case errors.As(f.err, &fe):
		e.retryRefresh(key, fe.Wait, failures)
	case failures+1 < maxRefreshFailures:
		e.retryRefresh(key, max(e.watchConfig().SetupPoll, time.Second), failures+1)
	}
}

// retrying says whether a refresh of key waits on a timer (retryRefresh).
func (e *Edge) retrying(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.watch.retries[key] != nil
}

func (e *Edge) retryRefresh(key string, after time.Duration, failures int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if e.watch.retries == nil {
		e.watch.retries = map[string]*time.Timer{}
	}
	if old := e.watch.retries[key]; old != nil {
		old.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(after, func() {
		e.mu.Lock()
		if e.watch.retries[key] == t {
			delete(e.watch.retries, key)
		}
		e.mu.Unlock()
		e.background(func(ctx context.Context) { e.refreshKey(ctx, key, failures) })
	})
	e.watch.retries[key] = t
}

// parseKey recovers the call of one of this edge's cacheable keys
// (s360.Key); ok is false for another institution's key. The canonical
// body is in the entry.
func (e *Edge) parseKey(key string) (s360.Call, bool) {
	_, own := e.policy()
	inst, call, ok := s360.ParseKey(key)
	if !ok || inst != own || !call.Class.Cacheable() {
		return s360.Call{}, false
	}
	return call, true
}

// pollUpdates asks S-360 which products of the cached catalog had their
// availability changed since the previous successful poll, and
// invalidates the availability entries tagged with them. The reference
// date advances only when every batch succeeded, so that no change is
// missed.
func (e *Edge) pollUpdates(ctx context.Context) error {
	e.watch.updatesMu.Lock()
	defer e.watch.updatesMu.Unlock()
	if e.Client() == nil {
		return nil
	}
	const method = "getUpdatedAvailabilities"
	w := e.watchConfig()
	start := e.opts.Now()
	ref, err := e.updatesReference(start)
	if err != nil {
		return e.pollFailed(ctx, method, err)
	}
	products, pos := e.scanCatalog()
	if len(products) == 0 {
		return nil // no catalog cached yet: no product ids to ask about
	}
	e.stats.updatesPolls.Add(1)
	if pos == "" {
		if pos, err = e.fetchPOS(ctx, w.Version); err != nil {
			return e.pollFailed(ctx, method, err)
		}
	}
	call := s360.Call{Service: "availabilityService", Version: w.Version, Method: method, Class: s360.Uncached}
	ids := make([]json.RawMessage, 0, len(products))
	for id := range products {
		ids = append(ids, json.RawMessage(id))
	}
	slices.SortFunc(ids, func(a, b json.RawMessage) int { return bytes.Compare(a, b) })
	e.quota.updatesCalls.Store(int64((len(ids) + w.BatchSize - 1) / w.BatchSize))
	// The next reference date is S-360's clock at this poll's start: the
	// Date of its first answer less the time the call took, so that a
	// skewed local clock cannot hide changes.
	next := start
	// What this poll purged goes to the other nodes, with the next
	// reference date when every batch succeeded.
	var purged []string
	var reference string
	tier := false // a shared tier's invalidation failed: the outbox does it again
	defer func() {
		if len(purged) > 0 {
			slices.Sort(purged)
			e.enqueue(Event{Kind: EventInvalidate, Tags: slices.Compact(purged), Reference: reference}, tier)
		}
	}()
	for i, batch := range slices.Collect(slices.Chunk(ids, w.BatchSize)) {
		body, err := json.Marshal(map[string]any{
			"pointOfSalesId": json.RawMessage(pos),
			"productIds":     batch,
			"referenceDate":  ref.UTC().Format(refDateLayout),
		})
		if err != nil {
			return e.pollFailed(ctx, method, fmt.Errorf("encoding the request: %w", err))
		}
		answer, date, err := e.watchCall(ctx, call, body)
		if err != nil {
			return e.pollFailed(ctx, method, err)
		}
		if i == 0 {
			if date.IsZero() {
				e.opts.Logger.Debug("S-360 sent no readable Date header; the next referenceDate comes from the local clock")
			} else {
				next = date.Add(-e.opts.Now().Sub(start))
			}
		}
		changed := gjson.GetBytes(answer, "availabilityUpdateData.#.productId").Array()
		if len(changed) == 0 {
			continue
		}
		tags := []string{s360.UntaggedTag}
		for _, v := range changed {
			if id := v.String(); id != "" { // the digits, whether S-360 sent a number or a string
				tags = append(tags, productTags(id, products[id])...)
			}
		}
		shared, err := e.invalidate(ctx, tags)
		tier = tier || !shared
		if err != nil {
			return e.pollFailed(ctx, method, err)
		}
		purged = append(purged, tags...)
	}
	reference = next.UTC().Format(refDateLayout)
	e.refMu.Lock()
	err = e.store.PutMeta(metaUpdatesRef, []byte(reference))
	e.refMu.Unlock()
	if err != nil {
		reference = ""
		return e.pollFailed(ctx, method, err)
	}
	e.stats.lastUpdatesPoll.Store(start.UnixNano())
	return nil
}

// invalidate invalidates the availability entries tagged with tags: drops
// them from the shared tier first in a cluster, so that no node refills its
// store from it, then marks them in the local store (invalidateLocal).
// shared is false when the shared tier's part failed.
func (e *Edge) invalidate(ctx context.Context, tags []string) (shared bool, err error) {
	shared = true
	if e.opts.Shared != nil {
		if err := e.opts.Shared.Invalidate(ctx, tags); err != nil {
			e.sharedFailed("invalidating the shared tier", err)
			shared = false
		}
	}
	return shared, e.invalidateLocal(tags)
}

// updatesReference is the referenceDate of this poll: the start of the
// previous successful one, less updatesOverlap. The first poll ever starts
// the clock at now, persisted at once, so that even polls that fail or
// find no catalog yet count from there.
func (e *Edge) updatesReference(now time.Time) (time.Time, error) {
	b, err := e.store.GetMeta(metaUpdatesRef)
	if err == nil {
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err == nil {
			return t.Add(-updatesOverlap), nil
		}
		e.opts.Logger.Warn("the stored reference date is unreadable; starting again from now", zap.Error(err))
	} else if !errors.Is(err, cachestore.ErrNotFound) {
		return time.Time{}, err
	}
	if err := e.store.PutMeta(metaUpdatesRef, []byte(now.UTC().Format(refDateLayout))); err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// scanCatalog reads the cached catalog: for each product id (a JSON
// number, as written by S-360) the tags of the availability entries that
// concern it, and the point of sales id from a cached getPOSConfig.
// Availability requests name products, events (S-360's examples use the
// product id as event id; the event's own id is tagged too) or
// performances; see Tags.
func (e *Edge) scanCatalog() (products map[string][]string, pos string) {
	products = map[string][]string{}
	err := e.store.Keys(cachestore.Catalog, func(key string, ent *cachestore.Entry) bool {
		call, ok := e.parseKey(key)
		if !ok {
			return true
		}
		switch call.Method {
		case "getPOSConfig":
			if v := gjson.GetBytes(ent.Body, "posConfigData.posId"); v.Type == gjson.Number {
				pos = v.Raw
			}
		case "getCatalogDetailed":
			gjson.GetBytes(ent.Body, "catalogData.seasons").ForEach(func(_, season gjson.Result) bool {
				season.Get("products").ForEach(func(_, p gjson.Result) bool {
					id := p.Get("id")
					if id.Type != gjson.Number {
						return true
					}
					tags := append(products[id.Raw], "product:"+id.Raw, "event:"+id.Raw)
					if ev := p.Get("event.id"); ev.Type == gjson.Number {
						tags = append(tags, "event:"+ev.Raw)
					}
					for _, perf := range p.Get("event.performances.#.id").Array() {
						if perf.Type == gjson.Number {
							tags = append(tags, "performance:"+perf.Raw)
						}
					}
					products[id.Raw] = tags
					return true
				})
				return true
			})
		}
		return true
	})
	if err != nil {
		e.opts.Logger.Warn("reading the cached catalog failed", zap.Error(err))
	}
	return products, pos
}

// fetchPOS gets the point of sales id when no getPOSConfig is cached; the
// answer is stored, so this happens once per catalog lifetime. It is the
// watcher's call: a monthly quota's plan never refuses it.
func (e *Edge) fetchPOS(ctx context.Context, version string) (string, error) {
	_, inst := e.policy()
	call := s360.Call{Service: "catalogService", Version: version, Method: "getPOSConfig", Class: s360.Catalog}
	body := []byte("{}")
	f, _, err := e.fetch(ctx, e.Client(), &flight{call: call, key: s360.Key(inst, call, body), canonical: body, p: PriorityWatch}, 0)
	switch {
	case err != nil:
		return "", err
	case f.err != nil:
		return "", fmt.Errorf("getting the point of sales: %w", f.err)
	case f.entry == nil:
		return "", fmt.Errorf("getting the point of sales: S-360 answered HTTP %d with statusCode %q", f.resp.Status, s360.StatusCode(f.resp.Body))
	}
	v := gjson.GetBytes(f.entry.Body, "posConfigData.posId")
	if v.Type != gjson.Number {
		return "", errors.New("getting the point of sales: getPOSConfig has no posConfigData.posId")
	}
	return v.Raw, nil
}

// productTags are the tags of one changed product's availability entries.
func productTags(id string, tags []string) []string {
	if tags == nil { // not in the cached catalog (any more): its direct tags still work
		tags = []string{"product:" + id, "event:" + id}
	}
	return tags
}

// invalidateLocal marks the entries tagged with tags invalidated: each
// keeps its answer, served (detail=invalidated) until it is refreshed,
// when its key's floor allows (Serve). The fetches in progress for them
// are marked first: an answer asked for before the change, stored after
// this look at the store, is kept stale too.
func (e *Edge) invalidateLocal(tags []string) error {
	e.markAsking(cachestore.InvalidatedTag, func(a *asking) bool { return taggedAny(a, tags) })
	tags = slices.Clone(tags)
	slices.Sort(tags)
	for _, tag := range slices.Compact(tags) {
		n, err := e.store.InvalidateTag(tag)
		if err != nil {
			return err
		}
		e.stats.invalidated.Add(uint64(n))
	}
	e.liveChanged(tags)
	return nil
}
