package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/wait"
	"github.com/s360edge/s360edge/orderq"
)

//go:embed orderqueue.lua
var orderQueueLua string

var orderQueueScript = redis.NewScript(orderQueueLua)

// Timings of the cluster's order queue.
const (
	// queueTick is how often a node looks for the other nodes' changes
	// (its followers' channels close then), retries what Redis did not
	// take, and records the follows of its held tickets.
	queueTick = 500 * time.Millisecond
	// queueSweep is how often a node withdraws the orders nobody followed
	// and reports unknown those a dead node was sending.
	queueSweep = 5 * time.Second
	// queueGap is orderq's sendGap for the whole cluster: a claim waits
	// until the last claimed call was answered, or this long.
	queueGap = 250 * time.Millisecond
	// gapPoll is how often a node holding a slot asks again while the gap
	// holds it up.
	gapPoll = 50 * time.Millisecond
	// touchEvery is the most often a node records one ticket's follow.
	touchEvery = time.Second
	// lineKeep is how long the line's keys, and a queued order's record,
	// live after their last change or follow.
	lineKeep = 24 * time.Hour
	// sweepMost bounds the orders one sweep withdraws.
	sweepMost = 1000
	// maybeQueued prefixes, in the edge's store, the orders Redis may or
	// may not have queued (see Enqueue).
	maybeQueued = "orderqc/"
)

