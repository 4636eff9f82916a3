// Package orderq is the order queue of an on-sale: orders that S-360's
// budget cannot take at once wait in one FIFO and are admitted in arrival
// order, as fast as the budget gives slots. Each order is followed by an
// unguessable ticket, is persisted so that a restart keeps the line, and is
// sent at most once: it is marked sending in the store before its call,
// and an order found sending at start is reported unknown, never sent
// again.
//
// The queue knows nothing of S-360 or HTTP: its owner admits (Config.Admit)
// and sends (Start's SendFunc). It imports nothing of Caddy.
package orderq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/wait"
)

// State is where an order is.
type State string

const (
	Queued    State = "queued"    // waiting its turn
	Sending   State = "sending"   // admitted: its call is under way
	Placed    State = "placed"    // S-360 created the order
	Failed    State = "failed"    // S-360 refused it, or its outcome is unknown (Reason)
	Withdrawn State = "withdrawn" // taken out of the line before it was sent (Reason)
)

// Reasons of a withdrawal or of a failure without an answer.
const (
	ReasonWait      = "order_wait"    // its client stopped waiting (order_wait)
	ReasonAbandoned = "abandoned"     // nobody followed its ticket for AbandonAfter
	ReasonGone      = "client_gone"   // its client went away before it was sent
	ReasonUnknown   = "order_unknown" // the sidecar stopped while it was being sent
	ReasonStore     = "store_failed"  // the store could not give its body back: not sent
)

// Defaults of Config.
const (
	DefaultMax          = 100000
	DefaultPerClient    = 2
	DefaultAbandonAfter = 2 * time.Minute
	DefaultKeep         = 15 * time.Minute
)

// Errors of Enqueue.
var (
	ErrFull        = errors.New("the order queue is full")
	ErrClientLimit = errors.New("this client has as many orders queued as it may")
	ErrClosed      = errors.New("the order queue is closed")
)

// Order is one queued order.
type Order struct {
	Ticket string            `json:"ticket"`
	Seq    uint64            `json:"seq"` // arrival order
	Path   string            `json:"path"`
	Body   []byte            `json:"body"`
	Client string            `json:"client"`         // for the per-client bound
	Meta   map[string]string `json:"meta,omitempty"` // the owner's, e.g. the buyer's language
	At     time.Time         `json:"at"`             // arrival
	State  State             `json:"state"`
	Reason string            `json:"reason,omitempty"`
	Answer *Answer           `json:"answer,omitempty"` // once Placed or Failed with an answer
	Done   time.Time         `json:"done,omitzero"`    // outcome

	seen      time.Time // last poll, or end of the last follow; not persisted
	followers int       // open follows (Hold)
	admitting context.CancelFunc
}

