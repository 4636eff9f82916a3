package edge

import (
	"slices"
	"sync"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
)

// asking is a fetch in progress as purges and invalidations see it: an
// answer read or asked for before one of them that concerns its key may
// tell what was true before, and the purge may have run before the answer
// was stored (missing it): the answer is then kept stale, with the mark
// (keep). This is how neither the watcher's invalidations nor an
// operator's purges, of any scope, are undone by a call in flight.
type asking struct {
	key       string
	call      s360.Call
	canonical []byte
	// mu guards mark, and keep holds it from its look at the mark to the
	// end of its Put, so that a purge's mark (markAsking) comes either
	// before that look or after the Put, which the purge then finds in
	// the store.
	mu   sync.Mutex
	mark string // cachestore.PurgedTag or InvalidatedTag since the fetch began; "" none
}

// beginAsking registers a fetch of key; endAsking ends it.
func (e *Edge) beginAsking(call s360.Call, key string, canonical []byte) *asking {
	a := &asking{key: key, call: call, canonical: canonical}
	e.amu.Lock()
	e.asking[a] = struct{}{}
	e.amu.Unlock()
	return a
}

func (e *Edge) endAsking(a *asking) {
	e.amu.Lock()
	delete(e.asking, a)
	e.amu.Unlock()
}

// marked is a's mark so far; "" when none.
func (a *asking) marked() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mark
}

// restart forgets the marks so far: the upstream call begins now, and its
// answer tells what is true after them.
func (e *Edge) restart(a *asking) {
	a.mu.Lock()
	a.mark = ""
	a.mu.Unlock()
}

// markAsking marks, with mark, the fetches in progress that hit says a
// purge or an invalidation concerns. It runs before the store is purged,
// and waits for a keep under way: a fetch that stores its answer after
// the purge's look at the store has found the mark first (keep).
func (e *Edge) markAsking(mark string, hit func(*asking) bool) {
	e.amu.Lock()
	var hits []*asking
	for a := range e.asking {
		if hit(a) {
			hits = append(hits, a)
		}
	}
	e.amu.Unlock()
	for _, a := range hits {
		a.mu.Lock()
		a.mark = mark
		a.mu.Unlock()
	}
}

// concerns says whether the purge req concerns the fetch a.
func (req PurgeRequest) concerns(a *asking) bool {
	switch {
	case req.Key != "":
		return a.key == req.Key
	case req.Tag != "":
		return slices.Contains(s360.Tags(a.call, a.canonical), req.Tag)
	case req.Class != 0:
		return storeClass(a.call.Class) == req.Class
	}
	return true
}

// taggedAny says whether a fetch's answer will carry one of tags.
func taggedAny(a *asking, tags []string) bool {
	return slices.ContainsFunc(s360.Tags(a.call, a.canonical), func(t string) bool { return slices.Contains(tags, t) })
}

// keep stores ent locally, and returns the entry kept and whether it is
// fresh. A purge or an invalidation that concerned the fetch a since it
// began has missed ent (it was not stored yet): a stale copy carrying its
// mark is kept instead, and ent is never stored, so that no buyer gets it
// as a fresh hit, not even for a moment. One that comes during the Put
// waits for it (markAsking), and then finds ent in the store. The check
// does not depend on the Put's success, so that an answer the local store
// failed to keep does not go fresh to the shared tier either. A feed's
// copy is not a cached answer: no mark concerns it.
func (e *Edge) keep(call s360.Call, key string, ent *cachestore.Entry, a *asking) (*cachestore.Entry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mark != "" && !Feed(call) {
		return e.keepStale(call, key, ent, a.mark), false
	}
	e.put(call, key, ent)
	e.liveStored(call, ent)
	return ent, true
}

// keepStale stores a copy of ent that is stale from now and carries mark,
// so that it is served (detail=purged or invalidated) and refreshed as
// soon as its floor allows (the Put keeps the entry it is given: ent
// itself is never changed), and returns it.
func (e *Edge) keepStale(call s360.Call, key string, ent *cachestore.Entry, mark string) *cachestore.Entry {
	stale := *ent
	stale.FreshUntil = e.opts.Now()
	if !slices.Contains(stale.Tags, mark) {
		stale.Tags = append(slices.Clip(stale.Tags), mark)
	}
	e.put(call, key, &stale)
	return &stale
}

// refusedMark is the mark of an answer the shared tier refused (another
// node's purge or invalidation ran since its call began): availability is
// also invalidated by S-360's feed, the rest only by purges.
func refusedMark(call s360.Call) string {
	if call.Class == s360.Availability {
		return cachestore.InvalidatedTag
	}
	return cachestore.PurgedTag
}