// OrderQueue is the order queue of an institution's cluster: one line in
// Redis for all its nodes, in arrival order, followed on any node, with
// the same semantics as orderq.Queue. Each node admits the head of the
// line through its gate (the cluster's budget) and claims it in the same
// script that marks it sending, before its call. While Redis is out of
// reach, new orders join the node's own orderq.Queue, admitted within the
// node's share of the budget and followed on that node only; the orders in
// Redis wait until it is back.
type OrderQueue struct {
	c     *Cluster
	cfg   orderq.Config
	local *orderq.Queue

	mu      sync.Mutex
	send    orderq.SendFunc
	lim     orderq.Limits
	started bool
	closed  bool
	// changed is closed and replaced when a poll sees that the line
	// changed, and at this node's outcomes and withdrawals: every follower
	// on this node then reads its ticket again, at most a few times a
	// second however fast orders come.
	changed chan struct{}
	ver     string // the line's change counter last seen
	known   map[string]*known
	held    map[string]int       // open follows by ticket
	touched map[string]time.Time // last follow recorded in Redis, by ticket
	sending map[string]bool      // claimed by this node, until their outcome is in Redis
	admits  []time.Time          // admissions of the last minute
	stats   orderq.Stats         // this node's counts; Length and Oldest: Redis's last seen

	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// known is a ticket as this node last saw it.
type known struct {
	v    orderq.View
	used time.Time
	// maybe is an order Redis may or may not have queued: it is queued
	// again, under its ticket, until Redis says it has it.
	maybe *orderq.Order
	// unsaved: v is this node's outcome, not yet in Redis.
	unsaved bool
}

// NewOrderQueue returns the order queue of c's cluster, with local as the
// queue of this node while Redis is out of reach. Of cfg it uses Admit,
// Rate, Keep, OnAdmit and Logger, and Store to keep the orders Redis may
// not have queued. Orders are not admitted before Start.
func NewOrderQueue(c *Cluster, local *orderq.Queue, cfg orderq.Config) (*OrderQueue, error) {
	cfg = cfg.WithDefaults()
	q := &OrderQueue{c: c, cfg: cfg, local: local, lim: cfg.Limits, changed: make(chan struct{}),
		known: map[string]*known{}, held: map[string]int{}, touched: map[string]time.Time{}, sending: map[string]bool{},
		wake: make(chan struct{}, 1)}
	if cfg.Store != nil {
		err := cfg.Store.ScanMeta(maybeQueued, func(_ string, v []byte) bool {
			o := new(orderq.Order)
			if json.Unmarshal(v, o) == nil && o.Ticket != "" {
				q.known[o.Ticket] = &known{v: queuedView(o), used: time.Now(), maybe: o}
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.wg.Add(1)
	go q.janitor()
	return q, nil
}

func queuedView(o *orderq.Order) orderq.View {
	return orderq.View{Ticket: o.Ticket, State: orderq.Queued, Client: o.Client, Meta: o.Meta, At: o.At}
}

// Start admits orders, sending each with send, within l; a later call
// replaces send and l; a nil send stops admitting (orderq.Queue.Start).
func (q *OrderQueue) Start(send orderq.SendFunc, l orderq.Limits) {
	q.local.Start(send, l)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.send, q.lim = send, l.WithDefaults()
	q.poke()
	if q.started || q.closed {
		return
	}
	q.started = true
	q.wg.Add(1)
	go q.run()
}

// Close stops admitting and waits for the calls under way, each one's
// outcome written to Redis if it answers; then closes the local queue.
func (q *OrderQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
	q.local.Close()
}

// Enqueue puts o at the end of the institution's line. With Redis out of
// reach, or when its refusal shows that nothing was written, o joins this
// node's line instead. When Redis may have queued o without saying so (a
// timeout after the call left), o is kept, in the store too, and queued
// again under the same ticket until Redis answers: a ticket already there
// is not queued twice.
func (q *OrderQueue) Enqueue(o orderq.Order) (orderq.View, error) {
	q.mu.Lock()
	closed, l := q.closed, q.lim
	q.mu.Unlock()
	if closed {
		return orderq.View{}, orderq.ErrClosed
	}
	if !q.c.redisOK.Load() {
		return q.local.Enqueue(o)
	}
	n := &orderq.Order{Ticket: orderq.NewTicket(), Path: o.Path, Body: o.Body, Client: o.Client, Meta: o.Meta,
		At: time.Now(), State: orderq.Queued}
	r, err := q.enqueue(q.c.rdb, q.c.cfg.OpTimeout, n, l)
	if err != nil && unsent(err) {
		return q.local.Enqueue(o)
	}
	if err != nil {
		// Written or not: asking again with the same ticket tells,
		// without the hot path's bound.
		if r, err = q.enqueue(q.c.bulk, time.Second, n, l); err != nil {
			return q.maybe(n, err), nil
		}
	}
	switch r[0] {
	case 2:
		q.count(func(s *orderq.Stats) { s.Refused++ })
		return orderq.View{}, orderq.ErrFull
	case 3:
		q.count(func(s *orderq.Stats) { s.Refused++ })
		return orderq.View{}, orderq.ErrClientLimit
	}
	q.mu.Lock()
	q.stats.Enqueued++
	q.poke() // the followers see it at the next poll: an order at the end moves nobody
	q.mu.Unlock()
	if r[0] == 1 { // an earlier try of this call queued it
		v, _, ok := q.Get(n.Ticket)
		if !ok {
			return orderq.View{}, errors.New("cluster: an order queued in Redis is not found there")
		}
		return v, nil
	}
	v := queuedView(n)
	v.At = time.UnixMilli(r[2])
	v.Position, v.ETA = int(r[1]), q.cfg.ETA(int(r[1]))
	q.mu.Lock()
	q.known[n.Ticket] = &known{v: v, used: time.Now()}
	q.mu.Unlock()
	return v, nil
}

// enqueue runs the enqueue script for n: {0, position, at} queued, {1}
// known already, {2} the line is full, {3} n's client has its share.
func (q *OrderQueue) enqueue(rdb *redis.Client, d time.Duration, n *orderq.Order, l orderq.Limits) ([]int64, error) {
	meta, _ := json.Marshal(n.Meta)
	r, err := q.script(rdb, d, "enqueue", n.Ticket, n.Ticket, n.Client, l.Max, l.PerClient, n.Path, n.Body, meta)
	return ints(r), err
}

// maybe keeps n, which Redis may or may not have queued, to be queued
// again until Redis answers.
func (q *OrderQueue) maybe(n *orderq.Order, err error) orderq.View {
	q.cfg.Logger.Warn("Redis did not say whether it queued an order: this node queues it again, under the same ticket, until Redis answers",
		zap.String("ticket", orderq.Short(n.Ticket)), zap.Error(redactURL(err)))
	if q.cfg.Store != nil {
		b, _ := json.Marshal(n)
		if err := q.cfg.Store.PutMeta(maybeQueued+n.Ticket, b); err != nil {
			q.cfg.Logger.Error("storing an order Redis may not have queued: a restart before Redis answers would lose it",
				zap.String("ticket", orderq.Short(n.Ticket)), zap.Error(err))
		}
	}
	v := queuedView(n)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.known[n.Ticket] = &known{v: v, used: time.Now(), maybe: n}
	q.stats.Enqueued++
	return v
}

// unsent reports whether a failed call certainly wrote nothing: no
// connection, or a refusal by Redis (the scripts check before they write).
func unsent(err error) bool {
	var reply redis.Error
	var op *net.OpError
	return errors.As(err, &reply) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, ErrRedisCluster) || (errors.As(err, &op) && op.Op == "dial")
}

// Get returns the ticket's view and a channel closed at the next change
// this node sees: a ticket of this node's own line first, then one of
// Redis's line. It counts as following. While Redis is out of reach, a
// ticket this node saw answers as it last saw it.
func (q *OrderQueue) Get(ticket string) (orderq.View, <-chan struct{}, bool) {
	if v, ch, ok := q.local.Get(ticket); ok {
		return v, ch, true
	}
	now := time.Now()
	q.mu.Lock()
	ch := q.changed
	if k := q.known[ticket]; k != nil && (k.maybe != nil || k.v.Final()) {
		k.used = now
		q.mu.Unlock()
		return k.v, ch, true
	}
	touch := now.Sub(q.touched[ticket]) >= q.touchEvery()
	if touch {
		q.touched[ticket] = now
	}
	q.mu.Unlock()
	v, found, err := q.view(ticket, touch)
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.known[ticket]
	switch {
	case k != nil && (err != nil || k.maybe != nil || k.v.Final()):
		k.used = now
		return k.v, ch, true
	case err != nil || !found:
		delete(q.touched, ticket)
		return orderq.View{}, nil, false
	}
	q.known[ticket] = &known{v: v, used: now}
	return v, ch, true
}

// view reads ticket's record and place in Redis, recording a follow when
// touch is set.
func (q *OrderQueue) view(ticket string, touch bool) (v orderq.View, found bool, err error) {
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "view", ticket, ticket, touch)
	a, _ := r.([]any)
	if err != nil || len(a) < 8 {
		return v, false, err
	}
	v = orderq.View{Ticket: ticket, State: orderq.State(str(a[0])), Reason: str(a[1]), Client: str(a[2]),
		At: msTime(a[4]), Done: msTime(a[5])}
	json.Unmarshal([]byte(str(a[3])), &v.Meta)
	if s := str(a[6]); s != "" {
		v.Answer = new(orderq.Answer)
		json.Unmarshal([]byte(s), v.Answer)
	}
	if rank, _ := a[7].(int64); rank >= 0 && v.State == orderq.Queued {
		v.Position = int(rank) + 1
		v.ETA = q.cfg.ETA(v.Position)
	}
	return v, true, nil
}

// Hold marks ticket followed until release: this node records its follow
// in Redis every touchEvery meanwhile, so that it is never abandoned.
func (q *OrderQueue) Hold(ticket string) (release func()) {
	if _, _, ok := q.local.Get(ticket); ok {
		return q.local.Hold(ticket)
	}
	q.mu.Lock()
	q.held[ticket]++
	q.mu.Unlock()
	return sync.OnceFunc(func() {
		q.mu.Lock()
		if q.held[ticket]--; q.held[ticket] <= 0 {
			delete(q.held, ticket)
		}
		q.touched[ticket] = time.Now()
		q.mu.Unlock()
		q.touch([]any{ticket})
	})
}

// Withdraw takes a queued order out of the line, for reason; an order
// already admitted, or one Redis cannot be asked about now, is not: ok is
// false and v says where it is, as far as this node knows.
func (q *OrderQueue) Withdraw(ticket, reason string) (orderq.View, bool) {
	if _, _, ok := q.local.Get(ticket); ok {
		return q.local.Withdraw(ticket, reason)
	}
	q.mu.Lock()
	k := q.known[ticket]
	q.mu.Unlock()
	if k != nil && k.maybe != nil {
		return k.v, false
	}
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "withdraw", ticket, ticket, reason)
	if a, _ := r.([]any); err != nil || len(a) == 0 || a[0] != int64(1) {
		v, _, _ := q.Get(ticket)
		return v, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if reason == orderq.ReasonAbandoned {
		q.stats.Abandoned++
	} else {
		q.stats.Withdrawn++
	}
	v := orderq.View{Ticket: ticket}
	if k != nil {
		v = k.v
	}
	v.State, v.Reason, v.Done, v.Position, v.ETA = orderq.Withdrawn, reason, time.Now(), 0, 0
	q.known[ticket] = &known{v: v, used: time.Now()}
	q.notifyLocked()
	return v, true
}

// Stats are the counts of Redis's line (length, head) and of this node:
// its own line's, and what it did with the institution's.
func (q *OrderQueue) Stats() orderq.Stats {
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "stats", "")
	q.mu.Lock()
	if a := ints(r); err == nil && len(a) == 2 {
		q.stats.Length, q.stats.Oldest = int(a[0]), time.Time{}
		if a[1] > 0 {
			q.stats.Oldest = time.UnixMilli(a[1])
		}
	}
	s := q.stats
	s.Max = q.lim.Max
	q.admits = orderq.LastMinute(q.admits, time.Now())
	s.PerMinute = len(q.admits)
	q.mu.Unlock()
	l := q.local.Stats()
	s.Length += l.Length
	s.Sending += l.Sending
	s.Enqueued += l.Enqueued
	s.Admitted += l.Admitted
	s.Placed += l.Placed
	s.Failed += l.Failed
	s.Withdrawn += l.Withdrawn
	s.Abandoned += l.Abandoned
	s.Refused += l.Refused
	s.PerMinute += l.PerMinute
	if !l.Oldest.IsZero() && (s.Oldest.IsZero() || l.Oldest.Before(s.Oldest)) {
		s.Oldest = l.Oldest
	}
	return s
}

// run admits the head of Redis's line whenever the gate gives a slot,
// claims it (marked sending by this node, in Redis, before its call) and
// sends it.
func (q *OrderQueue) run() {
	defer q.wg.Done()
	slot := false // a slot taken for a line that emptied meanwhile, kept for the next order
	lost := false // a claim's answer was lost: what it marked is put back first
	for q.ctx.Err() == nil {
		q.mu.Lock()
		send, changed := q.send, q.changed
		q.mu.Unlock()
		var head *orderq.Order
		var err error
		if send != nil {
			head, err = q.head()
		}
		if head == nil {
			retry := time.NewTimer(queueTick)
			if err == nil {
				retry.Stop() // only a change or a new order is worth a look
			}
			select {
			case <-q.wake:
			case <-changed:
			case <-retry.C:
			case <-q.ctx.Done():
			}
			retry.Stop()
			continue
		}
		if !slot {
			retryIn, err := q.cfg.Admit(q.ctx, head)
			if q.ctx.Err() != nil {
				return
			}
			if err != nil { // refused (a pause): not withdrawn
				q.pause(max(retryIn, 100*time.Millisecond))
				continue
			}
			slot = true
		}
		o, body, wait, err := q.claim(lost)
		switch {
		case err != nil:
			lost = lost || !unsent(err)
			q.pause(queueTick)
			continue
		case wait > 0:
			q.pause(min(wait, gapPoll))
			continue
		}
		lost = false
		if o == nil {
			continue // the line emptied: the next order has the slot
		}
		slot = false
		q.wg.Add(1)
		done := make(chan struct{})
		go q.sendOne(send, o, body, done)
		// As orderq: the next call leaves once this one is answered, or
		// queueGap after it left (the claim script holds the other nodes
		// as long).
		gap := time.NewTimer(queueGap)
		select {
		case <-done:
		case <-gap.C:
		case <-q.ctx.Done():
		}
		gap.Stop()
	}
}

// pause waits d, or until the queue closes.
func (q *OrderQueue) pause(d time.Duration) { wait.Sleep(q.ctx, d) }

// head is the order at the head of the line, for its admission; nil when
// the line is empty.
func (q *OrderQueue) head() (*orderq.Order, error) {
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "head", "")
	a, _ := r.([]any)
	if err != nil || len(a) < 5 {
		return nil, err
	}
	o := &orderq.Order{Ticket: str(a[0]), Path: str(a[1]), Client: str(a[2]), At: msTime(a[4]), State: orderq.Queued}
	json.Unmarshal([]byte(str(a[3])), &o.Meta)
	return o, nil
}

// claim takes the head of the line, marked sending by this node: o nil
// when the line is empty, wait > 0 while the last claimed call holds the
// line up. With back, the orders marked sending by this node that it is
// not sending (a claim whose answer was lost) go back to their places
// first.
func (q *OrderQueue) claim(back bool) (o *orderq.Order, body []byte, wait time.Duration, err error) {
	q.mu.Lock()
	args := []any{q.c.node, queueGap.Milliseconds(), back}
	for t := range q.sending {
		args = append(args, t)
	}
	q.mu.Unlock()
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "claim", "", args...)
	a, _ := r.([]any)
	if err != nil || len(a) == 0 {
		return nil, nil, 0, err
	}
	switch a[0] {
	case int64(0):
		return nil, nil, 0, nil
	case int64(1):
		w, _ := a[1].(int64)
		return nil, nil, time.Duration(w) * time.Millisecond, nil
	}
	seq, _ := strconv.ParseUint(str(a[2]), 10, 64)
	o = &orderq.Order{Ticket: str(a[1]), Seq: seq, Path: str(a[3]), Client: str(a[5]), At: msTime(a[7]), State: orderq.Sending}
	json.Unmarshal([]byte(str(a[6])), &o.Meta)
	now := time.Now()
	q.mu.Lock()
	q.sending[o.Ticket] = true
	q.stats.Admitted++
	q.stats.Sending++
	q.admits = append(orderq.LastMinute(q.admits, now), now)
	q.known[o.Ticket] = &known{v: orderq.View{Ticket: o.Ticket, State: orderq.Sending, Client: o.Client, Meta: o.Meta, At: o.At}, used: now}
	q.mu.Unlock()
	if q.cfg.OnAdmit != nil {
		q.cfg.OnAdmit(now.Sub(o.At))
	}
	return o, []byte(str(a[4])), 0, nil
}

