package budget

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Priority orders the callers competing for upstream slots.
type Priority int

// The queue order is also the order of allowances, but for Queued: each
// other priority may use at most what the one before it may. Queued may
// use the order reserve but not the watch reserve, so a Watch waiter may
// be served while a Queued one waits for the window (dispatchLocked).
const (
	Order      Priority = iota // order creation: a buyer is paying
	Queued                     // an order admitted from the order queue: like Order, but never the watch reserve, and held by pauses
	Watch                      // the watchers' polls: they alone share the watch reserve with orders
	Foreground                 // a website request that missed the cache
	Background                 // refresh-ahead: may not use any reserve
	numPriorities
)

var priorityNames = [...]string{"order", "queued", "watch", "foreground", "background"}

func (p Priority) String() string {
	if p >= 0 && p < numPriorities {
		return priorityNames[p]
	}
	return fmt.Sprintf("priority(%d)", int(p))
}

// Defaults, applied to zero fields of Config. 150 per minute stays below
// S-360's documented 180 with headroom for other clients of the institution.
const (
	DefaultCalls        = 150
	DefaultWindow       = time.Minute
	DefaultMaxPause     = 10 * time.Minute
	DefaultProbeTimeout = 30 * time.Second
)

// Config configures a Budget.
type Config struct {
	// Calls is the most calls granted in any interval of length Window.
	// Default DefaultCalls.
	Calls int
	// Window is the length of the sliding window. Default DefaultWindow.
	Window time.Duration
	// Reserve is the number of slots of each window Background may not
	// use. 0 means Calls/10, at least 1 when Calls >= 2; negative means no
	// reserve. It is capped at Calls-1 so Background is never shut out
	// entirely.
	Reserve int
	// OrderReserve is the number of slots of each window only orders may
	// use, so that a storm of buyers' misses cannot keep a paying buyer's
	// order out. 0 means Calls/20, at least 1 when Calls >= 3; negative
	// means none. Background is kept out of it too.
	OrderReserve int
	// WatchReserve is the number of slots of each window that only the
	// watchers' polls (Watch) and orders may use, so that no flood of
	// misses can stop the sidecar from learning what changed. 0 means
	// Calls/50, at least min(2, Calls/5); negative means none.
	WatchReserve int
	// ClientQuota says how clients (Call.Client) share the budget; only
	// their Foreground calls count: orders, watchers and background work
	// are outside. 0 (the default): fairly, max-min (see quota.go): a
	// client may use whatever the others leave, and while clients compete
	// each active one is sure of an equal share of the Foreground
	// allowance. Positive: fairly, and besides a hard cap of that many
	// calls per ClientWindow for each client. Negative: neither.
	ClientQuota int
	// ClientWindow is the hard cap's window. Default Window. Fair shares
	// are always of Window.
	ClientWindow time.Duration
	// MaxClients bounds the clients tracked; beyond it, new clients
	// count as one. Default DefaultMaxClients.
	MaxClients int
	// FixedLimit turns the adaptive limit off: Calls is always the limit.
	// Otherwise an institution-scope pushback lowers the effective limit
	// to 0.9 × the calls in the window (never below Calls/10, at least
	// 1), and each full window without a pushback raises it by
	// AdaptiveStep, up to Calls.
	FixedLimit bool
	// AdaptiveStep is the increase per window without pushback. Default 1.
	AdaptiveStep int
	// Floors maps "service/method" or "service/*" to the minimum interval
	// between upstream calls of one cache key. Each entry replaces the
	// default of the same pattern (DefaultFloors); the exact name wins over
	// the wildcard.
	Floors map[string]time.Duration
	// FirstPause is the pause after a pushback without Retry-After; it
	// doubles on each further pushback until a Success. Default Window:
	// S-360 asks clients to stop until the window has passed.
	FirstPause time.Duration
	// MaxPause caps every pause, Retry-After included. Default
	// DefaultMaxPause.
	MaxPause time.Duration
	// ProbeTimeout is how long the single probe after a pause may stay
	// unanswered (no Success, no Pushback: the call failed some other way)
	// before another probe is let through. Default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Logger gets one WARN line per pause, the first time a client
	// reaches its quota and the first time one is held to its fair share,
	// one INFO line per limit adjustment. Default: none.
	Logger *zap.Logger
}

