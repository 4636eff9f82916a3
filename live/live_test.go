package live

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// sseWriter is a ResponseWriter with Flush and write deadlines, safe to
// read while Serve writes. With block set, a write waits until block is
// closed or its deadline passes (a client that stopped reading).
type sseWriter struct {
	mu       sync.Mutex
	hdr      http.Header
	status   int
	buf      bytes.Buffer
	block    chan struct{}
	deadline time.Time
}

func newWriter() *sseWriter { return &sseWriter{hdr: http.Header{}} }

func (w *sseWriter) Header() http.Header { return w.hdr }
func (w *sseWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status = code
}
func (w *sseWriter) Flush() {}
func (w *sseWriter) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadline = t
	return nil
}

func (w *sseWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	block, deadline := w.block, w.deadline
	w.mu.Unlock()
	if block != nil {
		var expired <-chan time.Time
		if !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-block:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func (w *sseWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// events are the data lines of the events written so far.
func (w *sseWriter) events() []string {
	var out []string
	for _, l := range strings.Split(w.String(), "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

// stream serves sub on w in a goroutine of the bubble until cancel; done
// is closed when Serve has returned (and closed sub, as the handler does).
func stream(t *testing.T, sub *Sub, w *sseWriter) (cancel context.CancelFunc, done chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := httptest.NewRequest(http.MethodGet, Path, nil).WithContext(ctx)
	done = make(chan struct{})
	go func() {
		defer close(done)
		defer sub.Close()
		Serve(w, r, sub)
	}()
	return cancel, done
}

func subscribe(t *testing.T, h *Hub, products ...string) *Sub {
	t.Helper()
	s, err := h.Subscribe(products)
	if err != nil {
		t.Fatalf("Subscribe(%v): %v", products, err)
	}
	return s
}

func TestParseProducts(t *testing.T) {
	hundred := make([]string, MaxProducts)
	for i := range hundred {
		hundred[i] = fmt.Sprint(1000 + i)
	}
	for _, tc := range []struct {
		in   []string
		want string // the ids joined, or the error's start
	}{
		{[]string{"10228400031,10228400032"}, "10228400031 10228400032"},
		{[]string{"7", "8,7"}, "7 8"}, // repeated parameters add up; an id counts once
		{[]string{strings.Join(hundred, ",")}, strings.Join(hundred, " ")},
		{[]string{strings.Join(hundred, ",") + ",5"}, "products: 101 products; a subscription follows at most 100"},
		{nil, "products: missing"},
		{[]string{""}, `products: "" is not a product id`},
		{[]string{"1,,2"}, `products: "" is not a product id`},
		{[]string{"12a"}, `products: "12a" is not a product id`},
		{[]string{"012"}, `products: "012" is not a product id`},
		{[]string{"-3"}, `products: "-3" is not a product id`},
		{[]string{"0"}, `products: "0" is not a product id`},
		{[]string{"1 2"}, `products: "1 2" is not a product id`},
		{[]string{"1234567890123456789"}, `products: "1234567890123456789" is not a product id`},
	} {
		ids, err := ParseProducts(tc.in)
		got := strings.Join(ids, " ")
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, tc.want) || (err == nil) != (ids != nil) {
			t.Errorf("ParseProducts(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Each subscriber gets the events of the products it named, and only
// those, in order.
func TestHubDeliversOnlyTheNamedProducts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		h := NewHub(10, &c)
		wa, wb := newWriter(), newWriter()
		cancelA, doneA := stream(t, subscribe(t, h, "1", "2"), wa)
		cancelB, doneB := stream(t, subscribe(t, h, "3"), wb)
		synctest.Wait()
		if wa.status != http.StatusOK || wa.hdr.Get("Content-Type") != "text/event-stream" || !strings.HasPrefix(wa.String(), "retry: 5000\n") {
			t.Fatalf("opening: %d %q %q", wa.status, wa.hdr.Get("Content-Type"), wa.String())
		}

		h.Changed([]string{"1"})
		h.Changed([]string{"4", "2"}) // 4: nobody listens
		synctest.Wait()
		if got, want := strings.Join(wa.events(), " "), `{"productId":1} {"productId":2}`; got != want {
			t.Errorf("A (1, 2) got %s, want %s", got, want)
		}
		if got := wb.events(); len(got) != 0 {
			t.Errorf("B (3) got %v, want nothing", got)
		}
		if !strings.Contains(wa.String(), "\nevent: availability\ndata: {\"productId\":1}\n\n") {
			t.Errorf("A's stream is not made of availability events: %q", wa.String())
		}

		h.Changed([]string{"3"})
		synctest.Wait()
		if got := strings.Join(wb.events(), " "); got != `{"productId":3}` {
			t.Errorf("B got %s, want only 3's event", got)
		}
		if len(wa.events()) != 2 {
			t.Errorf("A got 3's event: %v", wa.events())
		}
		if n := c.Events.Load(); n != 3 {
			t.Errorf("%d events counted, want 3", n)
		}

		// The client goes away: its stream ends, its subscription with it.
		cancelA()
		<-doneA
		if h.Listening("1") || h.Len() != 1 || c.Subscribers.Load() != 1 {
			t.Errorf("after A left: listening to 1 %v, %d subscribers (counted %d), want false, 1", h.Listening("1"), h.Len(), c.Subscribers.Load())
		}
		cancelB()
		<-doneB
	})
}

// live_max bounds the subscribers; a closed hub ends every stream and
// takes no more.
func TestHubBoundAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		h := NewHub(2, &c)
		a, b := subscribe(t, h, "1"), subscribe(t, h, "1", "2")
		if _, err := h.Subscribe([]string{"3"}); err != ErrFull {
			t.Fatalf("a third subscriber of 2 at most: %v, want ErrFull", err)
		}
		a.Close()
		a.Close() // twice is harmless
		if c.Subscribers.Load() != 1 {
			t.Fatalf("%d subscribers counted after one closed, want 1", c.Subscribers.Load())
		}
		w := newWriter()
		_, done := stream(t, subscribe(t, h, "3"), w)
		synctest.Wait()

		h.Close()
		<-done // the stream ended with the hub
		select {
		case <-b.Done():
		default:
			t.Fatal("a subscription outlived its hub")
		}
		if _, err := h.Subscribe([]string{"1"}); err != ErrClosed {
			t.Fatalf("subscribing to a closed hub: %v, want ErrClosed", err)
		}
		if n := c.Subscribers.Load(); n != 0 || h.Len() != 0 || c.Dropped.Load() != 0 {
			t.Fatalf("after Close: %d subscribers counted, %d in the hub, %d dropped; want 0, 0, 0", n, h.Len(), c.Dropped.Load())
		}
	})
}

// A subscriber that leaves Buffer events unread is dropped at the next
// one; the others are not held up.
func TestSlowReaderIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		h := NewHub(10, &c)
		slow := subscribe(t, h, "1") // nobody reads it
		w := newWriter()
		cancel, done := stream(t, subscribe(t, h, "1"), w)
		for range Buffer {
			h.Changed([]string{"1"})
			synctest.Wait()
		}
		select {
		case <-slow.Done():
			t.Fatal("dropped with a full buffer but no event lost yet")
		default:
		}
		h.Changed([]string{"1"})
		synctest.Wait()
		select {
		case <-slow.Done():
		default:
			t.Fatal("a reader with Buffer events unread was not dropped")
		}
		if c.Dropped.Load() != 1 || h.Len() != 1 {
			t.Fatalf("%d dropped, %d subscribers left; want 1, 1", c.Dropped.Load(), h.Len())
		}
		if n := len(w.events()); n != Buffer+1 {
			t.Fatalf("the reading subscriber got %d events, want %d", n, Buffer+1)
		}
		cancel()
		<-done
	})
}