// sendOne makes o's call and writes its outcome to Redis (or keeps it, to
// be written when Redis answers).
func (q *OrderQueue) sendOne(send orderq.SendFunc, o *orderq.Order, body []byte, done chan<- struct{}) {
	defer q.wg.Done()
	defer close(done)
	a := send(context.WithoutCancel(q.ctx), o, body)
	v := orderq.View{Ticket: o.Ticket, State: orderq.Failed, Client: o.Client, Meta: o.Meta, At: o.At, Done: time.Now(), Answer: a}
	q.mu.Lock()
	q.stats.Sending--
	if a != nil && a.Placed {
		v.State = orderq.Placed
		q.stats.Placed++
	} else {
		q.stats.Failed++
	}
	q.known[o.Ticket] = &known{v: v, used: time.Now(), unsaved: true}
	q.notifyLocked()
	q.mu.Unlock()
	q.saveOutcome(o.Ticket, v)
}

// saveOutcome writes this node's outcome v of its order to Redis.
func (q *OrderQueue) saveOutcome(ticket string, v orderq.View) {
	answer := []byte{}
	if v.Answer != nil {
		answer, _ = json.Marshal(v.Answer)
	}
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "outcome", ticket, ticket, q.c.node, string(v.State), v.Reason, answer)
	if err != nil {
		return // the janitor tries again
	}
	if r != int64(1) {
		q.cfg.Logger.Error("the outcome of an order this node sent was not written: another node has it", zap.String("ticket", orderq.Short(ticket)))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.sending, ticket)
	if k := q.known[ticket]; k != nil {
		k.unsaved = false
	}
}

