package caddymodule

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/live"
	"github.com/s360edge/s360edge/orderq"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/session"
	"github.com/s360edge/s360edge/upstream"
)

// TicketPrefix is where a queued order's ticket is followed on the site:
// GET /s360/queue/<ticket>.
const TicketPrefix = "/s360/queue/"

// orderHoldDefault is order_hold's default: how long an order waits in
// person before the answer depends on the client.
const orderHoldDefault = 2 * time.Second

// orderQueue is an edge's order queue: an orderq.Queue persisted in the
// edge's store, or in cluster mode a cluster.OrderQueue, one line for the
// institution in Redis over that local queue.
type orderQueue interface {
	Enqueue(orderq.Order) (orderq.View, error)
	// Get is the ticket's view and a channel closed at its next change.
	Get(ticket string) (orderq.View, <-chan struct{}, bool)
	Hold(ticket string) (release func())
	Withdraw(ticket, reason string) (orderq.View, bool)
	Stats() orderq.Stats
	Start(orderq.SendFunc, orderq.Limits)
	Close()
}

var _ orderQueue = (*orderq.Queue)(nil)

// openQueue opens the order queue persisted in e's store. It admits an
// order at its turn through e's gate (Edge.Acquire, budget.Queued), which
// never gives it the watch reserve; its estimated waits come from the
// budget's rate now.
func openQueue(e *edge.Edge, logger *zap.Logger) (*orderq.Queue, error) {
	return orderq.New(queueConfig(e, logger))
}

// queueConfig is the config of e's order queue (openQueue), and of its
// cluster's (cluster.NewOrderQueue).
func queueConfig(e *edge.Edge, logger *zap.Logger) orderq.Config {
	var rate atomic.Uint64 // math.Float64bits of orders per second; refreshed at most each second
	var rateAt atomic.Int64
	return orderq.Config{
		Store: e.Store(),
		Admit: func(ctx context.Context, o *orderq.Order) (time.Duration, error) {
			err := e.Acquire(ctx, queuedCall(o, false))
			var we *budget.WaitError
			if errors.As(err, &we) {
				return we.RetryIn, err
			}
			return 0, err
		},
		Rate: func() float64 {
			if now := time.Now().UnixNano(); now-rateAt.Load() > int64(time.Second) {
				rateAt.Store(now)
				st := budgetStats(e)
				per := float64(max(st.EffectiveLimit-st.WatchReserve, 1)) / max(st.Window.Seconds(), 1) // no gate: 1/s
				rate.Store(math.Float64bits(per))
			}
			return math.Float64frombits(rate.Load())
		},
		OnAdmit: func(wait time.Duration) { queueWaits.Observe(wait.Seconds()) },
		Logger:  logger,
	}
}

// queuedCall is the upstream call of queued order o.
func queuedCall(o *orderq.Order, admitted bool) upstream.Call {
	return upstream.Call{Path: o.Path, Method: o.Meta["method"], Class: s360.Order, Client: o.Client,
		Priority: edge.PriorityQueued, Admitted: admitted}
}

// queueOn reports whether orders go through the queue (order_queue).
func (h *Handler) queueOn() bool { return h.OrderQueue == nil || *h.OrderQueue }

// startQueue is what this config does to the edge's queue when it starts:
// send with this config's client and answers, within its bounds; or stop
// admitting (order_queue off), the line then waiting, abandoned in time.
func (h *Handler) startQueue(q orderQueue) func() {
	l := orderq.Limits{Max: h.OrderQueueMax, PerClient: h.OrderQueuePerClient, AbandonAfter: time.Duration(h.AbandonAfter)}
	var send orderq.SendFunc
	if h.queueOn() {
		send = h.sendQueued
	}
	return func() { q.Start(send, l) }
}

// queuedResult is what a queued order's call gave, in memory for a buyer
// waiting in person: answered as an order posted directly would be.
type queuedResult struct {
	resp *upstream.Response
	err  error
}

