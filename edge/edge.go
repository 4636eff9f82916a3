// Package edge is the long-lived heart of s360edge for one S-360
// institution: the Badger store, the upstream gate (rate budget), the
// singleflight group that coalesces identical misses, and the freshness
// policy. The Caddy handler classifies a request and calls Serve.
//
// It imports nothing of Caddy; caddymodule keeps one Edge per storage
// directory in a caddy.UsagePool so that it survives config reloads.
package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// Policy is the freshness policy. Durations are per "service/method"
// pattern ("service/*" allowed; the exact name wins).
type Policy struct {
	// MaxAge is how long an answer is fresh, by pattern, over the
	// defaults of s360.Methods and s360.Services (s360.DefaultMaxAge).
	MaxAge map[string]time.Duration
	// StaleWhileRevalidate: a stale entry this much past its freshness is
	// served at once while one background call refreshes it. Default 1h.
	StaleWhileRevalidate time.Duration
	// StaleIfError: a stale entry this much past its freshness is served
	// when the upstream fails (5xx, timeout, 509/429, in_progress) or the
	// budget is spent. Default 24h.
	StaleIfError time.Duration
	// StaleTimeout: with a stale entry at hand, a request waits this long
	// for the upstream before it gets the stale entry; the fetch goes on
	// in the background. Default 2s.
	StaleTimeout time.Duration
}

// Policy's defaults.
const (
	DefaultStaleWhileRevalidate = time.Hour
	DefaultStaleIfError         = 24 * time.Hour
	DefaultStaleTimeout         = 2 * time.Second
)

func (p Policy) maxAge(c s360.Call) time.Duration {
	if d, ok := p.MaxAge[c.Name()]; ok {
		return d
	}
	if d, ok := p.MaxAge[c.Service+"/*"]; ok {
		return d
	}
	return s360.DefaultMaxAge(c)
}

// Options configures an Edge.
type Options struct {
	Dir         string
	Institution string // part of every cache key
	Policy      Policy
	Gate        Gate
	// Shared is the cluster's shared state; nil for a single node.
	Shared   Shared
	MaxBytes int64 // store size bound; cachestore default when 0
	Waits    Waits
	// Timeout bounds a fetch that no buyer is waiting for any more.
	Timeout time.Duration
	Now     func() time.Time
	Logger  *zap.Logger
}

// Edge serves cacheable S-360 calls from the store, coalescing misses.
type Edge struct {
	opts  Options
	store *cachestore.Store
	// flights are the upstream calls in progress, by key; refreshing
	// holds the keys whose stale-hit refresh is under way. Both are
	// guarded by fmu, which may be taken before mu, never after.
	fmu        sync.Mutex
	flights    map[string]*flight
	refreshing map[string]bool
	gen        atomic.Uint64
	opened     time.Time // when Open ran: catalog entries stored before are of unknown age
	// genMu orders the changes of gen: the setup watcher's bumps and, in
	// a cluster, the adoption of the cluster's generation.
	genMu sync.Mutex
	// publishFailing is set while publishing a purge to the cluster
	// fails, so that it is logged once.
	publishFailing atomic.Bool
	// asking are the fetches in progress (marks.go): a purge or an
	// invalidation marks those it concerns, whose answers are then kept
	// stale. Guarded by amu, which is taken alone.
	amu    sync.Mutex
	asking map[*asking]struct{}
	// outbox keeps the changes this node found until the cluster has them.
	outbox outbox
	// refMu orders the writes of the updates poll's reference date.
	refMu sync.Mutex
	// sharedDown is when the shared state began to fail (unix ns), 0
	// while it answers: see retryLease.
	sharedDown atomic.Int64
	stats      stats
	// waiting counts callers blocked on a fetch (coalesced ones included).
	waiting atomic.Int64
	watch   watchState
	history history // budget use per minute, for the status page
	quota   quotaState
	live    liveState // live.go: the live streams told of changes

	mu        sync.Mutex
	clients   []*upstream.Client // attached handlers' clients, newest last
	bg        sync.WaitGroup     // background refreshes
	ctx       context.Context    // the edge's work; canceled by Close
	cancel    context.CancelFunc
	closeErr  error
	closed    bool
	closeOnce sync.Once
}

const metaGeneration = "generation"

// Open opens the store in opts.Dir and restores the catalog generation;
// in a cluster it subscribes to the other nodes' changes (applyEvent).
func Open(opts Options) (*Edge, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.Timeout, opts.Waits, opts.Policy = withDefaults(opts.Timeout, opts.Waits, opts.Policy)
	store, err := cachestore.Open(cachestore.Options{Dir: opts.Dir, MaxBytes: opts.MaxBytes, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	e := &Edge{opts: opts, store: store, flights: map[string]*flight{}, refreshing: map[string]bool{}, asking: map[*asking]struct{}{}, opened: opts.Now()}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	_, shared := opts.Shared.(QuotaCounter)
	e.quota.month = budget.NewMonth(shared)
	if b, err := store.GetMeta(metaGeneration); err == nil && len(b) == 8 {
		e.gen.Store(binary.BigEndian.Uint64(b))
	} else if err != nil && !errors.Is(err, cachestore.ErrNotFound) {
		store.Close()
		return nil, fmt.Errorf("reading the catalog generation: %w", err)
	}
	if err := e.restoreFloors(); err != nil {
		store.Close()
		return nil, err
	}
	e.keepLearnedLimit()
	e.keepHistory()
	if opts.Shared != nil {
		if err := e.openOutbox(); err != nil {
			e.cancel()
			store.Close()
			return nil, err
		}
		opts.Shared.Subscribe(e.applyEvent)
	}
	return e, nil
}

// Store gives the admin API and watchers access to the store.
func (e *Edge) Store() *cachestore.Store { return e.store }

// Generation is the current catalog generation.
func (e *Edge) Generation() uint64 { return e.gen.Load() }

func (e *Edge) policy() (Policy, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.opts.Policy, e.opts.Institution
}

// Attach registers a handler's client; background work uses the newest
// attached client. Detach undoes it when the handler is cleaned up.
func (e *Edge) Attach(c *upstream.Client) {
	e.mu.Lock()
	e.clients = append(e.clients, c)
	e.mu.Unlock()
}

func (e *Edge) Detach(c *upstream.Client) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, x := range e.clients {
		if x == c {
			e.clients = append(e.clients[:i], e.clients[i+1:]...)
			return
		}
	}
}

// Client is the newest attached client, or nil.
func (e *Edge) Client() *upstream.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.clients) == 0 {
		return nil
	}
	return e.clients[len(e.clients)-1]
}

// Close stops the watchers, waits for background work and closes the store.
func (e *Edge) Close() error {
	// Once makes a concurrent second Close wait for the first and read
	// closeErr after it was written.
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.cancel()
		e.stopWatchLocked()
		e.mu.Unlock()
		e.bg.Wait()
		e.closeErr = e.store.Close()
	})
	return e.closeErr
}

// Context is the edge's own context, canceled when it closes: the parent
// of work it owns, such as its clients' token fetches.
func (e *Edge) Context() context.Context { return e.ctx }

// background runs fn as a refresh owned by the edge, under its context,
// unless it is closing.
func (e *Edge) background(fn func(ctx context.Context)) {
	if !e.hold() {
		return
	}
	go func() {
		defer e.bg.Done()
		fn(e.ctx)
	}()
}

// hold counts work that Close must wait for; false when closing. The
// caller calls e.bg.Done when the work is over.
func (e *Edge) hold() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.bg.Add(1)
	return true
}
