package edge

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// Outcomes of a cacheable request, a bounded metric label.
const (
	outcomeHit = iota
	outcomeMiss
	outcomeCoalesced
	outcomeStale
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"hit", "miss", "coalesced", "stale"}

// Results of an upstream call, a bounded metric label.
const (
	upSuccess    = iota // 2xx/4xx answer with a success envelope
	upNotSuccess        // answer without a success envelope (in_progress, business error)
	upThrottled         // 509/429
	upError             // 5xx
	upTimeout
	upUnreachable
	upRefused // budget
	upCanceled
	numUpstream
)

var upstreamNames = [numUpstream]string{"success", "not_success", "throttled", "error", "timeout", "unreachable", "refused", "canceled"}

const numClasses = int(s360.Uncached) + 1

type stats struct {
	requests  [numClasses][numOutcomes]atomic.Uint64
	calls     [numClasses][numUpstream]atomic.Uint64
	stored    atomic.Uint64
	pushbacks atomic.Uint64
	gens      atomic.Uint64

	// Watchers (watch.go). Times are Unix nanoseconds, 0 = never.
	setupPolls, updatesPolls, pollFailures atomic.Uint64
	invalidated, refreshes                 atomic.Uint64
	lastSetupChange, lastSetupPoll         atomic.Int64
	lastUpdatesPoll                        atomic.Int64

	// Cluster mode: entries read from the shared tier instead of calling
	// S-360, waits for another node's call of a key, failed calls of the
	// shared state.
	sharedHits, sharedWaits, sharedErrors atomic.Uint64
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (s *stats) count(c s360.Class, outcome int) { s.requests[c][outcome].Add(1) }

func (s *stats) upstream(c s360.Class, resp *upstream.Response, err error) {
	s.calls[c][upstreamOutcome(resp, err)].Add(1)
}

func upstreamOutcome(resp *upstream.Response, err error) int {
	var ue *upstream.Error
	switch {
	case errors.As(err, &ue):
		switch ue.Kind {
		case upstream.Timeout:
			return upTimeout
		case upstream.Refused:
			return upRefused
		case upstream.Canceled:
			return upCanceled
		case upstream.Invalid:
			return upError
		}
		return upUnreachable
	case err != nil:
		return upUnreachable
	case resp.Status == 509 || resp.Status == http.StatusTooManyRequests:
		return upThrottled
	case resp.Status >= 500:
		return upError
	case s360.Success(resp.Status, resp.Body):
		return upSuccess
	}
	return upNotSuccess
}

// Counter is one metric sample: a name, bounded labels and a value.
type Counter struct {
	Class   string `json:"class"`
	Outcome string `json:"outcome"`
	Value   uint64 `json:"value"`
}

// Snapshot is the edge's statistics, for the admin API and metrics.
type Snapshot struct {
	Dir         string           `json:"dir"`
	Generation  uint64           `json:"generation"`
	Requests    []Counter        `json:"requests"`       // cacheable requests by class and outcome
	Upstream    []Counter        `json:"upstream_calls"` // upstream calls by class and outcome
	Stored      uint64           `json:"stored"`
	Pushbacks   uint64           `json:"pushbacks"`
	Generations uint64           `json:"generation_changes"`
	Store       cachestore.Stats `json:"store"`

	// Watchers: last setup change and last successful polls (absent when
	// none yet), polls made, failed polls, availability entries purged by
	// getUpdatedAvailabilities, catalog entries refreshed ahead.
	LastSetupChange time.Time `json:"last_setup_change,omitzero"`
	LastSetupPoll   time.Time `json:"last_setup_poll,omitzero"`
	LastUpdatesPoll time.Time `json:"last_updates_poll,omitzero"`
	SetupPolls      uint64    `json:"setup_polls"`
	UpdatesPolls    uint64    `json:"updates_polls"`
	PollFailures    uint64    `json:"poll_failures"`
	Invalidated     uint64    `json:"invalidated"`
	Refreshes       uint64    `json:"refreshes"`

	// Cluster mode (zero on a single node): answers read from the shared
	// tier instead of calling S-360, waits for another node's call of the
	// same key, failed calls of the shared state (Redis out of reach).
	SharedHits   uint64 `json:"shared_hits"`
	SharedWaits  uint64 `json:"shared_waits"`
	SharedErrors uint64 `json:"shared_errors"`
}

// Forward makes an uncached call (an order, a call passed through) with
// client, whose gate is the edge's, and counts it, so that metrics cover
// every call.
func (e *Edge) Forward(ctx context.Context, client *upstream.Client, c upstream.Call, body []byte) (*upstream.Response, error) {
	resp, err := client.Do(ctx, c, body)
	e.stats.upstream(c.Class, resp, err)
	return resp, err
}

// Stats returns a snapshot; counters that are zero are left out.
func (e *Edge) Stats() Snapshot {
	s := Snapshot{Dir: e.opts.Dir, Generation: e.gen.Load(), Stored: e.stats.stored.Load(),
		Pushbacks: e.stats.pushbacks.Load(), Generations: e.stats.gens.Load(), Store: e.store.Stats(),
		LastSetupChange: unixNano(e.stats.lastSetupChange.Load()), LastSetupPoll: unixNano(e.stats.lastSetupPoll.Load()),
		LastUpdatesPoll: unixNano(e.stats.lastUpdatesPoll.Load()), SetupPolls: e.stats.setupPolls.Load(),
		UpdatesPolls: e.stats.updatesPolls.Load(), PollFailures: e.stats.pollFailures.Load(),
		Invalidated: e.stats.invalidated.Load(), Refreshes: e.stats.refreshes.Load(),
		SharedHits: e.stats.sharedHits.Load(), SharedWaits: e.stats.sharedWaits.Load(), SharedErrors: e.stats.sharedErrors.Load()}
	for c := range numClasses {
		for o := range numOutcomes {
			if v := e.stats.requests[c][o].Load(); v > 0 {
				s.Requests = append(s.Requests, Counter{s360.Class(c).String(), outcomeNames[o], v})
			}
		}
		for o := range numUpstream {
			if v := e.stats.calls[c][o].Load(); v > 0 {
				s.Upstream = append(s.Upstream, Counter{s360.Class(c).String(), upstreamNames[o], v})
			}
		}
	}
	return s
}