// sendQueued makes an admitted order's call and keeps the answer an API
// client gets (writeOrder), to be read on its ticket; the buyer still
// waiting in person gets the call's own result.
func (h *Handler) sendQueued(ctx context.Context, o *orderq.Order, body []byte) *orderq.Answer {
	call, _ := s360.Parse(o.Path)
	resp, err := h.edge.Forward(ctx, h.client, queuedCall(o, true), body)
	rec := newRecorder()
	r := apiRequest(o.Meta["lang"])
	if err != nil {
		h.writeOrderFailure(rec, r, call, err)
	} else {
		h.writeOrder(rec, r, call, resp)
	}
	return &orderq.Answer{Placed: rec.code == http.StatusOK, Status: rec.code, Header: rec.kept(), Body: rec.buf.Bytes(),
		Raw: queuedResult{resp, err}}
}

// apiRequest stands for an API client asking for an order's answer in
// lang, outside any request: JSON, never a handle_errors route.
func apiRequest(lang string) *http.Request {
	u := &url.URL{Path: "/"}
	if lang != "" {
		u.RawQuery = url.Values{"lang": {lang}}.Encode()
	}
	return (&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{"Accept": {"application/json"}}}).WithContext(context.Background())
}

// recorder keeps an answer written to it.
type recorder struct {
	hdr  http.Header
	code int
	buf  bytes.Buffer
}

func newRecorder() *recorder { return &recorder{hdr: http.Header{}, code: http.StatusOK} }

func (r *recorder) Header() http.Header         { return r.hdr }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.buf.Write(b) }

// kept are the headers of an order's answer a ticket repeats.
func (r *recorder) kept() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Retry-After", "Location", "Link"} {
		if v := r.hdr.Get(k); v != "" {
			m[k] = v
		}
	}
	return m
}

// queueOrder puts an order in the line and answers: in person within
// order_hold; else 202 and a ticket for a client that prefers it
// (Prefer: respond-async), a 303 to the waiting page for a browser, and
// for any other client more waiting up to order_wait, then 429 with the
// order withdrawn.
func (h *Handler) queueOrder(w http.ResponseWriter, r *http.Request, call s360.Call, body []byte) error {
	start := time.Now()
	v, err := h.queue.Enqueue(orderq.Order{Path: call.Path(), Body: body, Client: clientIP(r),
		Meta: map[string]string{"method": call.Name(), "lang": r.URL.Query().Get("lang")}})
	switch {
	case errors.Is(err, orderq.ErrFull):
		return writeError(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: "queue_full",
			Message: "the order queue is full; try again later", RetryAfter: h.rateWindow()})
	case errors.Is(err, orderq.ErrClientLimit):
		return writeError(w, r, &apiError{Status: http.StatusTooManyRequests, Code: "queue_per_client",
			Message: "this client has as many orders waiting in the queue as it may; follow their tickets", RetryAfter: h.rateWindow()})
	case err != nil:
		h.logger.Error("queuing an order", zap.Error(err))
		return writeError(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: "queue_unavailable",
			Message: "the order could not be queued, so it was not sent; try again", RetryAfter: time.Second})
	}
	defer h.queue.Hold(v.Ticket)()
	w.Header().Set("Cache-Status", "s360edge; fwd=bypass")
	ctx := r.Context()
	if v = h.awaitOrder(ctx, v.Ticket, start.Add(h.orderHold())); !v.Final() && ctx.Err() == nil {
		switch {
		case prefersAsync(r.Header):
			w.Header().Set("Location", TicketPrefix+v.Ticket)
			w.Header().Set("Preference-Applied", "respond-async")
			session.WriteJSON(w, http.StatusAccepted, ticketStatus(v))
			return nil
		case prefersHTML(r.Header.Get("Accept")):
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, TicketPrefix+v.Ticket, http.StatusSeeOther)
			return nil
		}
		v = h.awaitOrder(ctx, v.Ticket, start.Add(h.orderWait()))
	}
	if v.State == orderq.Queued {
		reason := orderq.ReasonWait
		if ctx.Err() != nil {
			reason = orderq.ReasonGone
		}
		if _, ok := h.queue.Withdraw(v.Ticket, reason); ok {
			if reason == orderq.ReasonGone {
				return nil
			}
			w.Header().Set("Retry-After", strconv.Itoa(max(ticketStatus(v).ETA, 1)))
			return writeOrderError(w, &queueWait{apiError: apiError{Status: http.StatusTooManyRequests, Code: "order_queued",
				Message: "the order waited its turn longer than this client waits, so it was withdrawn and will not be sent; try again, or send Prefer: respond-async to get a ticket"},
				Position: v.Position})
		}
	}
	// Admitted: its call is under way, with its own timeout.
	v = h.awaitOrder(context.WithoutCancel(ctx), v.Ticket, time.Time{})
	return h.answerInPerson(w, r, call, v)
}