// A client that stops reading blocks the stream's write: the write's
// deadline drops it, and its stream ends, without a goroutine left behind.
func TestStuckWriteIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		h := NewHub(10, &c)
		w := newWriter()
		sub := subscribe(t, h, "1")
		_, done := stream(t, sub, w)
		synctest.Wait()
		w.mu.Lock()
		w.block = make(chan struct{}) // the client stops reading
		w.mu.Unlock()
		start := time.Now()
		h.Changed([]string{"1"})
		<-done
		if waited := time.Since(start); waited != WriteTimeout {
			t.Errorf("the stuck write ended after %s, want WriteTimeout (%s)", waited, WriteTimeout)
		}
		if c.Dropped.Load() != 1 || h.Len() != 0 {
			t.Fatalf("%d dropped, %d subscribers; want 1, 0", c.Dropped.Load(), h.Len())
		}
	})
}

// An idle stream gets a comment line every Heartbeat, and only then.
func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(10, new(Counters))
		w := newWriter()
		cancel, done := stream(t, subscribe(t, h, "1"), w)
		beats := func() int { return strings.Count(w.String(), ": heartbeat\n\n") }
		time.Sleep(Heartbeat - time.Millisecond)
		synctest.Wait()
		if n := beats(); n != 0 {
			t.Fatalf("%d heartbeats before the first interval", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := beats(); n != 1 {
			t.Fatalf("%d heartbeats after one interval, want 1", n)
		}
		time.Sleep(2 * Heartbeat)
		synctest.Wait()
		if n := beats(); n != 3 {
			t.Fatalf("%d heartbeats after three intervals, want 3", n)
		}
		cancel()
		<-done
	})
}

// Fresh carries the stored answer, compacted onto the data line; an answer
// above MaxData or not JSON is not sent.
func TestFreshCarriesTheAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHub(10, new(Counters))
		w := newWriter()
		cancel, done := stream(t, subscribe(t, h, "5"), w)
		const method = "availabilityService/getEventAvailability"
		h.Fresh([]string{"5", "6"}, method, []byte(`{"performanceIds":[51]}`), []byte("{\n  \"statusCode\": \"success\",\n  \"n\": 3\n}"))
		h.Fresh([]string{"5"}, method, []byte(`{}`), append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), MaxData)...), `"}`...))
		h.Fresh([]string{"5"}, method, []byte(`{}`), []byte(`{"broken"`))
		synctest.Wait()
		want := `{"productId":5,"availability":{"method":"availabilityService/getEventAvailability","request":{"performanceIds":[51]},"answer":{"statusCode":"success","n":3}}}`
		if got := w.events(); len(got) != 1 || got[0] != want {
			t.Fatalf("events %q, want only %s", got, want)
		}
		cancel()
		<-done
	})
}
