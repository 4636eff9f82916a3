package budget

import (
	"strings"
	"time"

	"github.com/s360edge/s360edge/s360"
)

// DefaultFloors returns the per-key minimum intervals S-360 publishes, by
// "service/method" and "service/*" (s360.Methods and s360.Services): the
// catalog at most once per 10 minutes, availability at most once a
// minute. The feeds (FeedFloors) are floored at a minute per key too: the
// website's identical calls within it are answered from a copy of the
// last answer (the watchers' own polls do not pass the floors). The map
// is a fresh copy.
func DefaultFloors() map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, meth := range s360.Methods {
		if meth.Floor > 0 {
			m[name] = meth.Floor
		}
	}
	for svc, meth := range s360.Services {
		if meth.Floor > 0 {
			m[svc+"/*"] = meth.Floor
		}
	}
	return m
}

// FeedFloors are the floors of the methods that tell what changed, which
// the website may call as often as it likes and S-360 answers 509 when
// repeated within a minute. Only an exact min_interval changes them: a
// "service/*" pattern does not.
func FeedFloors() map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, meth := range s360.Methods {
		if meth.Feed {
			m[name] = meth.Floor
		}
	}
	return m
}

// mergeFloors lays the configured floors over the defaults. A configured
// pattern replaces the default of the same pattern, and a configured
// "service/*" also replaces the defaults of that service's single methods
// (what an operator writing "catalogService/* 0" means), except the
// feeds' floors (FeedFloors), which only an exact pattern replaces.
func mergeFloors(conf map[string]time.Duration) map[string]time.Duration {
	m := DefaultFloors()
	for k := range conf {
		svc, method, _ := strings.Cut(k, "/")
		if method != "*" {
			continue
		}
		for d, v := range DefaultFloors() {
			if _, feed := FeedFloors()[d]; strings.HasPrefix(d, svc+"/") && d != k && v > 0 && !feed {
				if _, exact := conf[d]; !exact {
					delete(m, d)
				}
			}
		}
	}
	for k, v := range conf {
		m[k] = max(v, 0)
	}
	return m
}

// floorOf finds the floor of "service/method": the exact name wins over
// "service/*".
func floorOf(floors map[string]time.Duration, name string) time.Duration {
	if d, ok := floors[name]; ok {
		return d
	}
	if svc, _, ok := strings.Cut(name, "/"); ok {
		return floors[svc+"/*"]
	}
	return 0
}

// fetch is the last upstream call of one cache key.
type fetch struct {
	at      time.Time
	expires time.Time // at + the floor when marked: after it the key is forgotten
}

// Floor returns the minimum interval between upstream calls of one cache
// key of the method name ("service/method"); 0 means none.
func (b *Budget) Floor(name string) time.Duration {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	return floorOf(b.floors, name)
}

// FloorWait returns how long until the cache key (of method name,
// "service/method") may be fetched upstream again; 0 means now.
func (b *Budget) FloorWait(key, name string) time.Duration {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	f, ok := b.fetched[key]
	if !ok {
		return 0
	}
	now := time.Now()
	if !now.Before(f.expires) {
		delete(b.fetched, key)
	}
	// The current floor, not the one at marking time, so a reload that
	// shortens a floor takes effect at once.
	return max(f.at.Add(floorOf(b.floors, name)).Sub(now), 0)
}

// MarkFetched records an upstream call of the cache key, for its floor.
//
// Memory stays bounded: a key is forgotten once its floor has passed (a
// sweep runs at most once a minute, piggybacked on this call), and since
// every upstream call also passes Acquire, the map holds at most the calls
// the rate limit allows during the longest floor plus a minute.
func (b *Budget) MarkFetched(key, name string) {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	now := time.Now()
	if !now.Before(b.nextPrune) {
		for k, f := range b.fetched {
			if !now.Before(f.expires) {
				delete(b.fetched, k)
			}
		}
		b.nextPrune = now.Add(pruneEvery)
	}
	d := floorOf(b.floors, name)
	if d <= 0 {
		delete(b.fetched, key)
		return
	}
	b.fetched[key] = fetch{at: now, expires: now.Add(d)}
}

// RestoreFetched records an upstream call of the cache key made at at,
// e.g. one persisted before a restart, unless a later call is recorded. A
// call whose floor has passed is not recorded.
func (b *Budget) RestoreFetched(key, name string, at time.Time) {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	d := floorOf(b.floors, name)
	if d <= 0 || !time.Now().Before(at.Add(d)) {
		return
	}
	if f, ok := b.fetched[key]; ok && !f.at.Before(at) {
		return
	}
	b.fetched[key] = fetch{at: at, expires: at.Add(d)}
}

// pruneEvery spaces the sweeps of forgotten keys: often enough that the map
// holds little more than the keys within their floor, rarely enough that
// the sweep costs nothing next to the upstream call it accompanies.
const pruneEvery = time.Minute
