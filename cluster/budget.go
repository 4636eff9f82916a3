package cluster

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/internal/wait"
)

//go:embed budget.lua
var budgetLua string

// budgetScript runs as EVALSHA; go-redis sends the source once on NOSCRIPT.
var budgetScript = redis.NewScript(budgetLua)

// The acquire script's answers (budget.lua).
const (
	acqGranted = iota
	acqStale
	acqPaused
	acqInstitution
	acqLimited
	acqProbe
	acqQuota
	acqMethod // the call's method has used its learned limit
)

// probePoll is how often a caller waiting for the probe's answer asks
// again: the answer ends the wait on whichever node it arrives.
const probePoll = 250 * time.Millisecond

var _ edge.Gate = (*Budget)(nil)

// Budget is the institution's one budget across the nodes of a cluster
// (an edge.Gate). Every decision is one script call in Redis; when Redis
// is out of reach or slower than OpTimeout, a local budget.Budget with this
// node's share of the limit (rate_limit / live nodes) decides instead.
type Budget struct {
	c     *Cluster
	local *budget.Budget // the fallback; it counts every grant this node made
	seq   atomic.Uint64

	mu          sync.Mutex
	cfg         budget.Config      // defaults applied
	eff         int                // the shared effective limit last seen
	lim         budget.Limits      // cfg's, scaled to eff
	shares      int                // the nodes local's limit is divided by
	down        bool               // local decides; rejoin before Redis decides again
	retryAt     time.Time          // next attempt to rejoin while down
	outage      context.Context    // canceled on rejoining: callers waiting in local ask the cluster
	endOutage   context.CancelFunc // cancels outage
	capUntil    time.Time          // end of the window after a rejoin, during which this node keeps to its share
	seenUsed    int                // the shared window's count last seen ...
	seenAt      time.Time          // ... and when (local clock)
	pausedUntil time.Time          // end of the cluster's institution pause last seen (local clock)
	queue       []*ticket          // callers waiting for a slot: by priority, then arrival
	turn        chan struct{}      // closed when a waiter leaves
	lastAdj     *budget.Adjustment
	adjusts     uint64
	onAdjust    func(budget.Learned)
	methods     map[string]int  // the shared learned limits of methods last seen
	restoring   *budget.Learned // limits given to Restore, not yet sent to Redis

	// gmu guards this node's grants; local's OnGrant hook takes it, so it
	// is never held while calling local.
	gmu     sync.Mutex
	mine    []grant // grants of the shared budget, last window
	pending []grant // grants of local not yet in the shared window
	onGrant func(time.Time, int)

	granted, waits, rejections, pushbacks, quotaRefusals atomic.Uint64
	methodWaiting                                        atomic.Int64     // callers waiting for their method's slot
	pauses                                               [4]atomic.Uint64 // started, by budget.Scope
}

// NewBudget returns the cluster's budget as seen from c's node. It needs
// no Redis to start: until Redis answers, the local share decides.
func NewBudget(c *Cluster, cfg budget.Config) *Budget {
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	cfg = cfg.WithDefaults()
	b := &Budget{c: c, cfg: cfg, eff: cfg.Calls, shares: c.liveNodes(), turn: make(chan struct{}),
		outage: context.Background(), endOutage: func() {}}
	b.lim = budget.ScaledLimits(cfg, b.eff)
	b.local = budget.New(share(cfg, b.eff, b.shares))
	b.local.OnGrant(b.localGrant)
	return b
}

// share is this node's part of cfg, at the effective limit eff, when n
// nodes share it: the limit, the reserves and the client quota divided by
// n (at least 1 each), so that the nodes together stay within it; the
// node's clients share its part fairly, unless client_quota is off. The
// limit is fixed: it is learned in Redis, and a pause carried over from
// the cluster (fail) must not teach the local budget anything.
func share(cfg budget.Config, eff, n int) budget.Config {
	n = max(n, 1)
	div := func(v int) int {
		if v <= 0 {
			return -1 // none, after the defaults: New must not read 0 as "the default"
		}
		return max(v/n, 1)
	}
	l := budget.ScaledLimits(cfg, eff)
	cfg.Calls = max(l.Calls/n, 1)
	cfg.OrderReserve, cfg.WatchReserve, cfg.Reserve = div(l.Order), div(l.Watch), div(l.Reserve)
	if cfg.ClientQuota > 0 {
		cfg.ClientQuota = div(l.Quota)
	}
	cfg.FixedLimit = true
	return cfg
}