// queueWait is the 429 of an order withdrawn at order_wait.
type queueWait struct {
	apiError
	Position int `json:"position"`
}

func (h *Handler) orderHold() time.Duration {
	if h.OrderHold > 0 {
		return time.Duration(h.OrderHold)
	}
	return orderHoldDefault
}

func (h *Handler) orderWait() time.Duration {
	if h.OrderWait > 0 {
		return time.Duration(h.OrderWait)
	}
	return edge.DefaultOrderWait
}

// rateWindow is one window of rate_limit: when a full queue or a client's
// bound may have moved.
func (h *Handler) rateWindow() time.Duration { return time.Duration(h.RateLimit.Window) }

// awaitOrder waits until ticket's order is final, ctx ends or until
// passes (zero: no bound), and returns its view then.
func (h *Handler) awaitOrder(ctx context.Context, ticket string, until time.Time) orderq.View {
	var timeout <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		timeout = t.C
	}
	for {
		v, changed, ok := h.queue.Get(ticket)
		if !ok || v.Final() {
			return v
		}
		select {
		case <-changed:
		case <-timeout:
			return v
		case <-ctx.Done():
			return v
		}
	}
}

// answerInPerson answers a final order to the buyer who posted it, as an
// order posted directly is answered (a browser is sent to the cart).
func (h *Handler) answerInPerson(w http.ResponseWriter, r *http.Request, call s360.Call, v orderq.View) error {
	if v.Answer != nil {
		if res, ok := v.Answer.Raw.(queuedResult); ok {
			if res.err != nil {
				return h.writeOrderFailure(w, r, call, res.err)
			}
			return h.writeOrder(w, r, call, res.resp)
		}
	}
	return h.writeTicket(w, v)
}

