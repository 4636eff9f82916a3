package orderq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
)

// memStore is an in-memory Store for tests in a synctest bubble (Badger's
// own goroutines and timers do not belong in one); TestRestartKeepsTheLine
// uses the real store.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) PutMeta(name string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[name] = slices.Clone(v)
	return nil
}

func (s *memStore) GetMeta(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	if !ok {
		return nil, errors.New("not found")
	}
	return slices.Clone(v), nil
}

func (s *memStore) PutMetaTTL(name string, v []byte, _ time.Duration) error {
	return s.PutMeta(name, v)
}

func (s *memStore) DeleteMeta(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, name)
	return nil
}

func (s *memStore) ScanMeta(prefix string, fn func(string, []byte) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if strings.HasPrefix(k, prefix) && !fn(k, slices.Clone(v)) {
			break
		}
	}
	return nil
}

// sent records the orders sent, in order.
type sent struct {
	mu   sync.Mutex
	seqs []uint64
	at   []time.Time
}

func (s *sent) send(_ context.Context, o *Order, body []byte) *Answer {
	if string(body) != `{}` {
		panic("sent without its body: " + string(body))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs = append(s.seqs, o.Seq)
	s.at = append(s.at, time.Now())
	return &Answer{Placed: true, Status: 200, Body: []byte(`{"ok":true}`)}
}

func (s *sent) list() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

// admitWith admits through a real budget, as the edge does.
func admitWith(b *budget.Budget) func(ctx context.Context, _ *Order) (time.Duration, error) {
	return func(ctx context.Context, _ *Order) (time.Duration, error) {
		err := b.AcquireCall(ctx, budget.Call{Priority: budget.Queued, Method: "order"})
		var we *budget.WaitError
		if errors.As(err, &we) {
			return we.RetryIn, err
		}
		return 0, err
	}
}

func newQueue(t *testing.T, cfg Config) *Queue {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = &memStore{}
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func enqueue(t *testing.T, q *Queue, client string) View {
	t.Helper()
	v, err := q.Enqueue(Order{Path: "/order", Body: []byte(`{}`), Client: client})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Orders past the budget wait and are sent in arrival order, each once,
// never faster than the budget allows.
func TestFIFOWithinTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(budget.Config{Calls: 3, Window: time.Minute, FixedLimit: true, OrderReserve: -1, WatchReserve: -1})
		var s sent
		q := newQueue(t, Config{Admit: admitWith(b), Rate: func() float64 { return 3.0 / 60 }})
		views := make([]View, 10)
		for i := range views {
			views[i] = enqueue(t, q, fmt.Sprint("client", i))
			if views[i].Position != i+1 {
				t.Fatalf("order %d: position %d", i, views[i].Position)
			}
		}
		if want := 10 * 20 * time.Second; views[9].ETA != want {
			t.Fatalf("eta of the 10th = %v, want %v", views[9].ETA, want)
		}
		for i := range views { // followed, so none is abandoned
			defer q.Hold(views[i].Ticket)()
		}
		q.Start(s.send, Limits{})
		synctest.Wait()
		if got := s.list(); len(got) != 3 {
			t.Fatalf("sent at once %v, want the 3 the budget allows", got)
		}
		if v, _, _ := q.Get(views[3].Ticket); v.State != Queued || v.Position != 1 {
			t.Fatalf("4th order after 3 were sent: %+v", v)
		}
		time.Sleep(4 * time.Minute)
		synctest.Wait()
		// Calls admitted at one instant leave side by side, in any order;
		// no order leaves before one that arrived earlier.
		at := map[uint64]time.Time{}
		for i, seq := range s.list() {
			if _, twice := at[seq]; twice {
				t.Fatalf("order %d sent twice", seq)
			}
			at[seq] = s.at[i]
		}
		for seq := uint64(1); seq <= 10; seq++ {
			if _, ok := at[seq]; !ok {
				t.Fatalf("order %d never sent: %v", seq, s.list())
			}
			if seq > 1 && at[seq].Before(at[seq-1]) {
				t.Fatalf("order %d left before order %d", seq, seq-1)
			}
			if seq > 3 && at[seq].Sub(at[seq-3]) < time.Minute {
				t.Fatalf("order %d sent %v after order %d: over the budget", seq, at[seq].Sub(at[seq-3]), seq-3)
			}
		}
		v, _, _ := q.Get(views[9].Ticket)
		if v.State != Placed || v.Answer == nil || string(v.Answer.Body) != `{"ok":true}` {
			t.Fatalf("last order: %+v", v)
		}
		if st := q.Stats(); st.Admitted != 10 || st.Placed != 10 || st.Length != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A withdrawn order is never sent, and the slot its admission took goes
// to the next one; a withdrawal after admission does nothing.
func TestWithdrawnOrdersAreNeverSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(budget.Config{Calls: 1, Window: time.Minute, FixedLimit: true, OrderReserve: -1, WatchReserve: -1})
		var s sent
		q := newQueue(t, Config{Admit: admitWith(b)})
		a, bb, c := enqueue(t, q, "a"), enqueue(t, q, "b"), enqueue(t, q, "c")
		for _, v := range []View{a, bb, c} {
			defer q.Hold(v.Ticket)()
		}
		q.Start(s.send, Limits{})
		synctest.Wait()
		if _, ok := q.Withdraw(a.Ticket, ReasonWait); ok {
			t.Fatal("withdrew an order already sent")
		}
		// b is the head, waiting for the next window.
		if v, ok := q.Withdraw(bb.Ticket, ReasonWait); !ok || v.State != Withdrawn || v.Reason != ReasonWait {
			t.Fatalf("withdrawing the head: %+v %v", v, ok)
		}
		if v, _, _ := q.Get(c.Ticket); v.Position != 1 {
			t.Fatalf("position after the head left: %d", v.Position)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := s.list(); !slices.Equal(got, []uint64{1, 3}) {
			t.Fatalf("sent %v, want 1 then 3 (2 withdrawn)", got)
		}
		if st := q.Stats(); st.Withdrawn != 1 || st.Admitted != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// Nobody following a queued ticket for AbandonAfter withdraws it; a poll
// or an open follow keeps it.
func TestAbandonedOrdersAreWithdrawn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		admit := func(ctx context.Context, _ *Order) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }
		var s sent
		q := newQueue(t, Config{Admit: admit, Limits: Limits{AbandonAfter: time.Minute}})
		left, polled, held := enqueue(t, q, "a"), enqueue(t, q, "b"), enqueue(t, q, "c")
		release := q.Hold(held.Ticket)
		q.Start(s.send, Limits{AbandonAfter: time.Minute})
		for range 4 {
			time.Sleep(20 * time.Second)
			q.Get(polled.Ticket)
		}
		synctest.Wait()
		if v, _, _ := q.Get(left.Ticket); v.State != Withdrawn || v.Reason != ReasonAbandoned {
			t.Fatalf("order nobody followed: %+v", v)
		}
		for _, tk := range []string{polled.Ticket, held.Ticket} {
			if v, _, _ := q.Get(tk); v.State != Queued {
				t.Fatalf("followed order: %+v", v)
			}
		}
		release()
		if st := q.Stats(); st.Abandoned != 1 || st.Length != 2 || len(s.list()) != 0 {
			t.Fatalf("stats %+v, sent %v", st, s.list())
		}
	})
}