// janitor looks for the other nodes' changes, retries what Redis did not
// take, records the follows of held tickets and sweeps the line.
func (q *OrderQueue) janitor() {
	defer q.wg.Done()
	t := time.NewTicker(queueTick)
	defer t.Stop()
	var swept time.Time
	for {
		select {
		case <-t.C:
		case <-q.ctx.Done():
			return
		}
		q.poll()
		q.retry()
		q.touchHeld()
		if now := time.Now(); now.Sub(swept) >= queueSweep {
			swept = now
			q.sweep()
			q.prune(now)
		}
	}
}

// poll closes the followers' channel when the line changed.
func (q *OrderQueue) poll() {
	ctx, cancel := q.c.op(q.ctx)
	defer cancel()
	v, err := q.c.rdb.Get(ctx, q.c.key("q", "ver")).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if v != q.ver {
		q.ver = v
		q.notifyLocked()
	}
}

// retry queues again the orders Redis may not have queued, and writes the
// outcomes it did not take.
func (q *OrderQueue) retry() {
	q.mu.Lock()
	var maybe []*orderq.Order
	outcomes := map[string]orderq.View{}
	for t, k := range q.known {
		switch {
		case k.maybe != nil:
			maybe = append(maybe, k.maybe)
		case k.unsaved:
			outcomes[t] = k.v
		}
	}
	q.mu.Unlock()
	for t, v := range outcomes {
		q.saveOutcome(t, v)
	}
	for _, o := range maybe {
		if time.Since(o.At) >= q.cfg.Keep {
			// Redis may have queued, sent and forgotten it meanwhile.
			q.cfg.Logger.Error("an order Redis may have queued was not confirmed within the time an outcome is kept: its outcome is unknown, and it is not queued again",
				zap.String("ticket", orderq.Short(o.Ticket)))
			q.settle(o, &orderq.View{Ticket: o.Ticket, State: orderq.Failed, Reason: orderq.ReasonUnknown, Client: o.Client,
				Meta: o.Meta, At: o.At, Done: time.Now()})
			continue
		}
		// The order was accepted already: the bounds do not apply.
		if _, err := q.enqueue(q.c.rdb, q.c.cfg.OpTimeout, o, orderq.Limits{Max: math.MaxInt32, PerClient: math.MaxInt32}); err != nil {
			return
		}
		q.settle(o, nil)
	}
}