// ticketBody is a ticket's JSON while its order waits or is withdrawn.
type ticketBody struct {
	Status   orderq.State `json:"status"`
	Ticket   string       `json:"ticket"`
	Position int          `json:"position,omitempty"`
	ETA      int          `json:"eta_s,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	Message  string       `json:"message,omitempty"`
	QueuedAt time.Time    `json:"queued_at"` // when the order joined the line: its place
}

func ticketStatus(v orderq.View) ticketBody {
	b := ticketBody{Status: v.State, Ticket: v.Ticket, Position: v.Position, Reason: v.Reason, QueuedAt: v.At}
	if v.State == orderq.Queued {
		b.ETA = int(math.Ceil(v.ETA.Seconds()))
	}
	if v.State == orderq.Withdrawn {
		b.Message = "the order was withdrawn before it was sent: it was not created"
	}
	return b
}

// serveTicket answers GET /s360/queue/<ticket>: JSON, the waiting page to
// a browser, or an event stream.
func (h *Handler) serveTicket(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		session.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "a ticket is read with GET")
		return nil
	}
	ticket := strings.TrimPrefix(r.URL.Path, TicketPrefix)
	v, _, ok := h.queue.Get(ticket)
	if !ok {
		session.WriteError(w, http.StatusNotFound, "unknown_ticket", "no queued order has this ticket, or its outcome is older than 15 minutes")
		return nil
	}
	accept := r.Header.Get("Accept")
	switch {
	case strings.Contains(accept, "text/event-stream"):
		h.streamTicket(w, r, ticket)
	case prefersHTML(accept):
		writeWaitingPage(w, v)
	default:
		return h.writeTicket(w, v)
	}
	return nil
}

// writeTicket answers a ticket's state as JSON: while it waits, where it
// is; once final, the answer an API client of the order would have had
// (status, headers, body), with "status" and "ticket" added.
func (h *Handler) writeTicket(w http.ResponseWriter, v orderq.View) error {
	if !v.Final() || v.State == orderq.Withdrawn {
		session.WriteJSON(w, http.StatusOK, ticketStatus(v))
		return nil
	}
	a := v.Answer
	if a == nil { // unknown: the sidecar stopped while it was being sent
		rec := newRecorder()
		h.writeOrderUnknown(rec, apiRequest(v.Meta["lang"]))
		a = &orderq.Answer{Status: rec.code, Header: rec.kept(), Body: rec.buf.Bytes()}
	}
	for k, val := range a.Header {
		w.Header().Set(k, val)
	}
	body := withTicket(a.Body, v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.Status)
	writeBody(w, body)
	return nil
}

// withTicket adds "status" and "ticket" to an answer's JSON object, last,
// so that they win over any field of the same name.
func withTicket(body []byte, v orderq.View) []byte {
	extra, _ := json.Marshal(struct {
		Status orderq.State `json:"status"`
		Ticket string       `json:"ticket"`
	}{v.State, v.Ticket})
	b := bytes.TrimSpace(body)
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return extra
	}
	out := append([]byte(nil), b[:len(b)-1]...)
	if len(bytes.TrimSpace(b[1:len(b)-1])) > 0 {
		out = append(out, ',')
	}
	return append(out, extra[1:]...)
}

// streamTicket streams a ticket: a "position" event at once and on every
// change, comment lines as heartbeats, and an "outcome" event (the
// ticket's JSON) at the end.
func (h *Handler) streamTicket(w http.ResponseWriter, r *http.Request, ticket string) {
	defer h.queue.Hold(ticket)()
	h.ticketStreams.watch(r)
	rc := live.StartStream(w)
	defer rc.SetWriteDeadline(time.Time{})
	tick := time.NewTicker(live.Heartbeat)
	defer tick.Stop()
	last := ticketBody{Position: -1}
	for {
		v, changed, ok := h.queue.Get(ticket)
		if !ok {
			return
		}
		if v.Final() {
			rec := newRecorder()
			h.writeTicket(rec, v)
			writeEvent(w, rc, "outcome", bytes.TrimSpace(rec.buf.Bytes()))
			return
		}
		if st := ticketStatus(v); st != last {
			last = st
			b, _ := json.Marshal(st)
			if !writeEvent(w, rc, "position", b) {
				return
			}
		}
		select {
		case <-changed:
		case <-tick.C:
			if live.Write(rc, w, live.HeartbeatLine()) != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-h.ticketStreams.done:
			return // EventSource reconnects, to the running config
		}
	}
}

// writeEvent writes one server-sent event whose data is one JSON line.
func writeEvent(w http.ResponseWriter, rc *http.ResponseController, name string, data []byte) bool {
	return live.Write(rc, w, fmt.Appendf(nil, "event: %s\ndata: %s\n\n", name, data)) == nil
}

//go:embed waiting.html
var waitingHTML string

var waitingPage = template.Must(template.New("waiting").Parse(waitingHTML))

// writeWaitingPage answers a browser following its ticket: a page without
// external assets that shows the position and estimated wait, follows the
// ticket's event stream, and goes to the cart once the order is placed.
func writeWaitingPage(w http.ResponseWriter, v orderq.View) {
	var buf bytes.Buffer
	if err := waitingPage.Execute(&buf, ticketStatus(v)); err != nil {
		panic(err) // the template and its data are ours
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer") // the URL holds the ticket
	hdr.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	writeBody(w, buf.Bytes())
}

// prefersAsync reports whether the client asked for an asynchronous answer
// (RFC 7240's Prefer: respond-async).
func prefersAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), ";")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}
