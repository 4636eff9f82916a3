package edge

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
)

// Live is told what the edge learns of products' availability (package
// live's Hub implements it): every node of a cluster tells its own, as it
// applies an invalidation, whichever node polled. Its methods are called on
// the watcher's, the cluster's or a fetch's goroutine, and must not block.
type Live interface {
	// Changed: S-360's getUpdatedAvailabilities reported that the
	// availability of products changed; their entries were just
	// invalidated, so a request for them now asks S-360 (when the key's
	// floor allows).
	Changed(products []string)
	// Listening reports whether someone follows product: only then are
	// its fresh answers looked for (Fresh).
	Listening(product string) bool
	// Fresh: this node stored a fresh availability answer concerning
	// products, within LiveFreshFor of their change: the answer to the
	// canonical request of method (service/method). Every such answer is
	// passed on, whichever request asked for it.
	Fresh(products []string, method string, request, answer []byte)
}

// LiveFreshFor is how long after a product's change the fresh availability
// answers this node stores about it are passed on (Live.Fresh).
const LiveFreshFor = 10 * time.Minute

// liveState is the edge's part of the live streams.
type liveState struct {
	mu    sync.Mutex
	sinks []Live
	// pending maps an availability tag of a product that changed, and that
	// someone follows, to that product and until when its fresh answers
	// are passed on.
	pending map[string]map[string]time.Time
	waiting atomic.Bool // pending is not empty: the store's hot path looks no further otherwise
}

// AttachLive makes l hear of the changes this edge applies, until
// DetachLive (a handler's hub, for the life of its config).
func (e *Edge) AttachLive(l Live) {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	e.live.sinks = append(e.live.sinks, l)
}

// DetachLive undoes AttachLive.
func (e *Edge) DetachLive(l Live) {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	e.live.sinks = slices.DeleteFunc(e.live.sinks, func(x Live) bool { return x == l })
}

func (e *Edge) liveSinks() []Live {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	return slices.Clone(e.live.sinks)
}

// liveChanged tells the live streams about the products whose entries
// were just invalidated (invalidateLocal: this node's poll or another
// node's event), and starts looking out for their fresh answers when
// someone follows them. tags are the availability tags invalidated: one
// "product:<id>" for each product, and its events' and performances'.
func (e *Edge) liveChanged(tags []string) {
	sinks := e.liveSinks()
	if len(sinks) == 0 {
		return
	}
	var products []string
	for _, t := range tags {
		if id, ok := strings.CutPrefix(t, "product:"); ok {
			products = append(products, id)
		}
	}
	if len(products) == 0 {
		return
	}
	var followed []string
	for _, s := range sinks {
		s.Changed(products)
		for _, p := range products {
			if s.Listening(p) && !slices.Contains(followed, p) {
				followed = append(followed, p)
			}
		}
	}
	if len(followed) == 0 {
		return
	}
	// Which tag is whose: one product owns them all; several are told
	// apart by the cached catalog (its performances and event).
	invalidated := map[string]bool{}
	for _, t := range tags {
		invalidated[t] = t != "" && t != s360.UntaggedTag
	}
	var catalog map[string][]string
	if len(products) > 1 {
		catalog, _ = e.scanCatalog()
	}
	now := e.opts.Now()
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	if e.live.pending == nil {
		e.live.pending = map[string]map[string]time.Time{}
	}
	for tag, owners := range e.live.pending { // forget what has expired
		for p, until := range owners {
			if !until.After(now) {
				delete(owners, p)
			}
		}
		if len(owners) == 0 {
			delete(e.live.pending, tag)
		}
	}
	for _, p := range followed {
		own := tags
		if catalog != nil {
			own = productTags(p, catalog[p])
		}
		for _, t := range own {
			if !invalidated[t] {
				continue
			}
			if e.live.pending[t] == nil {
				e.live.pending[t] = map[string]time.Time{}
			}
			e.live.pending[t][p] = now.Add(LiveFreshFor)
		}
	}
	e.live.waiting.Store(len(e.live.pending) > 0)
}

// liveStored passes a fresh availability answer just stored (keep) on to
// the live streams, when it concerns a product that changed within
// LiveFreshFor and that someone follows.
func (e *Edge) liveStored(call s360.Call, ent *cachestore.Entry) {
	if !e.live.waiting.Load() || ent.Class != cachestore.Availability {
		return
	}
	now := e.opts.Now()
	var products []string
	e.live.mu.Lock()
	for _, t := range ent.Tags {
		for p, until := range e.live.pending[t] {
			if until.After(now) && !slices.Contains(products, p) {
				products = append(products, p)
			}
		}
	}
	e.live.mu.Unlock()
	if len(products) == 0 {
		return
	}
	slices.Sort(products)
	for _, s := range e.liveSinks() {
		s.Fresh(products, call.Name(), ent.Canonical, ent.Body)
	}
}