// DefaultMaxClients bounds the memory of fair sharing and of the client
// quota: a few hundred kilobytes, whatever the number of addresses.
const DefaultMaxClients = 10000

func (c Config) withDefaults() Config {
	if c.Calls <= 0 {
		c.Calls = DefaultCalls
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	c.Reserve = reserveOf(c.Reserve, c.Calls, 10, 2)
	c.OrderReserve = reserveOf(c.OrderReserve, c.Calls, 20, 3)
	switch {
	case c.WatchReserve < 0:
		c.WatchReserve = 0
	case c.WatchReserve == 0:
		c.WatchReserve = max(c.Calls/50, min(2, c.Calls/5))
	}
	c.ClientQuota = max(c.ClientQuota, -1)
	if c.ClientWindow <= 0 {
		c.ClientWindow = c.Window
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.AdaptiveStep <= 0 {
		c.AdaptiveStep = 1
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	c.OrderReserve, c.WatchReserve, c.Reserve = capReserves(c.Calls, c.OrderReserve, c.WatchReserve, c.Reserve)
	if c.MaxPause <= 0 {
		c.MaxPause = DefaultMaxPause
	}
	if c.FirstPause <= 0 {
		c.FirstPause = c.Window
	}
	c.FirstPause = min(c.FirstPause, c.MaxPause)
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	return c
}

// reserveOf is a reserve as configured: negative is none, 0 the default
// of calls/div, at least 1 once there are from calls; else as given.
func reserveOf(v, calls, div, from int) int {
	switch {
	case v < 0:
		return 0
	case v == 0 && calls/div < 1 && calls >= from:
		return 1
	case v == 0:
		return calls / div
	}
	return v
}

// ErrPaused says S-360 pushed back and the pause is still in force.
var ErrPaused = errors.New("upstream asked to pause")

// ErrLimited says the configured rate limit has no slot free in time.
var ErrLimited = errors.New("upstream rate limit reached")

// ErrClientQuota says the calling client has caused its quota of upstream
// calls in the quota's window, or, while clients compete, has used its
// fair share of the budget and the free slots are owed to the others.
var ErrClientQuota = errors.New("client quota of upstream calls reached")

// WaitError is returned by Acquire when no slot was granted. It matches
// ErrPaused or ErrLimited (why there was no slot) and, when the caller's
// context ended, the context's error.
type WaitError struct {
	Reason  error         // ErrPaused, ErrLimited or ErrClientQuota; nil when the context had ended before Acquire
	Cause   error         // ctx.Err() when the context ended; nil when Acquire gave up at once
	RetryIn time.Duration // when a slot frees or the pause ends, for Retry-After
	Scope   Scope         // with ErrPaused: the scope of the pause in force
}

func (e *WaitError) Error() string {
	s := "waiting for an upstream slot"
	if e.Reason != nil {
		s += fmt.Sprintf(": %v (retry in %v)", e.Reason, e.RetryIn.Round(time.Millisecond))
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *WaitError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Reason, e.Cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Stats is a snapshot of a Budget.
type Stats struct {
	Limit          int           `json:"limit"`           // Config.Calls: the configured limit, the ceiling
	EffectiveLimit int           `json:"effective_limit"` // the limit in force: Limit, or lower while the adaptive limit has learned less
	Adaptive       bool          `json:"adaptive"`        // the limit adapts to S-360's pushbacks
	LastAdjustment *Adjustment   `json:"last_adjustment,omitempty"`
	Adjustments    uint64        `json:"adjustments"`              // changes of the effective limit since New
	Window         time.Duration `json:"window"`                   // Config.Window
	Reserve        int           `json:"reserve"`                  // slots Background may not use (beyond the other reserves), scaled to the effective limit
	OrderReserve   int           `json:"order_reserve"`            // slots only orders may use
	WatchReserve   int           `json:"watch_reserve"`            // slots only the watchers' polls and orders may use
	Calls          int           `json:"calls"`                    // calls granted in the window ending now
	Remaining      int           `json:"remaining"`                // EffectiveLimit - Calls; a pause is in PausedUntil
	Waiting        int           `json:"waiting"`                  // callers waiting in Acquire now: queued, or for their method's learned limit
	Granted        uint64        `json:"granted"`                  // slots granted since New (handed-back ones not counted)
	Waits          uint64        `json:"waits"`                    // Acquire calls that had to queue
	Rejections     uint64        `json:"rejections"`               // TryAcquire refusals and Acquire failures
	Pauses         uint64        `json:"pauses"`                   // institution pauses started by a pushback (extensions not counted)
	PausesByScope  ScopeCounts   `json:"pauses_by_scope"`          // pauses started, by scope
	PausedKeys     int           `json:"paused_keys"`              // cache keys paused now
	PausedMethods  []string      `json:"paused_methods,omitempty"` // methods paused now
	ClientQuota    int           `json:"client_quota"`             // the hard cap: upstream calls one client may cause per ClientWindow, scaled to the effective limit; 0 when none
	ClientWindow   time.Duration `json:"client_window"`
	FairShare      int           `json:"fair_share"`            // calls per Window each active client is sure of now (the Foreground allowance / active clients); 0 when fair sharing is off
	Clients        int           `json:"clients"`               // active clients (fair sharing), or tracked for the quota
	QuotaRefusals  uint64        `json:"quota_refusals"`        // calls refused because their client had reached its quota or, while clients compete, its fair share
	Pushbacks      uint64        `json:"pushbacks"`             // Pushback calls (upstream 509/429 answers)
	PausedUntil    time.Time     `json:"paused_until,omitzero"` // end of the pause in force; zero when not paused
	Probing        bool          `json:"probing"`               // after a pause, one call at a time until a Success
	FloorKeys      int           `json:"floor_keys"`            // cache keys remembered for floors
	// MethodLimits are the limits learned for methods S-360 refused
	// (adaptive.go), by method.
	MethodLimits []MethodLimit `json:"method_limits,omitempty"`
}

// Budget is the rate limiter of one S-360 institution. It is safe for
// concurrent use and lives as long as the edge, across config reloads.
type Budget struct {
	mu      sync.Mutex
	cfg     Config
	lim     limits        // cfg's limit and reserves scaled to the effective limit
	horizon time.Duration // longest Window configured: how far back log reaches
	log     []time.Time   // grant times, oldest first, from head on
	head    int
	queues  [numPriorities]list.List
	waiting int

	pausedUntil time.Time
	backoff     time.Duration // last pause without Retry-After; 0 after a Success
	probing     bool          // after a pause: one call until Success or Pushback
	probeUntil  time.Time     // the probe's lease; zero when none is out

	// One timer, armed for the next instant the first waiter could be
	// served; gen tells a stale callback from the current one.
	timer    *time.Timer
	timerAt  time.Time
	timerGen uint64

	granted, waits, rejections, pauses, pushbacks uint64
	onGrant                                       func(at time.Time, n int) // see OnGrant

	adaptive adaptive
	scopes   scopes
	quota    quota
	fair     fair

	// Floors have their own lock: they are consulted on cache paths that
	// never contend for slots.
	fmu       sync.Mutex
	floors    map[string]time.Duration
	fetched   map[string]fetch
	nextPrune time.Time
}

type waiter struct {
	p       Priority
	method  string    // Call.Method, for its learned limit
	bounced time.Time // set instead of granted when its method had used its learned limit: its next slot
	client  string    // quota reservation to give back if not granted
	quotaAt time.Time
	fc      *fairClient // its client, for fair sharing; nil when outside
	err     error       // why it was refused, when ready without a grant
	elem    *list.Element
	ready   chan struct{} // closed when granted
	granted bool
	at      time.Time // grant time, to refund it
	lease   time.Time // the probe lease it was granted, if it was the probe
}

// New returns a budget with cfg's limits (zero fields take the defaults).
func New(cfg Config) *Budget {
	cfg = cfg.withDefaults()
	b := &Budget{
		cfg:     cfg,
		horizon: cfg.Window,
		floors:  mergeFloors(cfg.Floors),
		fetched: make(map[string]fetch),
	}
	b.adaptive.eff = cfg.Calls
	b.adaptive.grownAt = time.Now()
	b.relimitLocked()
	return b
}

// Update applies a reloaded config. The call history, the pause and the
// floors' memory are kept: lowering Calls below the calls already made in
// the window makes callers wait until enough of them age out. A longer
// Window counts the calls the previous window still held, not older ones.
func (b *Budget) Update(cfg Config) {
	if cfg.Logger == nil {
		cfg.Logger = b.cfg.Logger
	}
	cfg = cfg.withDefaults()
	floors := mergeFloors(cfg.Floors)

	b.fmu.Lock()
	b.floors = floors
	b.fmu.Unlock()

	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	// A limit learned below the old ceiling stays learned; otherwise the
	// new ceiling applies.
	if cfg.FixedLimit || b.adaptive.eff >= b.cfg.Calls {
		b.adaptive.eff = cfg.Calls
	}
	b.adaptive.eff = min(b.adaptive.eff, cfg.Calls)
	b.cfg = cfg
	// A longer window must still see the calls of the old one.
	b.horizon = max(b.horizon, cfg.Window)
	b.relimitLocked()
	b.updateMethodsLocked()
	if !b.fairOn() {
		b.resetFairLocked()
	}
	if limit := now.Add(cfg.MaxPause); b.pausedUntil.After(limit) {
		b.pausedUntil = limit
	}
	b.backoff = min(b.backoff, cfg.MaxPause)
	b.dispatchLocked(now)
}

// TryAcquire takes a slot if one is free for p now, without waiting. When
// it is not, retryIn is when one may be: a slot for p frees, the pause
// ends, or the probe's lease runs out.
func (b *Budget) TryAcquire(p Priority) (ok bool, retryIn time.Duration) {
	p = p.valid()
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.adaptLocked(now)
	if b.waiting > 0 {
		b.dispatchLocked(now) // serve waiters whose time came before the timer fired
	}
	if !b.aheadLocked(p) && b.canGrantLocked(p, now) {
		b.grantLocked(now, p, "")
		return true, 0
	}
	b.rejections++
	return false, b.retryInLocked(p, now, true)
}

// Acquire waits for a slot for p. The context's deadline is the caller's
// longest wait: when the pause or the window cannot free a slot before it,
// Acquire gives up at once instead of holding the caller. Errors are
// *WaitError, matching ErrPaused or ErrLimited and the context's error;
// RetryIn is for a Retry-After header. Waiters are served by priority,
// FIFO within one.
func (b *Budget) Acquire(ctx context.Context, p Priority) error {
	return b.AcquireCall(ctx, Call{Priority: p})
}

// Call describes an upstream call to the budget, so that pauses and the
// client quota apply to what it is and who caused it.
type Call struct {
	Priority Priority
	Method   string // "service/method"; "" when unknown
	Key      string // the cache key; "" for calls that are not cached
	Client   string // who caused the call (client IP); "" for the sidecar's own calls
}

// AcquireCall is Acquire for c: a call whose key or method is paused, or
// whose client has spent its quota, is refused at once (it would not get
// a slot in time, and must not hold up other methods' callers). A call of
// a method that has used the limit learned for it waits for the method's
// next slot outside the queue, or is refused at once when that comes
// after ctx's deadline.
func (b *Budget) AcquireCall(ctx context.Context, c Call) error {
	for {
		err := b.acquireCall(ctx, c)
		mw, ok := err.(*methodWait)
		if !ok {
			return err
		}
		if err := b.awaitMethodSlot(ctx, mw.at); err != nil {
			return err
		}
	}
}

func (b *Budget) acquireCall(ctx context.Context, c Call) error {
	p := c.Priority.valid()
	b.mu.Lock()
	now := time.Now()
	if err := ctx.Err(); err != nil {
		// Not granted even if a slot is free: the call would not be made.
		b.rejections++
		b.mu.Unlock()
		return &WaitError{Cause: err}
	}
	b.adaptLocked(now)
	if until, scope := b.pausedLocked(c, now); scope != ScopeCall {
		b.rejections++
		b.mu.Unlock()
		return &WaitError{Reason: ErrPaused, RetryIn: until.Sub(now), Scope: scope}
	}
	if err := b.methodRoomLocked(ctx, c.Method, now); err != nil {
		b.mu.Unlock()
		return err
	}
	fc := b.fairClientLocked(c, p, now)
	client := b.quotaClientLocked(c, p, now)
	if client != "" {
		if retry, ok := b.reserveQuotaLocked(client, now); !ok {
			err := b.quotaRefusedLocked(retry)
			b.mu.Unlock()
			return err
		}
	}
	if b.waiting > 0 {
		b.dispatchLocked(now)
	}
	if fc != nil {
		if retry, held := b.heldLocked(fc, now); held {
			b.unreserveQuotaLocked(client, now)
			err := b.quotaRefusedLocked(retry)
			b.mu.Unlock()
			return err
		}
	}
	if !b.aheadLocked(p) && b.canGrantLocked(p, now) {
		b.grantLocked(now, p, c.Method)
		b.fairGrantLocked(fc, now)
		b.mu.Unlock()
		return nil
	}
	// Only firm obstacles (pause, full window) make waiting pointless; a
	// probe may answer any moment.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < b.retryInLocked(p, now, false) {
		b.rejections++
		b.unreserveQuotaLocked(client, now)
		e := b.errLocked(p, now, nil)
		b.mu.Unlock()
		return e
	}
	w := &waiter{p: p, method: c.Method, client: client, quotaAt: now, fc: fc, ready: make(chan struct{})}
	w.elem = b.queues[p].PushBack(w)
	b.waiting++
	b.waits++
	if fc != nil {
		fc.waiting++
	}
	b.armLocked(now)
	b.mu.Unlock()

	select {
	case <-w.ready:
		if w.err == nil && w.bounced.IsZero() {
			return nil
		}
		if !w.bounced.IsZero() {
			b.mu.Lock()
			b.unreserveQuotaLocked(w.client, w.quotaAt)
			b.adaptive.waiting++
			b.mu.Unlock()
			return &methodWait{w.bounced}
		}
	case <-ctx.Done():
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	now = time.Now()
	b.unreserveQuotaLocked(w.client, w.quotaAt)
	if w.err != nil {
		return w.err // refused by dispatchLocked, which did the counting
	}
	if w.granted {
		// Granted while the context ended: the call will not be made, so
		// the slot goes back to the next waiter.
		b.refundLocked(w)
	} else if w.bounced.IsZero() {
		b.queues[p].Remove(w.elem)
		b.waiting--
		b.unwaitLocked(w, now)
	}
	b.rejections++
	err := b.errLocked(p, now, ctx.Err())
	b.dispatchLocked(now)
	return err
}

// quotaRefusedLocked counts a refusal by the client quota or the fair
// share.
func (b *Budget) quotaRefusedLocked(retry time.Duration) error {
	b.rejections++
	b.quota.refusals++
	return &WaitError{Reason: ErrClientQuota, RetryIn: retry}
}

// unwaitLocked notes that w no longer waits.
func (b *Budget) unwaitLocked(w *waiter, now time.Time) {
	if w.fc != nil {
		w.fc.waiting--
		b.seenLocked(w.fc, now)
	}
}

// Pushback reports a 509/429 from S-360 that concerns the whole
// institution (PushbackCall picks the scope from the call). Unless it
// lowers the adaptive limit (see PushbackCall), it pauses all calls but
// orders until retryAfter has passed or, without it, for an exponential
// backoff (FirstPause, doubling, capped at MaxPause).
// Pushbacks that arrive during a pause are the echo of calls already in
// flight when it began: they may lengthen it to their Retry-After but do
// not double the backoff. After the pause, a single probe is let through.
func (b *Budget) Pushback(retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pushbackLocked(time.Now(), Call{}, retryAfter, ScopeInstitution)
}

// pauseInstitutionLocked is Pushback's pause; it reports whether a new
// pause began (not an echo).
func (b *Budget) pauseInstitutionLocked(now time.Time, retryAfter time.Duration) bool {
	paused := now.Before(b.pausedUntil)
	var d time.Duration
	switch {
	case retryAfter > 0:
		d = retryAfter
	case !paused:
		if b.backoff == 0 {
			b.backoff = b.cfg.FirstPause
		} else {
			b.backoff = min(2*b.backoff, b.cfg.MaxPause)
		}
		d = b.backoff
	}
	d = min(d, b.cfg.MaxPause)
	started := false
	if until := now.Add(d); until.After(b.pausedUntil) {
		if !paused {
			b.pauses++
			started = true
		}
		b.pausedUntil = until
	}
	b.probing = true
	b.probeUntil = time.Time{}
	b.dispatchLocked(now)
	return started
}

// Success reports an upstream answer that was not a pushback (any status
// but 509/429): the probe is answered, so everyone may call again, and the
// backoff starts over. During a pause it is ignored: the call was sent
// before the pause and says nothing about the upstream now.
func (b *Budget) Success() { b.SuccessCall(Call{}) }

// SuccessCall is Success for c: it also ends the backoff of c's method
// once its pause is over.
func (b *Budget) SuccessCall(c Call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.answeredLocked(now, c.Method)
	b.methodSuccessLocked(c.Method, now)
	if now.Before(b.pausedUntil) {
		return
	}
	b.backoff = 0
	if b.probing {
		b.probing = false
		b.probeUntil = time.Time{}
		b.dispatchLocked(now)
	}
}

// Stats returns a snapshot of the budget's state and counters.
func (b *Budget) Stats() Stats {
	b.fmu.Lock()
	keys := len(b.fetched)
	b.fmu.Unlock()

	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.adaptLocked(now)
	b.pruneLocked(now)
	used := b.usedLocked(now)
	s := Stats{
		Limit:          b.cfg.Calls,
		EffectiveLimit: b.lim.calls,
		Adaptive:       !b.cfg.FixedLimit,
		Adjustments:    b.adaptive.adjustments,
		Window:         b.cfg.Window,
		Reserve:        b.lim.reserve,
		OrderReserve:   b.lim.order,
		WatchReserve:   b.lim.watch,
		ClientQuota:    b.lim.quota,
		ClientWindow:   b.cfg.ClientWindow,
		QuotaRefusals:  b.quota.refusals,
		PausesByScope:  b.scopes.counts,
		Calls:          used,
		Remaining:      max(b.lim.calls-used, 0),
		Waiting:        b.waiting + b.adaptive.waiting,
		Granted:        b.granted,
		Waits:          b.waits,
		Rejections:     b.rejections,
		Pauses:         b.pauses,
		Pushbacks:      b.pushbacks,
		Probing:        b.probing,
		FloorKeys:      keys,
	}
	if now.Before(b.pausedUntil) {
		s.PausedUntil = b.pausedUntil
	}
	if b.adaptive.adjustments > 0 {
		a := b.adaptive.last
		s.LastAdjustment = &a
	}
	s.PausedKeys, s.PausedMethods = b.pausedNowLocked(now)
	s.MethodLimits = b.methodLimitsLocked(now)
	s.FairShare, s.Clients = b.fairShareLocked(now)
	if !b.fairOn() {
		s.Clients = len(b.quota.clients)
	}
	return s
}

// valid maps an unknown priority to the least privileged one.
func (p Priority) valid() Priority {
	if p < 0 || p >= numPriorities {
		return Background
	}
	return p
}

// allowance is how many calls of a window priority p may take: orders
// all of them, buyers' misses all but the order reserve, background work
// all but both reserves.
func (b *Budget) allowance(p Priority) int { return b.lim.allowance(p) }

func (l limits) allowance(p Priority) int {
	switch p {
	case Order:
		return l.calls
	case Queued:
		return l.calls - l.watch
	case Watch:
		return l.calls - l.order
	case Foreground:
		return l.calls - l.order - l.watch
	}
	return l.calls - l.order - l.watch - l.reserve
}

// limits are the effective limit and the reserves and quota scaled to it.
type limits struct{ calls, order, watch, reserve, quota int }

// capReserves keeps every priority at least one slot of the window.
func capReserves(calls, order, watch, reserve int) (int, int, int) {
	order = max(min(order, calls-1), 0)
	watch = max(min(watch, calls-order-1), 0)
	reserve = max(min(reserve, calls-order-watch-1), 0)
	return order, watch, reserve
}

// relimitLocked scales the configured reserves and quota to the effective
// limit, so that they keep their share of it.
func (b *Budget) relimitLocked() { b.lim = scaledLimits(b.cfg, b.adaptive.eff) }

func scaledLimits(c Config, eff int) limits {
	scale := func(v int) int {
		if v <= 0 {
			return 0
		}
		return max(v*eff/c.Calls, 1)
	}
	o, w, r := capReserves(eff, scale(c.OrderReserve), scale(c.WatchReserve), scale(c.Reserve))
	return limits{calls: eff, order: o, watch: w, reserve: r, quota: scale(c.ClientQuota)}
}

// pruneLocked drops the grants older than any window can see. It moves
// head rather than reslicing, and moves the live part to the front once
// the dead prefix is as long as it: the backing array is reused, so a call
// makes no garbage, and it stays within twice the grants a window holds.
func (b *Budget) pruneLocked(now time.Time) {
	cut := now.Add(-b.horizon)
	for b.head < len(b.log) && !b.log[b.head].After(cut) {
		b.head++
	}
	if b.head > 0 && b.head >= len(b.log)-b.head {
		n := copy(b.log, b.log[b.head:])
		b.log = b.log[:n]
		b.head = 0
	}
}

// live is the log still in use, oldest first.
func (b *Budget) live() []time.Time { return b.log[b.head:] }

// usedLocked counts the grants in the window ending at t.
func (b *Budget) usedLocked(t time.Time) int {
	return len(b.live()) - b.windowStartLocked(t)
}

// windowStartLocked is the index in live() of the first grant inside the
// window ending at t: a grant at g occupies its slot during [g, g+Window).
func (b *Budget) windowStartLocked(t time.Time) int {
	start := t.Add(-b.cfg.Window)
	live := b.live()
	return sort.Search(len(live), func(i int) bool { return live[i].After(start) })
}

// slotAtLocked is the earliest instant, not before t, at which p has a
// slot by the window alone.
func (b *Budget) slotAtLocked(p Priority, t time.Time) time.Time {
	used := b.usedLocked(t)
	excess := used - b.allowance(p) // this many+1 grants must age out
	if excess < 0 {
		return t
	}
	return b.live()[b.windowStartLocked(t)+excess].Add(b.cfg.Window)
}

// Orders are never held by an institution pause or its probe: the pause
// was caused by other methods' calls, and a buyer who is paying gets the
// attempt (S-360 refusing it pauses orders' own method).
func (b *Budget) canGrantLocked(p Priority, now time.Time) bool {
	if p != Order && (now.Before(b.pausedUntil) || (b.probing && now.Before(b.probeUntil))) {
		return false
	}
	return b.usedLocked(now) < b.allowance(p)
}

// nextLocked is the earliest instant p could be granted by time alone,
// ignoring waiters ahead of it. With probe false an outstanding probe is
// ignored, since its answer may come at any moment.
func (b *Budget) nextLocked(p Priority, now time.Time, probe bool) time.Time {
	t := now
	if p == Order {
		return b.slotAtLocked(p, t)
	}
	if t.Before(b.pausedUntil) {
		t = b.pausedUntil
	}
	if probe && b.probing && t.Before(b.probeUntil) {
		t = b.probeUntil
	}
	return b.slotAtLocked(p, t)
}

func (b *Budget) retryInLocked(p Priority, now time.Time, probe bool) time.Duration {
	return b.nextLocked(p, now, probe).Sub(now)
}

func (b *Budget) errLocked(p Priority, now time.Time, cause error) error {
	e := &WaitError{Reason: ErrLimited, Cause: cause, RetryIn: b.retryInLocked(p, now, true)}
	if p != Order && now.Before(b.pausedUntil) {
		e.Reason, e.Scope = ErrPaused, ScopeInstitution
	}
	return e
}

// grantLocked records a grant of a call of method; after a pause it is
// the probe, unless it is an order, which passes the probe by.
func (b *Budget) grantLocked(now time.Time, p Priority, method string) (probe bool) {
	b.pruneLocked(now)
	b.log = append(b.log, now)
	b.granted++
	b.methodGrantedLocked(method, now)
	if b.onGrant != nil {
		b.onGrant(now, 1)
	}
	if b.probing && p != Order {
		b.probeUntil = now.Add(b.cfg.ProbeTimeout)
		return true
	}
	return false
}

// refundLocked takes back a grant whose call was never made.
func (b *Budget) refundLocked(w *waiter) {
	for i := len(b.log) - 1; i >= b.head && !b.log[i].Before(w.at); i-- {
		if b.log[i].Equal(w.at) {
			b.log = append(b.log[:i], b.log[i+1:]...)
			break
		}
	}
	b.granted--
	b.methodRefundedLocked(w.method, w.at)
	b.fairRefundLocked(w.fc, w.at)
	if b.onGrant != nil {
		b.onGrant(w.at, -1)
	}
	if !w.lease.IsZero() && b.probeUntil.Equal(w.lease) {
		b.probeUntil = time.Time{} // the next waiter becomes the probe
	}
}

// aheadLocked reports whether a waiter a newcomer of p must not overtake
// is queued: one of p's priority or a higher one whose allowance is not
// smaller (a smaller one waits for slots p may take anyway).
func (b *Budget) aheadLocked(p Priority) bool {
	for q := Order; q <= p; q++ {
		if b.queues[q].Len() > 0 && b.allowance(q) >= b.allowance(p) {
			return true
		}
	}
	return false
}

// nextWaiterLocked is the waiter to serve now: the first head, in
// priority order, that can be granted or is held to its fair share; a
// head that cannot be served holds up every priority after it whose
// allowance is not larger (nobody there could be served either). nil when
// none can be served now.
func (b *Budget) nextWaiterLocked(now time.Time) *waiter {
	blocked := -1 // the largest allowance of a head that cannot be served
	for q := range b.queues {
		e := b.queues[q].Front()
		if e == nil || (blocked >= 0 && b.allowance(Priority(q)) <= blocked) {
			continue
		}
		w := e.Value.(*waiter)
		if w.fc != nil {
			if _, held := b.heldLocked(w.fc, now); held {
				return w
			}
		}
		if b.canGrantLocked(w.p, now) {
			return w
		}
		blocked = max(blocked, b.allowance(w.p))
	}
	return nil
}

// dispatchLocked grants slots to waiters in order for as long as one can
// be served (nextWaiterLocked).
//
// A waiter whose client is held to its fair share is refused on the way:
// the slots it waits for are owed to other clients.
func (b *Budget) dispatchLocked(now time.Time) {
	for {
		w := b.nextWaiterLocked(now)
		if w == nil {
			break
		}
		held := false
		if w.fc != nil {
			var retry time.Duration
			if retry, held = b.heldLocked(w.fc, now); held {
				w.err = b.quotaRefusedLocked(retry)
			}
		}
		b.queues[w.p].Remove(w.elem)
		b.waiting--
		b.unwaitLocked(w, now)
		if !held {
			if at, full := b.methodFullLocked(w.method, now); full {
				w.bounced = at // the caller waits for its method outside the queue
				close(w.ready)
				continue
			}
			w.granted, w.at = true, now
			if b.grantLocked(now, w.p, w.method) {
				w.lease = b.probeUntil
			}
			b.fairGrantLocked(w.fc, now)
		}
		close(w.ready)
	}
	b.armLocked(now)
}

// armLocked keeps the timer set for the next instant a head waiter could
// be served, or stopped when nobody waits.
func (b *Budget) armLocked(now time.Time) {
	var at time.Time
	for q := range b.queues {
		if e := b.queues[q].Front(); e != nil {
			if t := b.nextLocked(e.Value.(*waiter).p, now, true); at.IsZero() || t.Before(at) {
				at = t
			}
		}
	}
	if at.IsZero() {
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
		return
	}
	if b.timer != nil && b.timerAt.Equal(at) {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timerGen++
	gen := b.timerGen
	// at is after now whenever the head cannot be served; the floor only
	// guards against spinning should that ever not hold.
	d := max(at.Sub(now), time.Millisecond)
	b.timerAt = at
	b.timer = time.AfterFunc(d, func() { b.fire(gen) })
}

func (b *Budget) fire(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.timerGen {
		return // stopped or replaced after it had already fired
	}
	b.timer = nil
	now := time.Now()
	b.adaptLocked(now)
	b.dispatchLocked(now)
}