// run calls the script for op with the call-specific keys and arguments.
func (b *Budget) run(ctx context.Context, cfg budget.Config, op, member string, k callKeys, args ...any) (any, error) {
	// The caller's deadline does not shorten the call: a Redis slower
	// than OpTimeout must be told from a caller in a hurry.
	ctx, cancel := b.c.op(context.WithoutCancel(ctx))
	defer cancel()
	fixed := 0
	if cfg.FixedLimit {
		fixed = 1
	}
	argv := append([]any{op, member,
		cfg.Window.Microseconds(), cfg.Calls, fixed, cfg.AdaptiveStep, budget.MinLimit(cfg),
		ms(cfg.ProbeTimeout), ms(cfg.FirstPause), ms(cfg.MaxPause)}, args...)
	return budgetScript.Run(ctx, b.c.rdb, b.keys(k), argv...).Result()
}

// member is a new unique name of a grant: node:sequence.
func (b *Budget) member() string { return b.c.node + ":" + strconv.FormatUint(b.seq.Add(1), 36) }

// grant is one of this node's grants of the shared budget.
type grant struct {
	at     time.Time // local clock
	member string    // its member of the shared window
	score  int64     // its time there (Redis's clock, µs); 0 for a local grant
}

// callKeys names what of a call the script's keys depend on.
type callKeys struct{ method, key, client string }

func (b *Budget) keys(k callKeys) []string {
	c := b.c
	return []string{
		c.key("budget", "window"), c.key("budget", "limit"), c.key("budget", "pause"),
		c.key("budget", "pause", "m", k.method), c.key("budget", "pause", "k", k.key),
		c.key("budget", "client", k.client), c.key("budget", "probing"), c.key("budget", "probe"),
		c.key("budget", "refusals"), c.key("budget", "backoff"), c.key("budget", "backoff", "m", k.method),
		c.key("budget", "paused"),
		c.key("budget", "fair", "calls"), c.key("budget", "fair", "active"), c.key("budget", "fair", "use"),
		c.key("budget", "answers"), c.key("budget", "mlimit"),
	}
}

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// ints reads a script's array reply.
func ints(v any) []int64 {
	a, _ := v.([]any)
	out := make([]int64, len(a))
	for i, x := range a {
		out[i], _ = x.(int64)
	}
	return out
}

func µs(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

// shared reports whether Redis decides now; while down, it tries to
// rejoin once per heartbeat, or at once when the cluster saw Redis back.
func (b *Budget) shared(ctx context.Context) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down {
		return true
	}
	if time.Now().Before(b.retryAt) && !b.c.redisOK.Load() {
		return false
	}
	b.retryAt = time.Now().Add(b.c.cfg.Heartbeat)
	return b.rejoinLocked(ctx)
}

// rejoinLocked puts this node's grants of the last window into the shared
// window, so that rejoining makes no burst, then lets Redis decide: those
// made by the local budget, and those of the shared one, which a restarted
// Redis has lost (re-adding a member Redis kept changes nothing).
func (b *Budget) rejoinLocked(ctx context.Context) bool {
	v, err := b.flush(ctx, b.cfg, true)
	if b.c.report(err) != nil {
		return false
	}
	r := ints(v)
	// Limits restored while Redis was out of reach go first: the next
	// decisions use them. Failing, the node stays down and tries again.
	if b.restoreLocked() != nil {
		return false
	}
	b.down = false
	b.endOutage() // callers waiting in local ask the cluster again
	b.capUntil = time.Now().Add(b.cfg.Window)
	b.seenUsed, b.seenAt = int(r[0]), time.Now()
	b.setEffLocked(int(r[1]))
	return true
}

