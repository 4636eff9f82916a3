package edge

import (
	"cmp"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/upstream"
)

// Settings are what a config sets on a running edge. Reconfigure applies
// all of them at once; zero fields mean the defaults, not "keep".
type Settings struct {
	Institution string
	Policy      Policy
	Waits       Waits
	Watch       Watch
	Timeout     time.Duration
	MaxBytes    int64
	// Budget, when set, replaces the gate's limits.
	Budget *budget.Config
	// Nodes is the number of sidecars deployed, for a Shared that splits
	// the budget by it while it is out of reach (a NodeCounter); 0: unknown.
	Nodes int
	// Quota is the calls allowed a calendar month (quota.go); 0: none.
	Quota int
}

// NodeCounter is a Shared told how many nodes are deployed
// (cluster.Cluster): Reconfigure gives it Settings.Nodes before the
// gate's new limits, which it divides by that count when alone.
type NodeCounter interface{ SetNodes(n int) }

// withDefaults fills the defaults of Open's and Reconfigure's settings.
func withDefaults(timeout time.Duration, w Waits, p Policy) (time.Duration, Waits, Policy) {
	if timeout <= 0 {
		timeout = upstream.DefaultTimeout
	}
	if w.Foreground <= 0 {
		w.Foreground = DefaultForegroundWait
	}
	if w.Order <= 0 {
		w.Order = DefaultOrderWait
	}
	p.StaleWhileRevalidate = cmp.Or(p.StaleWhileRevalidate, DefaultStaleWhileRevalidate)
	p.StaleIfError = cmp.Or(p.StaleIfError, DefaultStaleIfError)
	if p.StaleTimeout <= 0 {
		p.StaleTimeout = DefaultStaleTimeout
	}
	return timeout, w, p
}

// Reconfigure applies a config's settings, every one of them; caddymodule
// calls it only for a config that became the running one.
func (e *Edge) Reconfigure(s Settings) {
	timeout, waits, policy := withDefaults(s.Timeout, s.Waits, s.Policy)
	if nc, ok := e.opts.Shared.(NodeCounter); ok {
		nc.SetNodes(s.Nodes)
	}
	if e.opts.Gate != nil && s.Budget != nil {
		e.opts.Gate.Update(*s.Budget)
	}
	e.store.SetMaxBytes(s.MaxBytes)
	e.mu.Lock()
	e.opts.Institution, e.opts.Policy, e.opts.Waits, e.opts.Timeout, e.opts.MaxBytes = s.Institution, policy, waits, timeout, s.MaxBytes
	e.mu.Unlock()
	e.setQuota(s.Quota)
	e.SetWatch(s.Watch)
}

// timeout bounds a fetch that no buyer waits for any more.
func (e *Edge) timeout() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.opts.Timeout
}

// Settings is what the edge runs with now (Budget left nil: the gate's
// Stats tell its limits).
func (e *Edge) Settings() Settings {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Settings{Institution: e.opts.Institution, Policy: e.opts.Policy, Waits: e.opts.Waits, Watch: e.watch.cfg, Timeout: e.opts.Timeout, MaxBytes: e.opts.MaxBytes,
		Quota: e.quota.month.Quota()}
}