// Answer is what S-360's answer to an order becomes for the buyer: an HTTP
// status, a few headers and a JSON body, persisted; Raw is what the sender
// kept in memory for a buyer still waiting in person (lost at restart).
type Answer struct {
	Placed bool              `json:"placed"`
	Status int               `json:"status"`
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"body"`
	Raw    any               `json:"-"`
}

// View is an order as its ticket shows it.
type View struct {
	Ticket   string
	State    State
	Reason   string
	Position int           // 1-based, while Queued; 0 otherwise
	ETA      time.Duration // estimated wait, while Queued
	Client   string
	Meta     map[string]string
	At, Done time.Time
	Answer   *Answer
}

// Final reports whether v is an outcome: nothing will change any more.
func (v View) Final() bool { return v.State != Queued && v.State != Sending }

// Store persists orders: the edge's store (cachestore.Store).
type Store interface {
	GetMeta(name string) ([]byte, error)
	PutMeta(name string, v []byte) error
	PutMetaTTL(name string, v []byte, ttl time.Duration) error
	DeleteMeta(name string) error
	ScanMeta(prefix string, fn func(name string, v []byte) bool) error
}

// SendFunc makes o's call with body, once; the queue has taken its slot
// already.
type SendFunc func(ctx context.Context, o *Order, body []byte) *Answer

// Limits are the bounds of the queue that a config sets (Start).
type Limits struct {
	Max          int           // most orders queued; DefaultMax
	PerClient    int           // most orders queued per client; DefaultPerClient
	AbandonAfter time.Duration // an order nobody followed this long is withdrawn; DefaultAbandonAfter
}

// Config configures a Queue. Zero fields take the defaults.
type Config struct {
	Store Store
	// Admit waits for a slot of the budget for the order at the head of
	// the line, until ctx ends. On a refusal it returns the error and
	// when to try again.
	Admit func(ctx context.Context, o *Order) (retryIn time.Duration, err error)
	// Rate is how many orders per second the budget admits now, for
	// estimated waits; nil or 0: none given.
	Rate func() float64
	Limits
	Keep time.Duration // how long a ticket answers after its outcome; DefaultKeep
	// OnAdmit sees each admitted order's wait in the line (metrics).
	OnAdmit func(wait time.Duration)
	Logger  *zap.Logger
}

// Stats are the queue's counts.
type Stats struct {
	Length    int       `json:"length"`  // queued now
	Sending   int       `json:"sending"` // calls under way
	Max       int       `json:"max"`
	Enqueued  uint64    `json:"enqueued"` // since start
	Admitted  uint64    `json:"admitted"`
	Placed    uint64    `json:"placed"`
	Failed    uint64    `json:"failed"`
	Withdrawn uint64    `json:"withdrawn"` // by order_wait or a client gone
	Abandoned uint64    `json:"abandoned"`
	Refused   uint64    `json:"refused"`         // Enqueue refusals: full or per client
	Oldest    time.Time `json:"oldest,omitzero"` // arrival of the head of the line
	PerMinute int       `json:"admitted_last_minute"`
}

// Queue is the order queue of one institution.
type Queue struct {
	cfg Config

	mu        sync.Mutex
	orders    map[string]*Order // by ticket: queued, sending, and outcomes until Keep passed
	line      []*Order          // queued, by Seq
	perClient map[string]int
	seq       uint64
	changed   chan struct{} // closed and replaced on every change
	send      SendFunc
	started   bool
	closed    bool
	admits    []time.Time // admissions of the last minute
	stats     Stats

	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const prefix = "orderq/"

// New opens the queue persisted in cfg.Store: queued orders keep their
// places; an order found sending failed with ReasonUnknown. Orders are not
// admitted before Start.
func New(cfg Config) (*Queue, error) {
	cfg = cfg.WithDefaults()
	q := &Queue{cfg: cfg, orders: map[string]*Order{}, perClient: map[string]int{},
		changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	now := time.Now()
	var unknown []*Order
	err := cfg.Store.ScanMeta(prefix, func(_ string, v []byte) bool {
		o := new(Order)
		if json.Unmarshal(v, o) != nil || o.Ticket == "" {
			return true // not ours to read: left alone
		}
		q.seq = max(q.seq, o.Seq)
		o.seen = now
		switch o.State {
		case Queued:
			o.Body = nil // read back when it is sent
			q.line = append(q.line, o)
			q.perClient[o.Client]++
		case Sending:
			o.State, o.Reason, o.Done = Failed, ReasonUnknown, now
			unknown = append(unknown, o)
		}
		q.orders[o.Ticket] = o
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(q.line, func(i, j int) bool { return q.line[i].Seq < q.line[j].Seq })
	for _, o := range unknown {
		cfg.Logger.Error("an order was being sent when the sidecar stopped: its outcome is unknown, and it is not sent again", zap.String("ticket", Short(o.Ticket)))
		q.persist(o)
	}
	q.stats.Failed += uint64(len(unknown))
	q.wg.Add(1)
	go q.janitor()
	return q, nil
}

// WithDefaults is cfg with its zero fields set to the defaults.
func (cfg Config) WithDefaults() Config {
	cfg.Limits = cfg.Limits.WithDefaults()
	cfg.Keep = cmpOr(cfg.Keep, DefaultKeep)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg
}

// WithDefaults is l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	return Limits{cmpOr(l.Max, DefaultMax), cmpOr(l.PerClient, DefaultPerClient), cmpOr(l.AbandonAfter, DefaultAbandonAfter)}
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Short is a ticket's prefix for logs: the ticket is a credential.
func Short(t string) string { return t[:min(len(t), 6)] + "…" }

// NewTicket is a new order's ticket: 128 random bits, in hex.
func NewTicket() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start admits orders, sending each with send, within l (zero fields take
// the defaults); a later call only replaces send and l (a reload's new
// config). A nil send stops admitting: the line waits (order_queue off).
func (q *Queue) Start(send SendFunc, l Limits) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.send, q.cfg.Limits = send, l.WithDefaults()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	if q.started || q.closed {
		return
	}
	q.started = true
	q.wg.Add(1)
	go q.run()
}

// Close stops admitting orders and waits for the calls under way, so that
// each one's outcome is stored.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}

// Enqueue puts o at the end of the line and returns its view: o's Path,
// Body, Client and Meta are kept; the rest is set here.
func (q *Queue) Enqueue(o Order) (View, error) {
	ticket := NewTicket()
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return View{}, ErrClosed
	case len(q.line) >= q.cfg.Max:
		q.stats.Refused++
		return View{}, ErrFull
	case q.perClient[o.Client] >= q.cfg.PerClient:
		q.stats.Refused++
		return View{}, ErrClientLimit
	}
	q.seq++
	now := time.Now()
	n := &Order{Ticket: ticket, Seq: q.seq, Path: o.Path, Body: o.Body, Client: o.Client,
		Meta: o.Meta, At: now, State: Queued, seen: now}
	if err := q.persistErr(n); err != nil {
		return View{}, err // not queued: the buyer gets an error, nothing is lost
	}
	n.Body = nil // in the store only, read back when it is sent: the line's memory does not grow with bodies
	q.orders[n.Ticket] = n
	q.line = append(q.line, n)
	q.perClient[n.Client]++
	q.stats.Enqueued++
	q.changedLocked()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return q.viewLocked(n), nil
}

// Get returns the ticket's view and a channel closed at its next change;
// ok is false for an unknown or expired ticket. It counts as following.
func (q *Queue) Get(ticket string) (v View, changed <-chan struct{}, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	o := q.orders[ticket]
	if o == nil {
		return View{}, nil, false
	}
	o.seen = time.Now()
	return q.viewLocked(o), q.changed, true
}

// Hold marks ticket followed until release is called: a buyer waiting in
// person or streaming its ticket. A followed order is never abandoned.
func (q *Queue) Hold(ticket string) (release func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	o := q.orders[ticket]
	if o == nil {
		return func() {}
	}
	o.followers++
	return sync.OnceFunc(func() {
		q.mu.Lock()
		o.followers--
		o.seen = time.Now()
		q.mu.Unlock()
	})
}

// Withdraw takes a queued order out of the line, for reason; an order
// already admitted is not: ok is false and v says where it is.
func (q *Queue) Withdraw(ticket, reason string) (v View, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	o := q.orders[ticket]
	if o == nil {
		return View{}, false
	}
	if o.State != Queued {
		return q.viewLocked(o), false
	}
	q.withdrawLocked(o, reason)
	return q.viewLocked(o), true
}

func (q *Queue) withdrawLocked(o *Order, reason string) {
	q.unlineLocked(o)
	o.State, o.Reason, o.Done = Withdrawn, reason, time.Now()
	o.Body = nil
	if reason == ReasonAbandoned {
		q.stats.Abandoned++
	} else {
		q.stats.Withdrawn++
	}
	if o.admitting != nil {
		o.admitting() // the head: stop waiting for its slot
	}
	q.persist(o)
	q.changedLocked()
}

// unlineLocked takes o out of the line.
func (q *Queue) unlineLocked(o *Order) {
	if i := q.posLocked(o); i >= 0 {
		q.line = slices.Delete(q.line, i, i+1)
	}
	if q.perClient[o.Client]--; q.perClient[o.Client] <= 0 {
		delete(q.perClient, o.Client)
	}
}

// posLocked is o's index in the line, or -1.
func (q *Queue) posLocked(o *Order) int {
	i := sort.Search(len(q.line), func(i int) bool { return q.line[i].Seq >= o.Seq })
	if i < len(q.line) && q.line[i] == o {
		return i
	}
	return -1
}

func (q *Queue) viewLocked(o *Order) View {
	v := View{Ticket: o.Ticket, State: o.State, Reason: o.Reason, Client: o.Client, Meta: o.Meta,
		At: o.At, Done: o.Done, Answer: o.Answer}
	if o.State == Queued {
		v.Position = q.posLocked(o) + 1
		v.ETA = q.cfg.ETA(v.Position)
	}
	return v
}

// ETA estimates the wait of the position'th order in line from the rate
// the budget admits orders now (Config.Rate); 0 when none is given.
func (cfg Config) ETA(position int) time.Duration {
	if cfg.Rate == nil {
		return 0
	}
	if r := cfg.Rate(); r > 0 {
		return time.Duration(float64(position) / r * float64(time.Second))
	}
	return 0
}

// changedLocked wakes everyone following a ticket.
func (q *Queue) changedLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// persist stores o: queued or sending without a TTL, an outcome for Keep.
// A failure is logged: the order goes on in memory.
func (q *Queue) persist(o *Order) {
	if err := q.persistErr(o); err != nil {
		q.cfg.Logger.Error("storing an order of the queue", zap.String("ticket", Short(o.Ticket)), zap.Error(err))
	}
}

func (q *Queue) persistErr(o *Order) error {
	v, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if o.State == Queued || o.State == Sending {
		return q.cfg.Store.PutMeta(prefix+o.Ticket, v)
	}
	return q.cfg.Store.PutMetaTTL(prefix+o.Ticket, v, q.cfg.Keep)
}

// run admits the head of the line whenever the budget gives a slot, marks
// it sending in the store, and sends it.
func (q *Queue) run() {
	defer q.wg.Done()
	slot := false // a slot taken for an order withdrawn meanwhile, kept for the next
	for {
		q.mu.Lock()
		var o *Order
		if len(q.line) > 0 && q.send != nil {
			o = q.line[0]
		}
		var ctx context.Context
		if o != nil && !slot {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(q.ctx)
			o.admitting = cancel
		}
		q.mu.Unlock()
		if o == nil {
			select {
			case <-q.wake:
				continue
			case <-q.ctx.Done():
				return
			}
		}
		if !slot {
			retry, err := q.cfg.Admit(ctx, o)
			q.mu.Lock()
			o.admitting()
			o.admitting = nil
			q.mu.Unlock()
			if q.ctx.Err() != nil {
				return
			}
			if err != nil {
				if ctx.Err() == nil { // refused (a pause): not withdrawn
					q.pause(retry)
				}
				continue
			}
		}
		q.mu.Lock()
		if o.State != Queued {
			slot = true // withdrawn while it waited: the next one has its slot
			q.mu.Unlock()
			continue
		}
		slot = false
		body, err := q.body(o)
		if err != nil {
			q.failLocked(o, err)
			q.mu.Unlock()
			slot = true // not sent: the next one has its slot
			continue
		}
		q.admitLocked(o)
		send := q.send
		q.mu.Unlock()
		q.wg.Add(1)
		done := make(chan struct{})
		go q.sendOne(send, o, body, done)
		// The next call leaves once this one is answered, or sendGap
		// after it left: calls reach S-360 in the line's order, and a slow
		// S-360 does not slow admissions below 1/sendGap.
		gap := time.NewTimer(sendGap)
		select {
		case <-done:
		case <-gap.C:
		case <-q.ctx.Done():
		}
		gap.Stop()
	}
}

// sendGap is the longest an admitted order's call holds up the next one.
const sendGap = 250 * time.Millisecond

// pause waits d (at least a second's tenth), or until the queue closes.
func (q *Queue) pause(d time.Duration) { wait.Sleep(q.ctx, max(d, 100*time.Millisecond)) }

// body reads o's body back from the store.
func (q *Queue) body(o *Order) ([]byte, error) {
	v, err := q.cfg.Store.GetMeta(prefix + o.Ticket)
	if err != nil {
		return nil, err
	}
	var stored Order
	if err := json.Unmarshal(v, &stored); err != nil {
		return nil, err
	}
	return stored.Body, nil
}

// failLocked ends o, not sent, when its body cannot be read back: the
// store failed it.
func (q *Queue) failLocked(o *Order, err error) {
	q.cfg.Logger.Error("reading a queued order back from the store: it fails, not sent", zap.String("ticket", Short(o.Ticket)), zap.Error(err))
	q.unlineLocked(o)
	o.State, o.Reason, o.Done = Failed, ReasonStore, time.Now()
	q.stats.Failed++
	q.persist(o)
	q.changedLocked()
}

func (q *Queue) admitLocked(o *Order) {
	now := time.Now()
	q.unlineLocked(o)
	o.State = Sending
	q.persist(o) // before the call: after a crash it is unknown, never sent again
	q.stats.Admitted++
	q.stats.Sending++
	q.admits = append(LastMinute(q.admits, now), now)
	if q.cfg.OnAdmit != nil {
		q.cfg.OnAdmit(now.Sub(o.At))
	}
	q.changedLocked()
}

func (q *Queue) sendOne(send SendFunc, o *Order, body []byte, done chan<- struct{}) {
	defer q.wg.Done()
	defer close(done)
	a := send(context.WithoutCancel(q.ctx), o, body)
	q.mu.Lock()
	defer q.mu.Unlock()
	o.Answer, o.Done = a, time.Now()
	q.stats.Sending--
	switch {
	case a != nil && a.Placed:
		o.State = Placed
		q.stats.Placed++
	default:
		o.State = Failed
		q.stats.Failed++
	}
	q.persist(o)
	q.changedLocked()
}

// sweepEvery is how often the janitor looks: an abandoned order goes at
// most this long after AbandonAfter.
const sweepEvery = 5 * time.Second

// janitor withdraws abandoned orders and forgets outcomes past Keep.
func (q *Queue) janitor() {
	defer q.wg.Done()
	wait.Every(q.ctx.Done(), sweepEvery, func() bool { q.sweep(time.Now()); return true })
}

func (q *Queue) sweep(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, o := range slices.Clone(q.line) {
		if o.followers == 0 && now.Sub(o.seen) >= q.cfg.AbandonAfter {
			q.cfg.Logger.Info("withdrawing a queued order nobody followed", zap.String("ticket", Short(o.Ticket)), zap.Duration("after", now.Sub(o.seen)))
			q.withdrawLocked(o, ReasonAbandoned)
		}
	}
	for t, o := range q.orders {
		if !o.Done.IsZero() && now.Sub(o.Done) >= q.cfg.Keep && o.State != Sending {
			delete(q.orders, t)
		}
	}
}

// Stats returns the queue's counts now.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Length, s.Max = len(q.line), q.cfg.Max
	if len(q.line) > 0 {
		s.Oldest = q.line[0].At
	}
	q.admits = LastMinute(q.admits, time.Now())
	s.PerMinute = len(q.admits)
	return s
}

// LastMinute is what admits (in time order) holds of the minute ending at
// now: Stats.PerMinute.
func LastMinute(admits []time.Time, now time.Time) []time.Time {
	cut := now.Add(-time.Minute)
	i := sort.Search(len(admits), func(i int) bool { return admits[i].After(cut) })
	return admits[i:]
}
