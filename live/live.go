// Package live pushes S-360's availability changes to web pages as
// server-sent events (GET /s360/live?products=<id>,<id>…, see the README,
// "Live availability"). A Hub keeps one handler's subscribers, each of which
// names the products it follows; the edge tells the hub what changed
// (edge.Live), on every node of a cluster, and the hub hands each
// subscriber the events of its products. Subscribing costs no S-360 call.
//
// Everything is bounded: the subscribers of a hub (live_max), the products
// of a subscription (MaxProducts), the events a subscriber may leave unread
// (Buffer: a slower reader is dropped, never buffered for), and the time a
// write to it may take (WriteTimeout).
//
// It imports nothing of Caddy: caddymodule routes the path to Serve.
package live

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// Path is where the s360 handler serves the stream, on the site.
	Path = "/s360/live"
	// DefaultMax bounds a handler's subscribers (live_max).
	DefaultMax = 10000
	// MaxProducts bounds the products of one subscription.
	MaxProducts = 100
	// Heartbeat is how often an idle stream gets a comment line, so that
	// proxies and load balancers do not close it as idle.
	Heartbeat = 15 * time.Second
	// Buffer is how many events a subscriber may leave unread; one more
	// drops it (its stream ends; EventSource reconnects).
	Buffer = 32
	// WriteTimeout bounds one write to a subscriber's connection: a reader
	// that takes longer is dropped.
	WriteTimeout = 10 * time.Second
	// Retry is the reconnection delay the stream gives EventSource.
	Retry = 5 * time.Second
	// FullRetryAfter is the Retry-After of a subscription refused because
	// live_max subscribers are streaming.
	FullRetryAfter = 30 * time.Second
	// MaxData bounds the answer an event carries (availability): a larger
	// one is not sent, and the page fetches it.
	MaxData = 64 << 10
	// Event is the name of the events the stream sends.
	Event = "availability"
)

var (
	// ErrFull refuses a subscription while the hub has its bound of
	// subscribers.
	ErrFull = errors.New("live: as many subscribers as live_max allows are streaming")
	// ErrClosed refuses a subscription to a hub that was closed (its
	// config is being replaced or stopped).
	ErrClosed = errors.New("live: the stream is being shut down")
)

// productID is an S-360 id as the catalog writes it: a positive integer,
// without sign or leading zero.
var productID = regexp.MustCompile(`^[1-9][0-9]{0,17}$`)

// ParseProducts reads the products parameter(s) of a subscription: ids
// separated by commas, each a positive integer, at least one and at most
// MaxProducts in all. Repeated ids count once. The error says what is
// wrong, for the 400 answer.
func ParseProducts(values []string) ([]string, error) {
	var ids []string
	seen := map[string]bool{}
	for _, v := range values {
		for id := range strings.SplitSeq(v, ",") {
			if !productID.MatchString(id) {
				return nil, fmt.Errorf("products: %q is not a product id; write positive integers separated by commas, e.g. ?products=10228400031,10228400032", id)
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	switch {
	case len(ids) == 0:
		return nil, errors.New("products: missing; name the products to follow, e.g. ?products=10228400031,10228400032")
	case len(ids) > MaxProducts:
		return nil, fmt.Errorf("products: %d products; a subscription follows at most %d", len(ids), MaxProducts)
	}
	return ids, nil
}

// Counters are the streams' counts, shared by the hubs of a process (one
// per handler, several during a reload) so that the metrics outlive them.
type Counters struct {
	// Subscribers streaming now.
	Subscribers atomic.Int64
	// Dropped counts subscribers dropped as slow readers: Buffer events
	// unread, or a write that took WriteTimeout.
	Dropped atomic.Uint64
	// Events counts events handed to subscribers.
	Events atomic.Uint64
}

// Hub keeps the subscribers of one handler. Its methods never block on a
// subscriber: an event goes into each subscriber's buffer, or drops it.
type Hub struct {
	max      int
	counters *Counters

	mu        sync.Mutex
	closed    bool
	n         int
	byProduct map[string]map[*Sub]struct{}
}

// NewHub is a hub of at most max subscribers, counted in c.
func NewHub(max int, c *Counters) *Hub {
	return &Hub{max: max, counters: c, byProduct: map[string]map[*Sub]struct{}{}}
}

// Max is the hub's bound of subscribers.
func (h *Hub) Max() int { return h.max }

// Len is the number of subscribers now.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Sub is one subscription: the events of its products, until it is closed,
// dropped as a slow reader or its hub closes (Done).
type Sub struct {
	hub      *Hub
	products []string
	events   chan []byte
	done     chan struct{}
	removed  bool // guarded by hub.mu
}

// Subscribe adds a subscriber of products (ParseProducts's). ErrFull when
// the hub has max subscribers, ErrClosed once it is closed.
func (h *Hub) Subscribe(products []string) (*Sub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrClosed
	case h.n >= h.max:
		return nil, ErrFull
	}
	s := &Sub{hub: h, products: products, events: make(chan []byte, Buffer), done: make(chan struct{})}
	for _, p := range products {
		subs := h.byProduct[p]
		if subs == nil {
			subs = map[*Sub]struct{}{}
			h.byProduct[p] = subs
		}
		subs[s] = struct{}{}
	}
	h.n++
	h.counters.Subscribers.Add(1)
	return s, nil
}

// Done is closed when the subscription ends.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Close ends the subscription; it may be called more than once.
func (s *Sub) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.removeLocked(s)
}

// drop ends a slow reader's subscription and counts it.
func (s *Sub) drop() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	if !s.removed {
		s.hub.counters.Dropped.Add(1)
	}
	s.hub.removeLocked(s)
}

