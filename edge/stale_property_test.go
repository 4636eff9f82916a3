package edge

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tidwall/gjson"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// propKey is a key of the property test, with what purges and
// invalidations see of it.
type propKey struct {
	call  s360.Call
	body  string
	class cachestore.Class
	tags  []string
}

var propKeys = []propKey{
	{productAva, `{"productIds":[101]}`, cachestore.Availability, []string{"product:101"}},
	{productAva, `{"productIds":[102]}`, cachestore.Availability, []string{"product:102"}},
	{avail, `{"performanceIds":[1011]}`, cachestore.Availability, []string{"performance:1011"}},
	{productAva, `{"passId":7}`, cachestore.Availability, []string{s360.UntaggedTag}},
	{catalog, `{}`, cachestore.Catalog, nil},
	{posConfig, `{}`, cachestore.Catalog, nil},
}

// propTags are the tags the availability watcher invalidates for each
// product of propStub's catalog (besides s360.UntaggedTag).
var propTags = map[int][]string{
	101: {"product:101", "event:101", "event:5101", "performance:1011"},
	102: {"product:102", "event:102"},
}

// propStub is S-360 for the property test: each answer carries the epoch
// current when its request arrived, and takes 0 to 4 s.
type propStub struct {
	*s360Stub
	mu      sync.Mutex
	rng     *rand.Rand
	epoch   int
	changed []int // what getUpdatedAvailabilities reports
	setup   int
	reports int // getUpdatedAvailabilities answers that reported a change
}

func newPropStub(seed uint64) *propStub {
	s := &propStub{s360Stub: newStub(), rng: rand.New(rand.NewPCG(seed, 2))}
	slow := func(format string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			epoch, d := s.epoch, time.Duration(s.rng.IntN(5))*time.Second
			s.mu.Unlock()
			time.Sleep(d)
			fmt.Fprintf(w, format, epoch)
		}
	}
	s.on("getCatalogDetailed", slow(`{"statusCode":"success","epoch":%d,"catalogData":{"seasons":[{"products":[{"id":101,"event":{"id":5101,"performances":[{"id":1011}]}},{"id":102}]}]}}`))
	s.on("getPOSConfig", slow(`{"statusCode":"success","epoch":%d,"posConfigData":{"posId":9}}`))
	s.on(productAva.Method, slow(`{"statusCode":"success","epoch":%d}`))
	s.on(avail.Method, slow(`{"statusCode":"success","epoch":%d}`))
	s.on("getUpdatedAvailabilities", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var rows []string
		for _, id := range s.changed {
			rows = append(rows, fmt.Sprintf(`{"productId":%d}`, id))
		}
		if len(rows) > 0 {
			s.reports++
		}
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		fmt.Fprintf(w, `{"statusCode":"success","availabilityUpdateData":[%s]}`, strings.Join(rows, ","))
	})
	s.on(setupCall.Method, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		fmt.Fprintf(w, `{"statusCode":"success","lastSetupUpdate":"%d"}`, s.setup)
	})
	return s
}

// propCounts are what the runs saw, so that the property is not checked
// on nothing.
type propCounts struct {
	mu                       sync.Mutex
	checked, marked, refused int
	freshChecked             int
}

// Whatever the floors, purges and invalidations, a buyer is never refused
// (429) for a key the sidecar has an answer for, and never gets as fresh
// an answer asked for before a purge or an invalidation of its key. Random
// sequences of requests, soft and hard purges of every scope, feed
// invalidations, setup changes and time passing, on the real budget and
// store, with S-360 answering in 0 to 4 s (so that purges land while
// calls are out, and buyers get stale answers after stale_timeout).
func TestPropertyNoRefusalForAKeyWithAnAnswer(t *testing.T) {
	var counts propCounts
	for seed := range 12 {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { propRun(t, uint64(seed), &counts) })
		})
	}
	t.Logf("requests checked %d (answered stale with a mark %d, refused with no answer %d); fresh hits checked %d",
		counts.checked, counts.marked, counts.refused, counts.freshChecked)
	if counts.marked == 0 || counts.refused == 0 || counts.freshChecked == 0 {
		t.Errorf("the runs did not exercise the property: %d requests, %d stale with a mark, %d refused, %d fresh hits",
			counts.checked, counts.marked, counts.refused, counts.freshChecked)
	}
}

