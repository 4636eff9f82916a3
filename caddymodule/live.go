package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/s360edge/s360edge/live"
	"github.com/s360edge/s360edge/session"
)

// liveCounters count the live streams of every handler of the process, so
// that the metrics outlive a reload's hubs.
var liveCounters live.Counters

var (
	descLiveSubscribers = prometheus.NewDesc("caddy_s360_live_subscribers",
		"Pages subscribed to /s360/live now.", nil, nil)
	descLiveDropped = prometheus.NewDesc("caddy_s360_live_dropped_total",
		"Live subscribers dropped as slow readers: 32 events unread, or one write that took 10 s.", nil, nil)
	descLiveEvents = prometheus.NewDesc("caddy_s360_live_events_total",
		"Availability events handed to live subscribers.", nil, nil)
)

func describeLive(ch chan<- *prometheus.Desc) {
	ch <- descLiveSubscribers
	ch <- descLiveDropped
	ch <- descLiveEvents
}

func collectLive(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descLiveSubscribers, prometheus.GaugeValue, float64(liveCounters.Subscribers.Load()))
	ch <- prometheus.MustNewConstMetric(descLiveDropped, prometheus.CounterValue, float64(liveCounters.Dropped.Load()))
	ch <- prometheus.MustNewConstMetric(descLiveEvents, prometheus.CounterValue, float64(liveCounters.Events.Load()))
}

// liveEndpoint is a handler's /s360/live: its hub, which the edge tells of
// changes while the handler's config runs, and the servers whose shutdown
// ends its streams.
type liveEndpoint struct {
	hub     *live.Hub
	servers sync.Map // *http.Server → struct{}: its shutdown closes hub
}

// liveMaxArg parses `live_max <n>`, n >= 0.
func liveMaxArg(d *caddyfile.Dispenser) (*int, error) {
	n, err := intArg(d, 0, "the most pages that may follow availability at once, an integer >= 0 (0 turns /s360/live off)")
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// checkLive rejects a negative live_max (the Caddyfile cannot write one;
// JSON can).
func (h *Handler) checkLive() error {
	if h.LiveMax != nil && *h.LiveMax < 0 {
		return fmt.Errorf("live_max: %d is negative; write the most pages that may follow availability at once, or 0 to turn /s360/live off, e.g. %s", *h.LiveMax, example("", "live_max"))
	}
	return nil
}

// provisionLive opens the handler's live endpoint on its edge, unless
// live_max is 0.
func (h *Handler) provisionLive() {
	n := live.DefaultMax
	if h.LiveMax != nil {
		n = *h.LiveMax
	}
	if n == 0 {
		return
	}
	h.live = &liveEndpoint{hub: live.NewHub(n, &liveCounters)}
	h.edge.AttachLive(h.live.hub)
}

// cleanupLive ends the handler's streams (the config is replaced or
// stopped: EventSource reconnects, to the new config's handler).
func (h *Handler) cleanupLive() {
	if h.live != nil {
		h.edge.DetachLive(h.live.hub)
		h.live.hub.Close()
	}
}

// serveLive answers GET /s360/live?products=<id>,<id>…: an event stream of
// the products' availability changes (package live). Subscribing costs no
// S-360 call.
func (h *Handler) serveLive(w http.ResponseWriter, r *http.Request) error {
	if !session.AllowMethods(w, r, http.MethodGet) {
		return nil
	}
	products, err := live.ParseProducts(r.URL.Query()["products"])
	if err != nil {
		return writeError(w, r, &apiError{Status: http.StatusBadRequest, Code: "invalid_products", Message: err.Error()})
	}
	sub, err := h.live.hub.Subscribe(products)
	switch {
	case errors.Is(err, live.ErrFull):
		return writeError(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: "live_full", RetryAfter: live.FullRetryAfter,
			Message: fmt.Sprintf("%d pages already follow availability here (live_max); try again later", h.live.hub.Max())})
	case err != nil:
		return writeError(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: "live_closed", RetryAfter: time.Second,
			Message: "the sidecar's configuration is being replaced; subscribe again"})
	}
	defer sub.Close()
	// Caddy's graceful shutdown (a reload, a stop) waits for the requests
	// being served: the streams end when it begins.
	onShutdown(r, &h.live.servers, h.live.hub.Close)
	live.Serve(w, r, sub)
	return nil
}

// onShutdown has fn called when the server serving r shuts down, once per
// server seen.
func onShutdown(r *http.Request, seen *sync.Map, fn func()) {
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
		if _, dup := seen.LoadOrStore(srv, struct{}{}); !dup {
			srv.RegisterOnShutdown(fn)
		}
	}
}

// streamsEnd ends a handler's ticket streams: at its Cleanup (a reload, a
// stop), and when a server that served one shuts down, since Caddy's
// graceful shutdown waits for the requests being served.
type streamsEnd struct {
	once    sync.Once
	done    chan struct{}
	servers sync.Map // *http.Server → struct{}
}

func newStreamsEnd() *streamsEnd { return &streamsEnd{done: make(chan struct{})} }

func (s *streamsEnd) end() { s.once.Do(func() { close(s.done) }) }

// watch ends the streams when r's server shuts down.
func (s *streamsEnd) watch(r *http.Request) { onShutdown(r, &s.servers, s.end) }
