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
// of its callers': a buyer who joins a background refresh raises it.
type flight struct {
	done chan struct{}
	f    *fetched

	mu     sync.Mutex
	p      Priority
	raised context.Context // canceled when p rises, so a waiting Wait re-queues
	raise  context.CancelFunc
}

type flightKey struct{}

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

// priority is the flight's priority now, and a context canceled when it
// rises.
func (fl *flight) priority() (Priority, context.Context) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.p, fl.raised
}

func flightOf(ctx context.Context) *flight {
	fl, _ := ctx.Value(flightKey{}).(*flight)
	return fl
}

// inFlight reports whether a call for key is in progress.
func (e *Edge) inFlight(key string) bool {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.flights[key] != nil
}

// fetch makes (or joins) the one upstream call for key. The call is owned
// by the edge, not the caller: it runs under the edge's context (canceled
// by Close), carrying only the caller's client for the budget's quota; if
// the caller that started it goes away, the others still get the answer,
// and it is still stored. err is set only when this caller's own context
// ended first, or, with staleAfter > 0, when the answer took longer than
// that (errStaleTimeout).
func (e *Edge) fetch(ctx context.Context, client *upstream.Client, call s360.Call, key string, canonical []byte, p Priority, staleAfter time.Duration) (*fetched, bool, error) {
	fl, led := e.startFlight(ctx, client, call, key, canonical, p)
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
		return nil, false, errStaleTimeout
	case <-ctx.Done():
		return nil, false, &upstream.Error{Kind: upstream.Canceled, Err: fmt.Errorf("waiting for %s: %w", call.Name(), ctx.Err())}
	}
}

// startFlight joins key's flight at priority p, or starts it (led); nil
// when the edge is closing.
func (e *Edge) startFlight(ctx context.Context, client *upstream.Client, call s360.Call, key string, canonical []byte, p Priority) (fl *flight, led bool) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if fl := e.flights[key]; fl != nil {
		fl.join(p)
		return fl, false
	}
	if !e.hold() {
		return nil, false
	}
	fl = &flight{done: make(chan struct{}), p: p}
	fl.raised, fl.raise = context.WithCancel(context.Background())
	e.flights[key] = fl
	fctx, cancel := context.WithTimeout(e.ctx, e.timeout()+time.Minute)
	fctx = context.WithValue(WithClient(fctx, ClientOf(ctx)), flightKey{}, fl)
	go func() {
		defer e.bg.Done()
		defer cancel()
		f := e.fetchAndStore(fctx, client, call, key, canonical)
		e.fmu.Lock()
		delete(e.flights, key)
		e.fmu.Unlock()
		fl.f = f
		fl.mu.Lock()
		fl.raise()
		fl.mu.Unlock()
		close(fl.done)
	}()
	return fl, true
}
