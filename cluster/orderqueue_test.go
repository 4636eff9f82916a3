package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/orderq"
)

// openOrderQueue opens c's order queue with admit as its gate, and its
// local queue in a store of its own; both close at the test's end, before
// c.
func openOrderQueue(t *testing.T, c *Cluster, admit func(context.Context, *orderq.Order) (time.Duration, error)) *OrderQueue {
	t.Helper()
	store, err := cachestore.Open(cachestore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := orderq.Config{Store: store, Admit: admit}
	local, err := orderq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q, err := NewOrderQueue(c, local, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// gate admits one order per value sent on it.
func gate(ch chan struct{}) func(context.Context, *orderq.Order) (time.Duration, error) {
	return func(ctx context.Context, _ *orderq.Order) (time.Duration, error) {
		select {
		case <-ch:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// budgetGate admits through b, at the queued orders' priority.
func budgetGate(b *Budget) func(context.Context, *orderq.Order) (time.Duration, error) {
	return func(ctx context.Context, o *orderq.Order) (time.Duration, error) {
		err := b.AcquireCall(ctx, budget.Call{Priority: budget.Queued, Client: o.Client})
		var we *budget.WaitError
		if errors.As(err, &we) {
			return we.RetryIn, err
		}
		return 0, err
	}
}

// call is one order sent.
type call struct {
	node, ticket, body string
	start, end         time.Time
}

// calls records the orders the nodes send, as S-360 would see them.
type calls struct {
	mu  sync.Mutex
	got []call
}

// send is node's SendFunc: each call takes d, and places its order.
func (s *calls) send(node string, d time.Duration) orderq.SendFunc {
	return func(_ context.Context, o *orderq.Order, body []byte) *orderq.Answer {
		c := call{node: node, ticket: o.Ticket, body: string(body), start: time.Now()}
		time.Sleep(d) // the call's latency
		c.end = time.Now()
		s.mu.Lock()
		s.got = append(s.got, c)
		s.mu.Unlock()
		return &orderq.Answer{Placed: true, Status: 200, Body: []byte(`{"redirectUrl":"cart?orderId=` + string(body) + `"}`)}
	}
}

func (s *calls) all() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *calls) bodies() []string {
	var b []string
	for _, c := range s.all() {
		b = append(b, c.body)
	}
	return b
}

// waitView polls ticket on q until ok holds.
func waitView(t *testing.T, q *OrderQueue, ticket, what string, ok func(orderq.View) bool) orderq.View {
	t.Helper()
	var v orderq.View
	waitFor(t, 10*time.Second, what, func() bool {
		v, _, _ = q.Get(ticket)
		return ok(v)
	})
	return v
}

func placed(v orderq.View) bool { return v.State == orderq.Placed }

func enqueue(t *testing.T, q *OrderQueue, client, body string) orderq.View {
	t.Helper()
	v, err := q.Enqueue(orderq.Order{Path: "order", Body: []byte(body), Client: client, Meta: map[string]string{"lang": "fr"}})
	if err != nil {
		t.Fatalf("Enqueue %s: %v", body, err)
	}
	return v
}

// TestOrderQueueFIFOAcrossNodes: orders posted alternately on two nodes,
// admitted by the cluster's budget (4 a second), are sent in the order
// they arrived, each once, one call after the other's answer, by both
// nodes; each node follows the other's tickets to their outcome.
func TestOrderQueueFIFOAcrossNodes(t *testing.T) {
	r := startRedisB(t)
	cfg := budget.Config{Calls: 4, Window: time.Second, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, r.Addr, 2, cfg, nodeOpts{prefix: "t"})
	var sent calls
	qs := make([]*OrderQueue, 2)
	for i, n := range nodes {
		qs[i] = openOrderQueue(t, n.c, budgetGate(n.b))
		qs[i].Start(sent.send(n.c.Node(), 100*time.Millisecond), orderq.Limits{})
	}
	const orders = 12
	var tickets []string
	var want []string
	for i := range orders {
		body := strconv.Itoa(i)
		v := enqueue(t, qs[i%2], fmt.Sprint("client", i), body)
		tickets, want = append(tickets, v.Ticket), append(want, body)
	}
	for i, tk := range tickets {
		other := qs[(i+1)%2]
		v := waitView(t, other, tk, "order "+strconv.Itoa(i)+" placed, seen on the other node", placed)
		if v.Answer == nil || v.Answer.Status != 200 || string(v.Answer.Body) != `{"redirectUrl":"cart?orderId=`+strconv.Itoa(i)+`"}` ||
			v.Meta["lang"] != "fr" || v.Client != fmt.Sprint("client", i) {
			t.Fatalf("order %d on the other node: %+v", i, v)
		}
	}
	got := sent.all()
	if b := sent.bodies(); !slices.Equal(b, want) {
		t.Fatalf("sent %v; want each order once, in arrival order %v", b, want)
	}
	by := map[string]int{}
	for i, c := range got {
		by[c.node]++
		if i > 0 && c.start.Before(got[i-1].end) {
			t.Fatalf("call %d (node %s) left at %v, before call %d (node %s) was answered at %v",
				i, c.node, c.start.Format("15:04:05.000"), i-1, got[i-1].node, got[i-1].end.Format("15:04:05.000"))
		}
	}
	if len(by) != 2 {
		t.Fatalf("calls by node %v: want both nodes to send", by)
	}
	checkWindows(t, allGrants(nodes), 4, time.Second)
	a, b := qs[0].Stats(), qs[1].Stats()
	if a.Admitted+b.Admitted != orders || a.Placed+b.Placed != orders || a.Enqueued != orders/2 || a.Length != 0 || a.Sending+b.Sending != 0 {
		t.Fatalf("stats %+v and %+v", a, b)
	}
}

// TestOrderQueueFollowedOnAnotherNode: a ticket of node A is followed on
// node B: its position, B's channel closing on A's changes, its outcome.
func TestOrderQueueFollowedOnAnotherNode(t *testing.T) {
	r := startRedisB(t)
	admit := make(chan struct{})
	var sent calls
	a := openOrderQueue(t, stateNode(t, r, "a", ""), gate(admit))
	b := openOrderQueue(t, stateNode(t, r, "b", ""), gate(nil))
	a.Start(sent.send("a", 0), orderq.Limits{}) // node B only follows: its channel closes on A's changes
	first := enqueue(t, a, "x", "first")
	second := enqueue(t, a, "y", "second")
	if first.Position != 1 || second.Position != 2 || second.State != orderq.Queued {
		t.Fatalf("views at enqueue: %+v, %+v", first, second)
	}
	v, changed, ok := b.Get(second.Ticket)
	if !ok || v.State != orderq.Queued || v.Position != 2 || v.Client != "y" || !v.At.Equal(second.At) {
		t.Fatalf("node B sees %+v (ok %v); want queued at position 2", v, ok)
	}
	admit <- struct{}{}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("node B's channel did not close when the head of the line was sent")
	}
	waitView(t, b, second.Ticket, "position 1 on node B", func(v orderq.View) bool { return v.Position == 1 })
	admit <- struct{}{}
	v = waitView(t, b, second.Ticket, "placed, on node B", placed)
	if !v.Final() || v.Answer == nil || string(v.Answer.Body) != `{"redirectUrl":"cart?orderId=second"}` {
		t.Fatalf("outcome on node B: %+v", v)
	}
	if _, _, ok := b.Get("0123456789abcdef0123456789abcdef"); ok {
		t.Fatal("an unknown ticket is found")
	}
}

// TestOrderQueueWithdrawAndAbandon: an order withdrawn on another node
// than its own, and one nobody followed for abandon_after, are never sent;
// one held on another node is kept, and sent.
func TestOrderQueueWithdrawAndAbandon(t *testing.T) {
	r := startRedisB(t)
	admit := make(chan struct{})
	var sent calls
	a := openOrderQueue(t, stateNode(t, r, "a", ""), gate(admit))
	b := openOrderQueue(t, stateNode(t, r, "b", ""), gate(admit))
	l := orderq.Limits{AbandonAfter: 2 * time.Second}
	a.Start(sent.send("a", 0), l)
	b.Start(sent.send("b", 0), l)
	withdrawn := enqueue(t, a, "x", "withdrawn")
	abandoned := enqueue(t, b, "y", "abandoned")
	held := enqueue(t, a, "z", "held")
	defer b.Hold(held.Ticket)()
	v, ok := b.Withdraw(withdrawn.Ticket, orderq.ReasonWait)
	if !ok || v.State != orderq.Withdrawn || v.Reason != orderq.ReasonWait {
		t.Fatalf("withdraw on node B: %+v %v", v, ok)
	}
	if _, ok := a.Withdraw(withdrawn.Ticket, orderq.ReasonGone); ok {
		t.Fatal("an order withdrawn already was withdrawn again")
	}
	if v, _, _ := a.Get(withdrawn.Ticket); v.State != orderq.Withdrawn || v.Reason != orderq.ReasonWait {
		t.Fatalf("node A sees its withdrawn order as %+v", v)
	}
	// Polling its ticket would follow it: the sweeps' count tells.
	waitFor(t, 10*time.Second, "the unfollowed order abandoned", func() bool {
		a.sweep()
		return a.Stats().Abandoned == 1
	})
	if v, _, _ := a.Get(abandoned.Ticket); v.State != orderq.Withdrawn || v.Reason != orderq.ReasonAbandoned {
		t.Fatalf("the unfollowed order: %+v", v)
	}
	if v, _, _ := a.Get(held.Ticket); v.State != orderq.Queued || v.Position != 1 {
		t.Fatalf("the order held on node B: %+v; want queued, first", v)
	}
	admit <- struct{}{} // one slot: the head of the line is the held order
	waitView(t, a, held.Ticket, "the held order placed", placed)
	if got := sent.bodies(); !slices.Equal(got, []string{"held"}) {
		t.Fatalf("sent %v; want the held order only", got)
	}
	if s := a.Stats(); s.Length != 0 || s.Abandoned != 1 || s.Placed+b.Stats().Placed != 1 {
		t.Fatalf("node A's stats %+v", s)
	}
	if s := b.Stats(); s.Withdrawn != 1 {
		t.Fatalf("node B's stats %+v", s)
	}
}

// TestOrderQueueBounds: order_queue_max and order_queue_per_client hold
// for the institution's line, whichever node an order comes to; a retry of
// an enqueue with the same ticket does not queue it twice.
func TestOrderQueueBounds(t *testing.T) {
	r := startRedisB(t)
	a := openOrderQueue(t, stateNode(t, r, "a", ""), gate(nil))
	b := openOrderQueue(t, stateNode(t, r, "b", ""), gate(nil))
	l := orderq.Limits{Max: 3, PerClient: 2}
	a.Start(nil, l)
	b.Start(nil, l)
	first := enqueue(t, a, "x", "1")
	enqueue(t, b, "x", "2")
	if _, err := a.Enqueue(orderq.Order{Client: "x"}); !errors.Is(err, orderq.ErrClientLimit) {
		t.Fatalf("a third order of client x: %v, want ErrClientLimit", err)
	}
	enqueue(t, b, "y", "3")
	if _, err := a.Enqueue(orderq.Order{Client: "z"}); !errors.Is(err, orderq.ErrFull) {
		t.Fatalf("a fourth order in a line of 3: %v, want ErrFull", err)
	}
	if _, ok := b.Withdraw(first.Ticket, orderq.ReasonWait); !ok {
		t.Fatal("withdraw")
	}
	again := enqueue(t, a, "x", "4")
	if again.Position != 3 {
		t.Fatalf("client x's order after a withdrawal: %+v", again)
	}
	o := &orderq.Order{Ticket: again.Ticket, Client: "w"}
	if res, err := a.enqueue(a.c.rdb, time.Second, o, l); err != nil || res[0] != 1 {
		t.Fatalf("the same ticket again: %v %v; want known already", res, err)
	}
	if s := a.Stats(); s.Length != 3 || s.Refused != 2 || s.Max != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// TestOrderQueueDeadNodeSending: an order that a node was sending when it
// died is reported order_unknown by the others, and never sent again.
func TestOrderQueueDeadNodeSending(t *testing.T) {
	r := startRedisB(t)
	admitA, admitB := make(chan struct{}), make(chan struct{})
	ca := stateNode(t, r, "a", "")
	a := openOrderQueue(t, ca, gate(admitA))
	b := openOrderQueue(t, stateNode(t, r, "b", ""), gate(admitB))
	started, unblock := make(chan string, 1), make(chan struct{})
	t.Cleanup(func() { close(unblock) }) // before a closes, which waits for its call
	a.Start(func(_ context.Context, o *orderq.Order, _ []byte) *orderq.Answer {
		started <- o.Ticket
		<-unblock
		return &orderq.Answer{Placed: true, Status: 200}
	}, orderq.Limits{})
	var sent calls
	b.Start(sent.send("b", 0), orderq.Limits{})
	v := enqueue(t, b, "x", "lost")
	admitA <- struct{}{}
	if tk := <-started; tk != v.Ticket {
		t.Fatalf("node A sends %s", tk)
	}
	if v, _, _ := b.Get(v.Ticket); v.State != orderq.Sending {
		t.Fatalf("while node A sends it: %+v", v)
	}
	die(ca)
	waitFor(t, 10*time.Second, "the dead node's order reported unknown", func() bool {
		b.sweep()
		v, _, _ := b.Get(v.Ticket)
		return v.State == orderq.Failed
	})
	if got, _, _ := b.Get(v.Ticket); got.Reason != orderq.ReasonUnknown || got.Answer != nil {
		t.Fatalf("the dead node's order: %+v", got)
	}
	next := enqueue(t, b, "y", "next")
	admitB <- struct{}{}
	waitView(t, b, next.Ticket, "the next order placed", placed)
	if got := sent.bodies(); !slices.Equal(got, []string{"next"}) {
		t.Fatalf("node B sent %v; want the next order only", got)
	}
	if s := b.Stats(); s.Failed != 1 {
		t.Fatalf("node B's stats %+v", s)
	}
}

// TestOrderQueueLostClaim: an order marked sending by a claim whose
// answer this node never got goes back to its place, and is sent once.
func TestOrderQueueLostClaim(t *testing.T) {
	r := startRedisB(t)
	c := stateNode(t, r, "a", "")
	q := openOrderQueue(t, c, gate(nil))
	first := enqueue(t, q, "x", "first")
	enqueue(t, q, "y", "second")
	if _, err := q.script(c.rdb, time.Second, "claim", "", c.node, 1, false); err != nil { // its answer "lost"
		t.Fatal(err)
	}
	if v, _, _ := q.Get(first.Ticket); v.State != orderq.Sending {
		t.Fatalf("claimed: %+v", v)
	}
	o, _, wait, err := q.claim(true)
	for err == nil && wait > 0 {
		time.Sleep(wait) // the gap of the lost claim
		o, _, wait, err = q.claim(true)
	}
	if err != nil || o == nil || o.Ticket != first.Ticket {
		t.Fatalf("claim after a lost one: %+v %v; want the first order, back at its place", o, err)
	}
	if v, _, _ := q.Get(first.Ticket); v.State != orderq.Sending {
		t.Fatalf("claimed again: %+v", v)
	}
	if s := q.Stats(); s.Length != 1 {
		t.Fatalf("stats %+v: want the second order left in line", s)
	}
}

// TestOrderQueueRedisDown: with Redis out of reach a node queues orders
// in its own line, sends them within its share of the budget (4 a second
// for 2 nodes: 2), and follows their tickets; once Redis is back, orders
// join the institution's line again.
func TestOrderQueueRedisDown(t *testing.T) {
	r := startRedisB(t)
	cfg := budget.Config{Calls: 4, Window: time.Second, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}
	nodes := newNodes(t, r.Addr, 2, cfg, nodeOpts{heartbeat: 100 * time.Millisecond})
	var sent calls
	q := openOrderQueue(t, nodes[0].c, budgetGate(nodes[0].b))
	other := openOrderQueue(t, nodes[1].c, budgetGate(nodes[1].b))
	q.Start(sent.send("a", 0), orderq.Limits{PerClient: 100})
	r.Kill()
	waitFor(t, 5*time.Second, "the node sees Redis out of reach", func() bool { return !nodes[0].c.Status().RedisOK })
	var tickets, want []string
	for i := range 6 {
		v := enqueue(t, q, "x", strconv.Itoa(i))
		if _, _, ok := q.local.Get(v.Ticket); !ok {
			t.Fatalf("order %d is not in the node's own line", i)
		}
		tickets, want = append(tickets, v.Ticket), append(want, strconv.Itoa(i))
	}
	for i, tk := range tickets {
		waitView(t, q, tk, fmt.Sprintf("local order %d placed", i), placed)
	}
	if got := sent.bodies(); !slices.Equal(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	checkWindows(t, nodes[0].granted(), 2, time.Second)
	if _, _, ok := other.Get(tickets[0]); ok {
		t.Fatal("another node knows a ticket of this node's own line")
	}
	r.Restart()
	waitFor(t, 5*time.Second, "the node sees Redis again", func() bool { return nodes[0].c.Status().RedisOK })
	v := enqueue(t, q, "x", "back")
	if _, _, ok := q.local.Get(v.Ticket); ok {
		t.Fatal("with Redis back, an order joined the node's own line")
	}
	waitView(t, other, v.Ticket, "the order placed, seen on the other node", placed)
	if s := q.Stats(); s.Placed != 7 || s.Enqueued != 7 || s.Length != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestOrderQueueMaybeQueued: an enqueue that Redis may have taken without
// answering (Redis paused past the timeouts) is answered queued, and the
// order is queued again under its ticket once Redis answers: it is sent
// once.
func TestOrderQueueMaybeQueued(t *testing.T) {
	r := startRedisB(t)
	c := stateNodeCfg(t, Config{URL: r.URL(), Node: "a"})
	admit := make(chan struct{})
	q := openOrderQueue(t, c, gate(admit))
	var sent calls
	q.Start(sent.send("a", 0), orderq.Limits{})
	enqueue(t, q, "warm", "warm-up") // a connection in the pool: the next call's write reaches Redis
	r.Pause()
	c.redisOK.Store(true) // as if the pause had just begun
	v := enqueue(t, q, "x", "maybe")
	r.Resume()
	if _, _, ok := q.local.Get(v.Ticket); ok || v.State != orderq.Queued {
		t.Fatalf("an order Redis may have: %+v, in the local line: %v", v, ok)
	}
	q.mu.Lock()
	maybe := q.known[v.Ticket] != nil && q.known[v.Ticket].maybe != nil
	q.mu.Unlock()
	if !maybe {
		t.Fatal("the order is not kept as one Redis may not have")
	}
	waitFor(t, 10*time.Second, "the order confirmed in Redis", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		k := q.known[v.Ticket]
		return k == nil || k.maybe == nil
	})
	admit <- struct{}{} // the warm-up order
	admit <- struct{}{}
	waitView(t, q, v.Ticket, "placed", placed)
	if got := sent.bodies(); !slices.Equal(got, []string{"warm-up", "maybe"}) {
		t.Fatalf("sent %v", got)
	}
	if n, err := r.client().Exists(t.Context(), c.key("q", "o", v.Ticket)).Result(); err != nil || n != 1 {
		t.Fatalf("the ticket's record: %d %v", n, err)
	}
}