func propRun(t *testing.T, seed uint64, counts *propCounts) {
	rng := rand.New(rand.NewPCG(seed, 1))
	pick := func(ds ...time.Duration) time.Duration { return ds[rng.IntN(len(ds))] }
	floors := map[string]time.Duration{
		"availabilityService/*": pick(0, 10*time.Second, time.Minute),
		"catalogService/*":      pick(0, time.Minute, 10*time.Minute),
	}
	policy := Policy{
		MaxAge:               map[string]time.Duration{"availabilityService/*": pick(2*time.Minute, time.Hour)},
		StaleWhileRevalidate: pick(30*time.Second, time.Hour),
	}
	stub := newPropStub(seed)
	e, err := Open(Options{Dir: t.TempDir(), Institution: "mosa", Gate: budget.New(budget.Config{Floors: floors}), Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	client := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Timeout: 10 * time.Second,
		Transport: stub.transport(nil), Gate: e})
	e.Attach(client)
	var background sync.WaitGroup
	defer background.Wait()

	keyOf := func(k propKey) string { return s360.Key("mosa", k.call, []byte(k.body)) }
	answered := map[string]bool{} // the sidecar was given an answer, and no hard purge of it ran since
	purgedAt := map[string]int{}  // the epoch of the last purge or invalidation of the key
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, floors %v, policy %v/%v: %s\nafter:\n%s", seed, floors, policy.MaxAge, policy.StaleWhileRevalidate,
			fmt.Sprintf(format, args...), strings.Join(log[max(0, len(log)-25):], "\n"))
	}
	// change runs a purge or an invalidation of the keys concerned, in a
	// new epoch; done says whether the edge did run it.
	change := func(concerned func(propKey) bool, hard bool, run func() bool) {
		stub.mu.Lock()
		stub.epoch++
		epoch := stub.epoch
		stub.mu.Unlock()
		before := maps.Clone(purgedAt)
		for _, k := range propKeys {
			if concerned(k) {
				purgedAt[keyOf(k)] = epoch
			}
		}
		if !run() {
			purgedAt = before
			return
		}
		for _, k := range propKeys {
			if hard && concerned(k) {
				answered[keyOf(k)] = false
			}
		}
	}
	purge := func(req PurgeRequest, concerned func(propKey) bool) {
		log = append(log, fmt.Sprintf("%s purge %+v", time.Now().Format("15:04:05"), req))
		change(concerned, req.Hard, func() bool {
			if _, err := e.Purge(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			return true
		})
	}

	if err := e.pollSetup(context.Background()); err != nil { // records the setup value
		t.Fatal(err)
	}
	for range 90 {
		switch op := rng.IntN(100); {
		case op < 40: // a buyer's request
			k := propKeys[rng.IntN(len(propKeys))]
			key := keyOf(k)
			_, err := e.Store().Get(key)
			had := err == nil
			r := e.Serve(context.Background(), client, k.call, []byte(k.body), "")
			log = append(log, fmt.Sprintf("%s %s %s: had %v, answered %v: %q, err %v", time.Now().Format("15:04:05"), k.call.Method, k.body, had, answered[key], r.CacheStatus, r.Err))
			counts.mu.Lock()
			counts.checked++
			if r.Entry != nil && (strings.HasSuffix(r.CacheStatus, "detail=invalidated") || strings.HasSuffix(r.CacheStatus, "detail=purged")) {
				counts.marked++
			}
			if r.Entry == nil {
				counts.refused++
			}
			counts.mu.Unlock()
			if (had || answered[key]) && (r.Entry == nil || r.Err != nil) {
				fail("%s %s had an answer (stored %v) and got %q, err %v", k.call.Method, k.body, had, r.CacheStatus, r.Err)
			}
			if r.Entry != nil {
				answered[key] = true
			}
			if r.Hit && !strings.Contains(r.CacheStatus, "detail=") {
				counts.mu.Lock()
				counts.freshChecked++
				counts.mu.Unlock()
				if epoch := int(gjson.GetBytes(r.Entry.Body, "epoch").Int()); epoch < purgedAt[key] {
					fail("%s %s: a fresh hit (%q) of an answer asked for in epoch %d, before the purge or invalidation of epoch %d", k.call.Method, k.body, r.CacheStatus, epoch, purgedAt[key])
				}
			}
		case op < 47: // a request nobody checks: a call out while the next steps run
			k := propKeys[rng.IntN(len(propKeys))]
			log = append(log, fmt.Sprintf("%s background %s %s", time.Now().Format("15:04:05"), k.call.Method, k.body))
			background.Go(func() { e.Serve(context.Background(), client, k.call, []byte(k.body), "") })
		case op < 62:
			time.Sleep(pick(time.Second, 3*time.Second, 10*time.Second, 30*time.Second, 70*time.Second, 4*time.Minute))
			log = append(log, fmt.Sprintf("%s slept", time.Now().Format("15:04:05")))
		case op < 80: // an operator's purge
			hard := rng.IntN(3) == 0
			switch rng.IntN(4) {
			case 0:
				k := propKeys[rng.IntN(len(propKeys))]
				purge(PurgeRequest{Key: keyOf(k), Hard: hard}, func(x propKey) bool { return keyOf(x) == keyOf(k) })
			case 1:
				tag := []string{"product:101", "product:102", "performance:1011", s360.UntaggedTag}[rng.IntN(4)]
				purge(PurgeRequest{Tag: tag, Hard: hard}, func(x propKey) bool { return slices.Contains(x.tags, tag) })
			case 2:
				c := []cachestore.Class{cachestore.Catalog, cachestore.Availability}[rng.IntN(2)]
				purge(PurgeRequest{Class: c, Hard: hard}, func(x propKey) bool { return x.class == c })
			default:
				purge(PurgeRequest{Hard: hard}, func(propKey) bool { return true })
			}
		case op < 94: // S-360's feed reports products changed
			products := [][]int{{101}, {102}, {101, 102}}[rng.IntN(3)]
			tags := []string{s360.UntaggedTag}
			for _, p := range products {
				tags = append(tags, propTags[p]...)
			}
			log = append(log, fmt.Sprintf("%s invalidation of %v", time.Now().Format("15:04:05"), products))
			change(func(k propKey) bool {
				return slices.ContainsFunc(k.tags, func(t string) bool { return slices.Contains(tags, t) })
			}, false, func() bool {
				stub.mu.Lock()
				stub.changed, stub.reports = products, 0
				stub.mu.Unlock()
				err := e.pollUpdates(context.Background())
				stub.mu.Lock()
				defer stub.mu.Unlock()
				stub.changed = nil
				return err == nil && stub.reports > 0
			})
		default: // a setup change
			log = append(log, fmt.Sprintf("%s setup change", time.Now().Format("15:04:05")))
			change(func(k propKey) bool { return k.class == cachestore.Catalog }, false, func() bool {
				gen := e.Generation()
				stub.mu.Lock()
				stub.setup++
				stub.mu.Unlock()
				e.pollSetup(context.Background())
				return e.Generation() > gen
			})
		}
	}
}