// flush adds the local budget's grants not yet in the shared window (and
// with all, this node's shared grants of the window) to the shared window.
func (b *Budget) flush(ctx context.Context, cfg budget.Config, all bool) (any, error) {
	now := time.Now()
	cut := now.Add(-cfg.Window)
	b.gmu.Lock()
	b.pending = pruneGrants(b.pending, cut)
	b.mine = pruneGrants(b.mine, cut)
	sent := slices.Clone(b.pending)
	args := make([]any, 0, 2*(len(b.pending)+len(b.mine)))
	for _, g := range sent {
		args = append(args, g.member, -max(now.Sub(g.at).Microseconds(), 1))
	}
	if all {
		for _, g := range b.mine {
			args = append(args, g.member, g.score)
		}
	}
	b.gmu.Unlock()
	v, err := b.run(ctx, cfg, "rejoin", "", callKeys{}, args...)
	if err != nil {
		return nil, err
	}
	b.gmu.Lock()
	b.pending = slices.DeleteFunc(b.pending, func(g grant) bool {
		return slices.ContainsFunc(sent, func(s grant) bool { return s.member == g.member })
	})
	b.gmu.Unlock()
	return v, nil
}

// fail records a failed Redis call and hands the decisions to local.
func (b *Budget) fail(err error) {
	b.c.report(err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return
	}
	b.down = true
	now := time.Now()
	b.outage, b.endOutage = context.WithCancel(context.Background())
	b.retryAt = now.Add(b.c.cfg.Heartbeat)
	n := b.c.aloneNodes()
	b.shares = n
	b.local.Update(share(b.cfg, b.eff, n))
	if b.pausedUntil.After(now) {
		// The local budget keeps the cluster's institution pause (its
		// WARN line was written when it began).
		quiet := share(b.cfg, b.eff, n)
		quiet.Logger = zap.NewNop()
		b.local.Update(quiet)
		b.local.Pushback(b.pausedUntil.Sub(now))
		b.local.Update(share(b.cfg, b.eff, n))
	}
	// local counts this node's grants of the window, not the other
	// nodes'. Their share of what the window last held, ceil((U -
	// mine)/n) on each node, is counted as made when it was seen: then
	// the nodes together stay within the limit, however unevenly the
	// window was used (see the package test TestFallbackKeepsTheSum).
	b.gmu.Lock()
	b.mine = pruneGrants(b.mine, now.Add(-b.cfg.Window))
	mine := 0
	for _, g := range b.mine {
		if !g.at.After(b.seenAt) {
			mine++
		}
	}
	b.gmu.Unlock()
	if others := b.seenUsed - mine; others > 0 && now.Sub(b.seenAt) < b.cfg.Window {
		b.local.AddGrants(b.seenAt, (others+n-1)/n)
	}
}

// acquireLocal asks the local budget; again is true when the node
// rejoined the cluster while the caller waited: then the cluster decides.
func (b *Budget) acquireLocal(ctx context.Context, c budget.Call) (again bool, err error) {
	b.mu.Lock()
	outage := b.outage
	b.mu.Unlock()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(outage, cancel)()
	err = b.local.AcquireCall(lctx, c)
	if err != nil && ctx.Err() == nil && outage.Err() != nil {
		return true, nil
	}
	return false, err
}

func pruneGrants(gs []grant, cut time.Time) []grant {
	i := 0
	for i < len(gs) && !gs[i].at.After(cut) {
		i++
	}
	return append(gs[:0], gs[i:]...)
}

// localGrant is local's OnGrant hook: its grants are this node's too, and
// go to the shared window when Redis answers again.
func (b *Budget) localGrant(at time.Time, n int) {
	b.gmu.Lock()
	if n > 0 {
		b.pending = append(b.pending, grant{at: at, member: b.member()})
	} else if i := slices.IndexFunc(b.pending, func(g grant) bool { return g.at.Equal(at) }); i >= 0 {
		b.pending = slices.Delete(b.pending, i, i+1)
	}
	fn := b.onGrant
	b.gmu.Unlock()
	if fn != nil {
		fn(at, n)
	}
}

// sharedGrant records member, a grant of the shared budget made at score
// (Redis's clock, µs).
func (b *Budget) sharedGrant(window time.Duration, member string, score int64) {
	now := time.Now()
	at := time.UnixMicro(score)
	b.granted.Add(1)
	b.gmu.Lock()
	b.mine = append(pruneGrants(b.mine, now.Add(-window)), grant{now, member, score})
	fn := b.onGrant
	b.gmu.Unlock()
	b.local.AddGrants(now, 1)
	if fn != nil {
		fn(at, 1)
	}
}