func (h *Hub) removeLocked(s *Sub) {
	if s.removed {
		return
	}
	s.removed = true
	for _, p := range s.products {
		if subs := h.byProduct[p]; subs != nil {
			delete(subs, s)
			if len(subs) == 0 {
				delete(h.byProduct, p)
			}
		}
	}
	h.n--
	h.counters.Subscribers.Add(-1)
	close(s.done)
}

// Listening reports whether a subscriber follows product.
func (h *Hub) Listening(product string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byProduct[product]) > 0
}

// Changed sends each subscriber of one of products an event
// {"productId":<id>}: S-360 reported that the product's availability
// changed, and the sidecar's answers about it are outdated.
func (h *Hub) Changed(products []string) {
	for _, p := range products {
		h.send(p, encode(p, nil))
	}
}

// Fresh sends each subscriber of one of products an event with the fresh
// answer the sidecar stored for it after its change: {"productId":<id>,
// "availability":{"method":…,"request":…,"answer":…}}. An answer larger than
// MaxData, or not JSON, is not sent.
func (h *Hub) Fresh(products []string, method string, request, answer []byte) {
	products = slices.DeleteFunc(slices.Clone(products), func(p string) bool { return !h.Listening(p) })
	if len(products) == 0 || len(answer) > MaxData {
		return
	}
	var data bytes.Buffer
	data.WriteString(`{"method":`)
	m, _ := json.Marshal(method)
	data.Write(m)
	for _, part := range []struct {
		name string
		v    []byte
	}{{`,"request":`, request}, {`,"answer":`, answer}} {
		data.WriteString(part.name)
		if json.Compact(&data, part.v) != nil {
			return
		}
	}
	data.WriteByte('}')
	for _, p := range products {
		h.send(p, encode(p, data.Bytes()))
	}
}

// send hands ev to every subscriber of product, dropping those whose
// buffer is full.
func (h *Hub) send(product string, ev []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.byProduct[product] {
		select {
		case s.events <- ev:
			h.counters.Events.Add(1)
		default:
			h.counters.Dropped.Add(1)
			h.removeLocked(s)
		}
	}
}

// Close ends every subscription and refuses new ones: the config is being
// replaced or stopped. It may be called more than once.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, subs := range h.byProduct {
		for s := range subs {
			h.removeLocked(s)
		}
	}
}

// encode is one event of the stream: `event: availability`, and its data
// {"productId":<id>} with "availability":<data> when data is not nil, on
// one line (data is compact JSON).
func encode(product string, data []byte) []byte {
	b := make([]byte, 0, 64+len(data))
	b = append(b, "event: "+Event+"\ndata: {\"productId\":"...)
	b = append(b, product...)
	if data != nil {
		b = append(b, `,"availability":`...)
		b = append(b, data...)
	}
	return append(b, "}\n\n"...)
}
