package caddymodule

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/orderq"
	"github.com/s360edge/s360edge/upstream"
)

// queueHandler is a handler whose budget admits one call per window, with
// the token's call already made, so that a second order has to queue.
func queueHandler(t *testing.T, window time.Duration) (*Handler, *fakeUpstream) {
	t.Helper()
	f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"statusCode":"success","orderUpdateData":{"orderId":7}}`)
	}}
	h := newTestHandler(t, f, time.Second)
	h.Shop, h.CartTarget = "https://pfx-x.shop.secutix.com", "cart"
	h.OrderHold = caddy.Duration(50 * time.Millisecond)
	g := budget.New(budget.Config{Calls: 2, Window: window, FixedLimit: true, OrderReserve: -1, WatchReserve: -1})
	useEdge(t, h, edge.Options{Dir: t.TempDir(), Institution: "x", Gate: g})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	h.client = upstream.New(upstream.Config{BaseURL: srv.URL, Operator: "X_WEB", Secret: "s", Gate: h.edge})
	// The first order takes the token's slot and its own: the window is
	// spent.
	if w, _ := serve(h, "POST", orderPath, `{"a":1}`, map[string]string{"Accept": "application/json"}); w.Code != 200 {
		t.Fatalf("first order: %d %s", w.Code, w.Body)
	}
	return h, f
}

func decode(t *testing.T, body io.Reader) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// pollTicket reads the ticket until its status is not queued or sending,
// within a deadline.
func pollTicket(t *testing.T, h *Handler, loc string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, _ := serve(h, "GET", loc, "", map[string]string{"Accept": "application/json"})
		m := decode(t, strings.NewReader(w.Body.String()))
		if s := m["status"]; s != "queued" && s != "sending" {
			return w, m
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket still %v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Prefer: respond-async gets 202 and a ticket once the hold passed; the
// ticket says queued with a position, then placed with the cart.
func TestQueuedOrderAnswersAsyncWithATicket(t *testing.T) {
	h, f := queueHandler(t, time.Second)
	w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Accept": "application/json", "Prefer": "respond-async, wait=10"})
	if w.Code != http.StatusAccepted || w.Header().Get("Preference-Applied") != "respond-async" {
		t.Fatalf("got %d %v %s", w.Code, w.Header(), w.Body)
	}
	loc := w.Header().Get("Location")
	m := decode(t, w.Body)
	if m["status"] != "queued" || m["position"] != 1.0 || m["ticket"] == "" || loc != TicketPrefix+m["ticket"].(string) {
		t.Fatalf("202 body %v, Location %q", m, loc)
	}
	w, m = pollTicket(t, h, loc)
	if w.Code != 200 || m["status"] != "placed" || m["redirectUrl"] != "https://pfx-x.shop.secutix.com/api/1/redirect/cart?orderId=7" || len(m["ticket"].(string)) != 32 {
		t.Fatalf("placed ticket: %d %v", w.Code, m)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("S-360 got %d orders, want 2", n)
	}
	if st := h.queue.Stats(); st.Placed != 2 || st.Admitted != 2 {
		t.Fatalf("queue stats %+v", st)
	}
}

// A browser posting an order that must wait is sent to the waiting page
// (a GET: reloading it does not post again), which shows its position.
func TestQueuedOrderSendsABrowserToTheWaitingPage(t *testing.T) {
	h, _ := queueHandler(t, 2*time.Second)
	w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
	loc := w.Header().Get("Location")
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(loc, TicketPrefix) {
		t.Fatalf("got %d Location %q", w.Code, loc)
	}
	w, _ = serve(h, "GET", loc, "", map[string]string{"Accept": "text/html"})
	page := w.Body.String()
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(page, `id="position">1<`) || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Fatalf("waiting page: %d %s", w.Code, page)
	}
}

// An API client without Prefer waits up to order_wait; still queued then,
// its order is withdrawn, never sent, and it gets 429 with its position.
func TestQueuedOrderPastOrderWaitIsWithdrawn(t *testing.T) {
	h, f := queueHandler(t, time.Minute)
	h.OrderWait = caddy.Duration(200 * time.Millisecond)
	w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Accept": "application/json"})
	m := decode(t, w.Body)
	if w.Code != http.StatusTooManyRequests || m["error"] != "order_queued" || m["position"] != 1.0 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d %v %v", w.Code, w.Header(), m)
	}
	if st := h.queue.Stats(); st.Withdrawn != 1 || st.Length != 0 {
		t.Fatalf("queue stats %+v", st)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("S-360 got %d orders, want only the first", n)
	}
}

// A client may have order_queue_per_client orders in line; the next gets
// 429 and is not queued.
func TestQueuePerClient(t *testing.T) {
	h, _ := queueHandler(t, time.Minute)
	h.startQueue(h.queue)() // per client: the default, 2
	for i := range 3 {
		w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Prefer": "respond-async"})
		want := http.StatusAccepted
		if i == 2 {
			want = http.StatusTooManyRequests
		}
		if w.Code != want {
			t.Fatalf("order %d: %d %s", i+1, w.Code, w.Body)
		}
		if i == 2 && decode(t, w.Body)["error"] != "queue_per_client" {
			t.Fatal("wrong error for the third order")
		}
	}
}

// The ticket's event stream sends the position at once, then the outcome.
func TestTicketEventStream(t *testing.T) {
	h, _ := queueHandler(t, time.Second)
	w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Prefer": "respond-async"})
	loc := w.Header().Get("Location")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r, &nextHandler{})
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+loc, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "event: ") || strings.HasPrefix(line, "data: ") {
			events = append(events, line)
		}
	}
	if len(events) < 4 || events[0] != "event: position" || !strings.Contains(events[1], `"position":1`) ||
		events[len(events)-2] != "event: outcome" || !strings.Contains(events[len(events)-1], `"status":"placed"`) {
		t.Fatalf("events %q", events)
	}
}

func TestTicketErrors(t *testing.T) {
	h, _ := queueHandler(t, time.Second)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", TicketPrefix + strings.Repeat("a", 32), 404, "unknown_ticket"},
		{"GET", TicketPrefix + "../../etc/passwd", 404, "unknown_ticket"},
		{"GET", TicketPrefix, 404, "unknown_ticket"},
		{"POST", TicketPrefix + strings.Repeat("a", 32), 405, "method_not_allowed"},
	} {
		w, next := serve(h, tc.method, tc.path, "", nil)
		if w.Code != tc.status || next.called || decode(t, w.Body)["error"] != tc.code {
			t.Fatalf("%s %s: %d", tc.method, tc.path, w.Code)
		}
	}
}

func TestWithTicket(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1}`: `{"a":1,"status":"placed","ticket":"t"}`,
		`{}`:      `{"status":"placed","ticket":"t"}`,
		`nope`:    `{"status":"placed","ticket":"t"}`,
	} {
		if got := string(withTicket([]byte(in), orderqView("placed", "t"))); got != want {
			t.Fatalf("withTicket(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestPrefersAsync(t *testing.T) {
	for v, want := range map[string]bool{"respond-async": true, "wait=5, respond-async": true, "Respond-Async; x=1": true,
		"return=minimal": false, "": false, "respond-asyncx": false} {
		if got := prefersAsync(http.Header{"Prefer": {v}}); got != want {
			t.Fatalf("prefersAsync(%q) = %v", v, got)
		}
	}
}

func orderqView(state, ticket string) orderq.View {
	return orderq.View{State: orderq.State(state), Ticket: ticket}
}

func TestUnmarshalOrderQueue(t *testing.T) {
	d := caddyfile.NewTestDispenser(`s360 {
		order_queue off
		order_hold 500ms
		order_wait 10s
		order_queue_per_client 3
		order_queue_max 500
		abandon_after 1m
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.OrderQueue == nil || *h.OrderQueue || h.OrderHold != caddy.Duration(500*time.Millisecond) || h.OrderWait != caddy.Duration(10*time.Second) ||
		h.OrderQueuePerClient != 3 || h.OrderQueueMax != 500 || h.AbandonAfter != caddy.Duration(time.Minute) {
		t.Fatalf("parsed %+v", h)
	}
	h.RateLimit, h.SetupPoll, h.UpdatesPoll = &RateLimit{Calls: 150, Window: caddy.Duration(time.Minute)}, new(caddy.Duration), new(caddy.Duration)
	if s := h.settings(); s.Waits.Order != 10*time.Second {
		t.Fatalf("order_wait is not the edge's order wait: %v", s.Waits.Order)
	}
	for in, want := range map[string]string{
		"order_queue maybe":        `order_queue: want on or off, got "maybe"`,
		"order_queue_max 0":        `order_queue_max: want a positive whole number, got "0"`,
		"order_queue_per_client x": `order_queue_per_client: want a positive whole number, got "x"`,
		"order_hold soon":          `order_hold: "soon" is not a duration >= 0`,
		"abandon_after":            `abandon_after: wrong number of values`,
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s360 {\n" + in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: got %v, want %q", in, err, want)
		}
	}
}

// A ticket's event stream ends when its config is cleaned up (a reload, a
// stop): Caddy's graceful shutdown would otherwise wait for it.
func TestTicketStreamEndsAtCleanup(t *testing.T) {
	h, _ := queueHandler(t, time.Minute)
	w, _ := serve(h, "POST", orderPath, `{"a":2}`, map[string]string{"Prefer": "respond-async"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r, &nextHandler{})
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+w.Header().Get("Location"), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || sc.Text() != "event: position" {
		t.Fatalf("first line %q", sc.Text())
	}
	h.ticketStreams.end()
	ended := make(chan struct{})
	go func() {
		for sc.Scan() {
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream is still open after cleanup")
	}
}
