package caddymodule

import (
	"slices"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/upstream"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the "s360" app, which the handlers load themselves: it makes
// reloads transactional. A handler's Provision only records its settings
// here; Caddy starts the app only once the whole config provisioned, and
// then its settings apply to the shared edges. A config that fails to
// provision thus leaves the running edges exactly as they were.
type App struct {
	mu      sync.Mutex
	pending []pendingSettings
	applied []appliedSettings
}

type pendingSettings struct {
	edge     *edge.Edge
	settings edge.Settings
	client   *upstream.Client
	start    func() // what else starts with the config: the order queue's sender
}

type appliedSettings struct {
	edge *edge.Edge
	prev running
}

// running is the settings in force on an edge and the app that applied
// them (nil: the config that opened the edge).
type running struct {
	app      *App
	settings edge.Settings
}

// inForce is the settings each open edge runs with, for undoing a config
// that failed after its Start.
var inForce = struct {
	sync.Mutex
	m map[*edge.Edge]running
}{m: map[*edge.Edge]running{}}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "s360", New: func() caddy.Module { return new(App) }}
}

// add records a handler's settings for its edge, applied at Start.
func (a *App) add(p pendingSettings) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = append(a.pending, p)
}

// Start applies the settings: the config is now the running one.
func (a *App) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pending {
		inForce.Lock()
		prev, open := inForce.m[p.edge]
		if open {
			inForce.m[p.edge] = running{a, p.settings}
		}
		inForce.Unlock()
		if !open {
			continue // closed meanwhile; cannot happen while this config holds it
		}
		a.applied = append(a.applied, appliedSettings{p.edge, prev})
		p.edge.Reconfigure(p.settings)
		p.edge.Attach(p.client)
		p.start()
	}
	a.pending = nil
	return nil
}

// Stop does nothing: the edges outlive configs, and a reload's new config
// has already applied its settings when the old one stops.
func (*App) Stop() error { return nil }

// Cleanup undoes this app's settings where they are still in force while
// an older config runs: this config failed after Start (another app failed
// to start). At shutdown no config runs, and nothing is undone, which
// would only restart the watchers of edges about to close.
func (a *App) Cleanup() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if caddy.ActiveContext().Context == nil {
		a.applied = nil
		return nil
	}
	for _, ap := range slices.Backward(a.applied) {
		inForce.Lock()
		cur, open := inForce.m[ap.edge]
		undo := open && cur.app == a
		if undo {
			inForce.m[ap.edge] = ap.prev
		}
		inForce.Unlock()
		if undo {
			ap.edge.Reconfigure(ap.prev.settings)
		}
	}
	a.applied = nil
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