func TestBoundsPerClientAndLength(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		admit := func(ctx context.Context, _ *Order) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }
		q := newQueue(t, Config{Admit: admit, Limits: Limits{Max: 3}})
		enqueue(t, q, "a")
		first := enqueue(t, q, "a")
		if _, err := q.Enqueue(Order{Client: "a"}); !errors.Is(err, ErrClientLimit) {
			t.Fatalf("third order of one client: %v", err)
		}
		enqueue(t, q, "b")
		if _, err := q.Enqueue(Order{Client: "c"}); !errors.Is(err, ErrFull) {
			t.Fatalf("order past Max: %v", err)
		}
		q.Withdraw(first.Ticket, ReasonWait)
		enqueue(t, q, "a") // room again, for the line and for a
		if st := q.Stats(); st.Refused != 2 || st.Length != 3 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// Tickets are 128 random bits, hex.
func TestTicketsAreUnguessable(t *testing.T) {
	q := newQueue(t, Config{Admit: func(ctx context.Context, _ *Order) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }, Limits: Limits{PerClient: 1000}})
	seen := map[string]bool{}
	for range 200 {
		v := enqueue(t, q, "a")
		if len(v.Ticket) != 32 || seen[v.Ticket] || strings.Trim(v.Ticket, "0123456789abcdef") != "" {
			t.Fatalf("ticket %q", v.Ticket)
		}
		seen[v.Ticket] = true
	}
	if _, _, ok := q.Get(strings.Repeat("0", 32)); ok {
		t.Fatal("a made-up ticket was found")
	}
}

// A restart keeps the line and its positions; an order that was being
// sent is reported unknown and never sent again.
func TestRestartKeepsTheLine(t *testing.T) {
	store, err := cachestore.Open(cachestore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	admitted := make(chan struct{}, 1)
	admitOne := func(ctx context.Context, _ *Order) (time.Duration, error) {
		select {
		case admitted <- struct{}{}:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	q1, err := New(Config{Store: store, Admit: admitOne})
	if err != nil {
		t.Fatal(err)
	}
	views := []View{enqueue(t, q1, "a"), enqueue(t, q1, "b"), enqueue(t, q1, "c")}
	sending, unblock := make(chan struct{}), make(chan struct{})
	q1.Start(func(context.Context, *Order, []byte) *Answer {
		close(sending)
		<-unblock
		return &Answer{Placed: true}
	}, Limits{})
	<-sending // the first is marked sending in the store; the sidecar "dies" now

	var s sent
	q2, err := New(Config{Store: store, Admit: func(ctx context.Context, _ *Order) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	q2.Start(s.send, Limits{})
	if v, _, ok := q2.Get(views[0].Ticket); !ok || v.State != Failed || v.Reason != ReasonUnknown {
		t.Fatalf("order being sent at the crash: %+v %v", v, ok)
	}
	for i, want := range []int{1, 2} {
		if v, _, ok := q2.Get(views[i+1].Ticket); !ok || v.State != Queued || v.Position != want {
			t.Fatalf("order %d after restart: %+v %v", i+2, v, ok)
		}
	}
	if n := len(s.list()); n != 0 {
		t.Fatalf("sent %d after restart without a slot", n)
	}
	close(unblock)
	q1.Close()
}