// settle ends the doubt about o: Redis has it (v nil), or its outcome is v.
func (q *OrderQueue) settle(o *orderq.Order, v *orderq.View) {
	if q.cfg.Store != nil {
		q.cfg.Store.DeleteMeta(maybeQueued + o.Ticket)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if v == nil {
		delete(q.known, o.Ticket) // read from Redis from now on
	} else {
		q.known[o.Ticket] = &known{v: *v, used: time.Now()}
		q.stats.Failed++
	}
	q.notifyLocked()
}

// touchEvery is how often a follow is recorded: at least four times
// within abandon_after.
func (q *OrderQueue) touchEvery() time.Duration {
	return min(touchEvery, q.lim.AbandonAfter/4)
}

// touchHeld records the follows of the held tickets.
func (q *OrderQueue) touchHeld() {
	now := time.Now()
	var tickets []any
	q.mu.Lock()
	every := q.touchEvery()
	for t := range q.held {
		if now.Sub(q.touched[t]) >= every {
			q.touched[t] = now
			tickets = append(tickets, t)
		}
	}
	q.mu.Unlock()
	if len(tickets) > 0 {
		q.touch(tickets)
	}
}

func (q *OrderQueue) touch(tickets []any) {
	q.script(q.c.rdb, q.c.cfg.OpTimeout, "touch", "", tickets...)
}

// sweep withdraws the orders nobody followed for abandon_after, and
// reports unknown the orders of dead nodes' calls.
func (q *OrderQueue) sweep() {
	q.mu.Lock()
	after := q.lim.AbandonAfter
	q.mu.Unlock()
	r, err := q.script(q.c.rdb, q.c.cfg.OpTimeout, "sweep", "", after.Milliseconds(), (3 * q.c.cfg.Heartbeat).Milliseconds(), sweepMost)
	a := ints(r)
	if err != nil || len(a) < 2 || a[0]+a[1] == 0 {
		return
	}
	if a[0] > 0 {
		q.cfg.Logger.Info("withdrew queued orders nobody followed", zap.Int64("orders", a[0]), zap.Duration("after", after))
	}
	if a[1] > 0 {
		q.cfg.Logger.Error("orders were being sent by a node that is gone: their outcome is unknown, and they are not sent again", zap.Int64("orders", a[1]))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stats.Abandoned += uint64(a[0])
	q.stats.Failed += uint64(a[1])
	q.notifyLocked()
}

// prune forgets the tickets this node need not remember any more.
func (q *OrderQueue) prune(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for t, k := range q.known {
		final := k.v.Final() && now.Sub(k.v.Done) >= q.cfg.Keep
		unused := !k.v.Final() && now.Sub(k.used) >= time.Minute && !q.sending[t]
		if k.maybe == nil && !k.unsaved && q.held[t] == 0 && (final || unused) {
			delete(q.known, t)
		}
	}
	for t, at := range q.touched {
		if q.held[t] == 0 && now.Sub(at) >= touchEvery {
			delete(q.touched, t)
		}
	}
}

// script runs op of the queue's script, about ticket when not "", on rdb
// within d; a nil reply is nil.
func (q *OrderQueue) script(rdb *redis.Client, d time.Duration, op, ticket string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c := q.c
	keys := []string{c.key("q", "seq"), c.key("q", "line"), c.key("q", "seen"), c.key("q", "clients"), c.key("q", "sending"),
		c.key("q", "ver"), c.key("nodes"), c.key("q", "gap"), c.key("q", "o", ticket)}
	argv := append([]any{op, c.key("q", "o") + ":", lineKeep.Milliseconds(), q.cfg.Keep.Milliseconds()}, args...)
	// Whether Redis is reachable is the heartbeat's and the budget's to
	// say (Cluster.report): the queue's own calls, reads that pass while
	// writes are paused among them, would flip it back and forth.
	v, err := orderQueueScript.Run(ctx, rdb, keys, argv...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return v, err
}

// count changes this node's counts.
func (q *OrderQueue) count(fn func(*orderq.Stats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	fn(&q.stats)
}

// notifyLocked wakes the followers of this node's tickets and its
// dispatcher.
func (q *OrderQueue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
	q.poke()
}

func (q *OrderQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
func str(v any) string {
	s, _ := v.(string)
	return s
}

// msTime reads a time the script wrote, in Redis's milliseconds.
func msTime(v any) time.Time {
	n, err := strconv.ParseInt(str(v), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}