// setEffLocked takes the shared effective limit seen in a reply.
func (b *Budget) setEffLocked(eff int) {
	if eff == b.eff || eff <= 0 {
		return
	}
	now := time.Now()
	from, reason := b.eff, "a window without pushback"
	if eff < from {
		reason = "institution pushback"
	}
	b.eff = eff
	b.lim = budget.ScaledLimits(b.cfg, eff)
	b.adjusts++
	b.lastAdj = &budget.Adjustment{At: now, From: from, To: eff, Reason: reason}
	b.cfg.Logger.Info("effective upstream limit adjusted (cluster-wide)", zap.Int("from", from), zap.Int("to", eff),
		zap.Int("configured", b.cfg.Calls), zap.Duration("window", b.cfg.Window), zap.String("reason", reason))
	b.notifyLocked(now)
}

// setMethodLocked takes method's shared learned limit seen in a reply (0:
// none).
func (b *Budget) setMethodLocked(method string, limit int) {
	if method == "" || b.methods[method] == limit {
		return
	}
	from := b.methods[method]
	if limit <= 0 {
		delete(b.methods, method)
	} else {
		if b.methods == nil {
			b.methods = make(map[string]int)
		}
		b.methods[method] = limit
	}
	b.cfg.Logger.Info("learned upstream limit of a method adjusted (cluster-wide)", zap.String("method", method),
		zap.Int("from", cmp.Or(from, b.cfg.Calls)), zap.Int("to", cmp.Or(limit, b.cfg.Calls)), zap.Int("configured", b.cfg.Calls))
	b.notifyLocked(time.Now())
}

// notifyLocked tells OnAdjust's fn the learned limits this node has seen.
func (b *Budget) notifyLocked(now time.Time) {
	if b.onAdjust != nil {
		b.onAdjust(budget.Learned{Limit: b.eff, At: now, Methods: maps.Clone(b.methods)})
	}
}

// pausedLocked notes that the cluster's institution pause lasts d more.
func (b *Budget) pausedLocked(d time.Duration) {
	if until := time.Now().Add(d); d > 0 && until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
}

// attempt is one acquire script call's answer.
type attempt struct {
	code int64
	used int
	wait time.Duration
}

func (b *Budget) try(ctx context.Context, c budget.Call) (attempt, error) {
	b.mu.Lock()
	cfg, eff, lim := b.cfg, b.eff, b.lim
	cap := 0
	if time.Now().Before(b.capUntil) {
		// The shared window lacks the grants of nodes that have not
		// rejoined yet; keeping to its share, this node cannot make the
		// sum exceed the limit with them.
		cap = max(eff/b.shares, 1)
	}
	b.mu.Unlock()
	b.gmu.Lock()
	stragglers := len(b.pending) > 0
	b.gmu.Unlock()
	if stragglers {
		// Local grants made as the node rejoined.
		if _, err := b.flush(ctx, cfg, false); err != nil {
			return attempt{}, err
		}
	}
	quota, client, fair := 0, "", 0
	if c.Priority == budget.Foreground && c.Client != "" {
		quota, client = lim.Quota, c.Client
		if cfg.ClientQuota >= 0 {
			fair = lim.Allowance(budget.Foreground)
		}
	}
	hasKey := 0
	if c.Key != "" {
		hasKey = 1
	}
	// The window's member names the method, whose learned limit counts
	// its grants there.
	member := b.member()
	if c.Method != "" {
		member += " " + c.Method
	}
	v, err := b.run(ctx, cfg, "acquire", member, callKeys{c.Method, c.Key, client},
		int(c.Priority), eff, lim.Allowance(c.Priority), quota, cfg.ClientWindow.Microseconds(), hasKey, cap, b.c.node+":",
		fair, client, cfg.MaxClients, c.Method)
	if err != nil {
		return attempt{}, err
	}
	b.c.report(nil)
	r := ints(v)
	if len(r) != 6 {
		return attempt{}, errors.New("cluster budget: unexpected reply from the script")
	}
	a := attempt{code: r[0], used: int(r[1]), wait: µs(r[2])}
	b.mu.Lock()
	if a.code != acqStale && a.code != acqPaused && a.code != acqMethod {
		b.seenUsed, b.seenAt = a.used, time.Now()
	}
	b.pausedLocked(µs(r[4]))
	b.setEffLocked(int(r[3]))
	b.setMethodLocked(c.Method, int(r[5]))
	b.mu.Unlock()
	if a.code == acqGranted {
		b.sharedGrant(cfg.Window, member, r[2])
	}
	return a, nil
}

