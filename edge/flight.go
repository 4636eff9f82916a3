package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// flight is the one upstream call in progress for a cache key, shared by
// every caller that wants that key's answer. Its priority is the highest
// of its callers': a buyer who joins a background refresh raises it. It is
// the upstream.Flight of its call.
type flight struct {
	call      s360.Call
	key       string
	canonical []byte
	from      string // the client whose request started it, for the budget; "" for the sidecar's own

	done chan struct{}
	f    *fetched

	mu     sync.Mutex
	p      Priority
	raised context.Context // canceled when p rises, so a waiting Acquire re-queues
	raise  context.CancelFunc
}

// join raises the flight's priority to p if p comes first (a lower value).
func (fl *flight) join(p Priority) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if p < fl.p {
		fl.p = p
		fl.raise()
		fl.raised, fl.raise = context.WithCancel(context.Background())
	}
}

// Priority is the flight's priority now, and a context canceled when it
// rises.
func (fl *flight) Priority() (Priority, context.Context) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.p, fl.raised
}

// inFlight reports whether a call for key is in progress.
func (e *Edge) inFlight(key string) bool {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.flights[key] != nil
}

// fetch makes (or joins) the one upstream call for a key: want is the
// fetch asked for (call, key, canonical body, client and priority), which
// becomes the key's flight unless one is under way, then joined at want's
// priority. The call is owned by the edge, not the caller: it runs under
// the edge's context (canceled by Close); if the caller that started it
// goes away, the others still get the answer, and it is still stored. led
// says whether this caller started it. err is set only when this caller's
// own context ended first, or, with staleAfter > 0, when the answer took
// longer than that (errStaleTimeout).
func (e *Edge) fetch(ctx context.Context, client *upstream.Client, want *flight, staleAfter time.Duration) (f *fetched, led bool, err error) {
	fl, led := e.startFlight(client, want)
	if fl == nil {
		return &fetched{err: &upstream.Error{Kind: upstream.Canceled, Err: errors.New("the cache is closing")}}, true, nil
	}
	e.waiting.Add(1)
	defer e.waiting.Add(-1)
	var stale <-chan time.Time
	if staleAfter > 0 {
		t := time.NewTimer(staleAfter)
		defer t.Stop()
		stale = t.C
	}
	select {
	case <-fl.done:
		return fl.f, led, nil
	case <-stale:
		return nil, led, errStaleTimeout
	case <-ctx.Done():
		return nil, led, &upstream.Error{Kind: upstream.Canceled, Err: fmt.Errorf("waiting for %s: %w", want.call.Name(), ctx.Err())}
	}
}

// startFlight joins want.key's flight at want's priority, or starts want
// as that flight (led); nil when the edge is closing.
func (e *Edge) startFlight(client *upstream.Client, want *flight) (fl *flight, led bool) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if fl := e.flights[want.key]; fl != nil {
		fl.join(want.p)
		return fl, false
	}
	if !e.hold() {
		return nil, false
	}
	fl = want
	fl.done = make(chan struct{})
	fl.raised, fl.raise = context.WithCancel(context.Background())
	e.flights[fl.key] = fl
	fctx, cancel := context.WithTimeout(e.ctx, e.timeout()+time.Minute)
	go func() {
		defer e.bg.Done()
		defer cancel()
		f := e.fetchAndStore(fctx, client, fl)
		e.fmu.Lock()
		delete(e.flights, fl.key)
		e.fmu.Unlock()
		fl.f = f
		fl.mu.Lock()
		fl.raise()
		fl.mu.Unlock()
		close(fl.done)
	}()
	return fl, true
}