// AcquireCall is budget.Budget's AcquireCall, cluster-wide: one script
// call per attempt decides on the shared window, the priority's allowance,
// the client quota, the clients' fair shares and the pauses. Callers wait while the window is full,
// the institution is paused or the probe is out, unless ctx's deadline
// comes first; on this node higher priorities try first.
func (b *Budget) AcquireCall(ctx context.Context, c budget.Call) error {
	if c.Priority < budget.Order || c.Priority > budget.Background {
		c.Priority = budget.Background
	}
	if err := ctx.Err(); err != nil {
		b.rejections.Add(1)
		return &budget.WaitError{Cause: err}
	}
	var tk *ticket
	defer func() {
		if tk != nil {
			b.leave(tk)
		}
	}()
	for {
		shared := b.shared(ctx)
		var a attempt
		if shared {
			var err error
			if a, err = b.try(ctx, c); err != nil {
				b.fail(err)
				shared = false
			}
		}
		if !shared {
			again, err := b.acquireLocal(ctx, c)
			if again {
				continue
			}
			return err
		}
		switch a.code {
		case acqGranted:
			return nil
		case acqStale:
			continue // recomputed for the new limit
		case acqPaused:
			b.rejections.Add(1)
			scope := budget.ScopeKey
			if a.used == 2 {
				scope = budget.ScopeMethod
			}
			return &budget.WaitError{Reason: budget.ErrPaused, RetryIn: a.wait, Scope: scope}
		case acqQuota:
			b.rejections.Add(1)
			b.quotaRefusals.Add(1)
			return &budget.WaitError{Reason: budget.ErrClientQuota, RetryIn: a.wait}
		case acqMethod:
			// As budget.Budget: the caller waits for its method's slot
			// outside the node's queue, or is refused when that comes
			// after its deadline.
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < a.wait {
				b.rejections.Add(1)
				return &budget.WaitError{Reason: budget.ErrLimited, RetryIn: a.wait, Scope: budget.ScopeMethod}
			}
			b.methodWaiting.Add(1)
			slept := wait.Sleep(ctx, a.wait)
			b.methodWaiting.Add(-1)
			if !slept {
				b.rejections.Add(1)
				return &budget.WaitError{Reason: budget.ErrLimited, Cause: ctx.Err(), Scope: budget.ScopeMethod}
			}
			continue
		}
		// Only firm obstacles make waiting pointless: the probe's answer
		// may come any moment.
		if dl, ok := ctx.Deadline(); ok && a.code != acqProbe && time.Until(dl) < a.wait {
			b.rejections.Add(1)
			return b.waitErr(c.Priority, a, nil)
		}
		if tk == nil {
			b.waits.Add(1)
			tk = b.enter(c.Priority)
		}
		d := a.wait
		if a.code == acqProbe {
			d = min(d, probePoll)
		}
		if err := b.sleep(ctx, tk, d); err != nil {
			b.rejections.Add(1)
			return b.waitErr(c.Priority, a, err)
		}
	}
}

func (b *Budget) waitErr(p budget.Priority, a attempt, cause error) error {
	e := &budget.WaitError{Reason: budget.ErrLimited, Cause: cause, RetryIn: a.wait}
	if a.code == acqInstitution && p != budget.Order {
		e.Reason, e.Scope = budget.ErrPaused, budget.ScopeInstitution
	}
	return e
}

// ticket is a caller of this node waiting for a slot.
type ticket struct{ p budget.Priority }

func (b *Budget) enter(p budget.Priority) *ticket {
	tk := &ticket{p}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.IndexFunc(b.queue, func(o *ticket) bool { return o.p > p })
	if i < 0 {
		i = len(b.queue)
	}
	b.queue = slices.Insert(b.queue, i, tk)
	return tk
}

func (b *Budget) leave(tk *ticket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = slices.DeleteFunc(b.queue, func(o *ticket) bool { return o == tk })
	close(b.turn)
	b.turn = make(chan struct{})
}

// sleep waits d, then its turn: only the node's first waiter (the highest
// priority, the longest waiting) asks Redis. The others would be refused
// for the same reason, since each priority's allowance is within the one
// before it; one caller per node retrying keeps Redis's load to one call
// per slot, not one per waiter. The exception is budget.Queued, which
// may not use the watch reserve: a watcher behind queued orders only asks
// too (myTurn).
func (b *Budget) sleep(ctx context.Context, tk *ticket, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		b.mu.Lock()
		first := b.myTurnLocked(tk)
		turn := b.turn
		b.mu.Unlock()
		if first {
			return nil
		}
		select {
		case <-turn:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// myTurnLocked reports whether tk may ask Redis now: it is first, or a
// watcher's poll behind queued orders only.
func (b *Budget) myTurnLocked(tk *ticket) bool {
	for _, o := range b.queue {
		switch {
		case o == tk:
			return true
		case tk.p != budget.Watch || o.p != budget.Queued:
			return false
		}
	}
	return false
}

// PushbackCall is budget.Budget's PushbackCall on the cluster's counts:
// the scope is decided with the refusals every node reported in the window,
// the pause is shared, and an institution pause lowers the shared limit.
func (b *Budget) PushbackCall(c budget.Call, retryAfter time.Duration) budget.Scope {
	b.pushbacks.Add(1)
	if !b.shared(context.Background()) {
		return b.local.PushbackCall(c, retryAfter)
	}
	b.mu.Lock()
	cfg := b.cfg
	b.mu.Unlock()
	ra := int64(0)
	if retryAfter > 0 {
		ra = ms(retryAfter)
	}
	v, err := b.run(context.Background(), cfg, "pushback", b.member(), callKeys{method: c.Method, key: c.Key}, c.Method, c.Key, ra)
	if b.c.report(err) != nil {
		b.fail(err)
		return b.local.PushbackCall(c, retryAfter)
	}
	r := ints(v)
	if len(r) != 5 {
		return budget.ScopeInstitution
	}
	scope := budget.Scope(r[0])
	b.mu.Lock()
	b.setEffLocked(int(r[3]))
	b.setMethodLocked(c.Method, int(r[4]))
	if scope == budget.ScopeInstitution {
		b.pausedLocked(time.Duration(r[2]) * time.Millisecond)
	}
	b.mu.Unlock()
	if scope == budget.ScopeCall {
		cfg.Logger.Warn("S-360 refused a call (509/429); nothing paused until another call is refused",
			zap.String("scope", scope.String()), zap.String("method", c.Method))
		return scope
	}
	if r[1] == 1 {
		b.pauses[scope].Add(1)
		cfg.Logger.Warn("S-360 refused a call (509/429): pausing upstream calls on every node",
			zap.String("scope", scope.String()), zap.String("method", c.Method),
			zap.Time("until", time.Now().Add(time.Duration(r[2])*time.Millisecond)))
	}
	return scope
}

// SuccessCall is budget.Budget's SuccessCall, cluster-wide: it ends the
// probe after an institution pause and the backoffs, on every node.
func (b *Budget) SuccessCall(c budget.Call) {
	if !b.shared(context.Background()) {
		b.local.SuccessCall(c)
		return
	}
	b.mu.Lock()
	cfg := b.cfg
	b.mu.Unlock()
	// The answer counts in the shared window of answers, which the
	// learned limits are taught from.
	v, err := b.run(context.Background(), cfg, "success", b.member(), callKeys{method: c.Method}, c.Method)
	if b.c.report(err) != nil {
		b.fail(err)
		b.local.SuccessCall(c)
		return
	}
	if r := ints(v); len(r) == 3 {
		b.mu.Lock()
		b.setEffLocked(int(r[1]))
		b.setMethodLocked(c.Method, int(r[2]))
		b.mu.Unlock()
	}
}

// Floor is budget.Budget's Floor.
func (b *Budget) Floor(name string) time.Duration { return b.local.Floor(name) }

// FloorWait is how long until key may be fetched again: the shared floor,
// or this node's own memory of it when that is longer (or Redis is out of
// reach).
func (b *Budget) FloorWait(key, name string) time.Duration {
	local := b.local.FloorWait(key, name)
	if !b.shared(context.Background()) {
		return local
	}
	ctx, cancel := b.c.op(context.Background())
	defer cancel()
	d, err := b.c.rdb.PTTL(ctx, b.c.key("floor", key)).Result()
	if b.c.report(err) != nil {
		b.fail(err)
		return local
	}
	return max(d, local) // PTTL: -2 no key, -1 no expiry (never set so)
}

// MarkFetched starts key's floor on every node.
func (b *Budget) MarkFetched(key, name string) {
	b.local.MarkFetched(key, name)
	d := b.local.Floor(name)
	if d <= 0 || !b.shared(context.Background()) {
		return
	}
	ctx, cancel := b.c.op(context.Background())
	defer cancel()
	if err := b.c.rdb.Set(ctx, b.c.key("floor", key), b.c.node, d).Err(); b.c.report(err) != nil {
		b.fail(err)
	}
}

// RestoreFetched gives a floor persisted before a restart to this node's
// memory; the shared floor, if still running, is in Redis already.
func (b *Budget) RestoreFetched(key, name string, at time.Time) {
	b.local.RestoreFetched(key, name, at)
}

// Restore applies the limits this node learned before a restart: to its
// fallback, and to the cluster when Redis has none (Redis's value wins).
// When Redis is out of reach they are kept (and persisted again by
// OnAdjust's fn) and sent when this node rejoins.
func (b *Budget) Restore(l budget.Learned) {
	b.mu.Lock()
	if b.cfg.FixedLimit || (l.Limit <= 0 && len(l.Methods) == 0) {
		b.mu.Unlock()
		return
	}
	b.restoring = &l
	if !b.down {
		err := b.restoreLocked()
		b.mu.Unlock()
		if err == nil {
			return
		}
		b.fail(err) // the rejoin sends it
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	b.keepRestoredLocked(l)
}

// keepRestoredLocked applies l to the fallback while Redis is out of
// reach: the limit to the local share; the methods' limits are only
// remembered (the local share has no learned limits), so that a change
// persisted meanwhile keeps them.
func (b *Budget) keepRestoredLocked(l budget.Learned) {
	if l.Limit > 0 {
		b.eff = min(b.eff, max(l.Limit, budget.MinLimit(b.cfg)))
		b.lim = budget.ScaledLimits(b.cfg, b.eff)
		b.local.Update(share(b.cfg, b.eff, b.shares))
	}
	for m, v := range l.Methods {
		if _, ok := b.methods[m]; !ok && v > 0 && v < b.cfg.Calls {
			if b.methods == nil {
				b.methods = make(map[string]int)
			}
			b.methods[m] = max(v, budget.MinLimit(b.cfg))
		}
	}
	b.notifyLocked(time.Now())
}

// restoreLocked sends the limits Restore was given to Redis, which keeps
// its own where it has them.
func (b *Budget) restoreLocked() error {
	l := b.restoring
	if l == nil {
		return nil
	}
	args := []any{l.Limit}
	for _, m := range slices.Sorted(maps.Keys(l.Methods)) {
		args = append(args, m, l.Methods[m])
	}
	v, err := b.run(context.Background(), b.cfg, "restore", "", callKeys{}, args...)
	if b.c.report(err) != nil {
		var reply redis.Error
		if errors.As(err, &reply) && !redis.HasErrorPrefix(err, "LOADING") &&
			!redis.HasErrorPrefix(err, "MASTERDOWN") && !redis.HasErrorPrefix(err, "BUSY") {
			// Redis answered, and refused: trying again would not help.
			b.restoring = nil
			b.cfg.Logger.Warn("restoring the learned upstream limits in Redis failed", zap.Error(err))
			return nil
		}
		return err
	}
	b.restoring = nil
	r := ints(v)
	if len(r) < 2 {
		return nil
	}
	b.setEffLocked(int(r[1]))
	methods := map[string]int{}
	for i := 2; i+1 < len(r); i += 2 {
		if m, _ := v.([]any)[i].(string); m != "" && r[i+1] > 0 {
			methods[m] = int(r[i+1])
		}
	}
	if !maps.Equal(methods, b.methods) {
		b.methods = methods
		b.notifyLocked(time.Now())
	}
	return nil
}

// OnAdjust sets fn to be told each new shared effective limit this node
// sees, to persist it. fn runs with the budget locked: it must not call it.
func (b *Budget) OnAdjust(fn func(budget.Learned)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onAdjust = fn
}

// OnGrant sets fn to be told each slot this node was granted (shared or
// local), for the status page's history.
func (b *Budget) OnGrant(fn func(at time.Time, n int)) {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	b.onGrant = fn
}

// Update applies a reloaded config on this node (every node gets the same
// one). The shared window and pauses are kept.
func (b *Budget) Update(cfg budget.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cfg.Logger == nil {
		cfg.Logger = b.cfg.Logger
	}
	cfg = cfg.WithDefaults()
	b.cfg = cfg
	if cfg.FixedLimit || b.eff > cfg.Calls {
		b.eff = cfg.Calls
	}
	b.lim = budget.ScaledLimits(cfg, b.eff)
	b.shares = b.c.liveNodes()
	b.local.Update(share(cfg, b.eff, b.shares))
}

// Stats is the cluster's budget: the window's use, the limit and the
// pauses are cluster-wide while Redis answers; the counters (granted,
// waits, pauses started...) are this node's, so that summing nodes'
// metrics counts each event once. While Redis is out of reach it is the
// local share's state.
func (b *Budget) Stats() budget.Stats {
	s := b.local.Stats()
	s.Granted += b.granted.Load()
	s.Waits += b.waits.Load()
	s.Rejections += b.rejections.Load()
	s.Pushbacks += b.pushbacks.Load()
	s.QuotaRefusals += b.quotaRefusals.Load()
	s.PausesByScope.Key += b.pauses[budget.ScopeKey].Load()
	s.PausesByScope.Method += b.pauses[budget.ScopeMethod].Load()
	s.PausesByScope.Institution += b.pauses[budget.ScopeInstitution].Load()
	s.Pauses += b.pauses[budget.ScopeInstitution].Load()
	if !b.shared(context.Background()) {
		return s
	}
	b.mu.Lock()
	cfg := b.cfg
	b.mu.Unlock()
	v, err := b.run(context.Background(), cfg, "stats", "", callKeys{})
	if b.c.report(err) != nil {
		b.fail(err)
		return s
	}
	a, _ := v.([]any)
	r := ints(v)
	if len(r) < 7 || len(r) < 7+int(r[6]) || (len(r)-7-int(r[6]))%3 != 0 {
		return s
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setEffLocked(int(r[1]))
	s.Limit, s.EffectiveLimit, s.Adaptive, s.Window = cfg.Calls, b.eff, !cfg.FixedLimit, cfg.Window
	s.Reserve, s.OrderReserve, s.WatchReserve, s.ClientQuota = b.lim.Reserve, b.lim.Order, b.lim.Watch, b.lim.Quota
	s.ClientWindow = cfg.ClientWindow
	s.Calls, s.Remaining = int(r[0]), max(b.eff-int(r[0]), 0)
	s.Adjustments, s.LastAdjustment = b.adjusts, b.lastAdj
	s.Waiting += len(b.queue) + int(b.methodWaiting.Load())
	s.PausedUntil = time.Time{}
	if r[2] > 0 {
		s.PausedUntil = time.Now().Add(time.Duration(r[2]) * time.Millisecond)
		b.pausedLocked(time.Duration(r[2]) * time.Millisecond)
	}
	s.Probing = r[3] == 1
	s.PausedKeys, s.PausedMethods = int(r[4]), nil
	s.Clients, s.FairShare = 0, 0
	if cfg.ClientQuota >= 0 {
		s.Clients = int(r[5])
		s.FairShare = b.lim.Allowance(budget.Foreground) / max(s.Clients, 1)
	}
	paused := 7 + int(r[6])
	for _, m := range a[7:paused] {
		if m, ok := m.(string); ok {
			s.PausedMethods = append(s.PausedMethods, m)
		}
	}
	slices.Sort(s.PausedMethods)
	s.MethodLimits = nil
	seen := map[string]int{}
	for i := paused; i+2 < len(a); i += 3 {
		m, _ := a[i].(string)
		l := budget.MethodLimit{Method: m, Limit: int(r[i+1]), Calls: int(r[i+2])}
		s.MethodLimits = append(s.MethodLimits, l)
		seen[m] = l.Limit
	}
	slices.SortFunc(s.MethodLimits, func(x, y budget.MethodLimit) int { return strings.Compare(x.Method, y.Method) })
	if !maps.Equal(seen, b.methods) && (len(seen) > 0 || len(b.methods) > 0) {
		b.methods = seen
		b.notifyLocked(time.Now())
	}
	return s
}
