package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// These tests run the edge with the real budget (default floors:
// availability 1m, catalog 10m) and a real Badger store in a synctest
// bubble, as economy_test.go does.

// changingStub is S-360 whose catalog (products 101 and 102), point of
// sales, availability and setup answers carry an edition the test
// changes, and whose getUpdatedAvailabilities reports product 101.
type changingStub struct {
	*s360Stub
	mu      sync.Mutex
	edition int
	setup   string
}

func newChangingStub() *changingStub {
	s := &changingStub{s360Stub: catalogStub(`{"productId":101}`, 0), edition: 1, setup: "a"}
	s.on("getCatalogDetailed", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"statusCode":"success","edition":%d,"catalogData":{"seasons":[{"products":[{"id":101},{"id":102}]}]}}`, s.current())
	})
	s.on(productAva.Method, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"statusCode":"success","edition":%d}`, s.current())
	})
	s.on(setupCall.Method, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		fmt.Fprintf(w, `{"statusCode":"success","lastSetupUpdate":%q}`, s.setup)
	})
	return s
}

func (s *changingStub) current() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.edition
}

// change makes a new edition of every answer.
func (s *changingStub) change() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.edition++
	s.setup += "'"
}

// staleHit checks that r is the stored answer of edition, served stale
// with detail: a hit, Cache-Status ttl at most 0 (an older generation's
// entry keeps its ttl: the generation is what makes it stale).
func staleHit(t *testing.T, r Result, detail string, edition int) {
	t.Helper()
	prefix, suffix := "s360edge; hit; ttl=", "; detail="+detail
	ttl, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.CacheStatus, prefix), suffix))
	if r.Err != nil || r.Entry == nil || !r.Hit || !strings.HasPrefix(r.CacheStatus, prefix) || !strings.HasSuffix(r.CacheStatus, suffix) || err != nil || ttl > 0 && detail != "generation" {
		t.Fatalf("got %q (err %v); want a stale hit with detail=%s", r.CacheStatus, r.Err, detail)
	}
	if want := fmt.Sprintf(`"edition":%d`, edition); !strings.Contains(string(r.Entry.Body), want) {
		t.Fatalf("served %s; want the stored answer (%s)", r.Entry.Body, want)
	}
}

// freshHit checks that r is a fresh hit of edition.
func freshHit(t *testing.T, r Result, edition int) {
	t.Helper()
	if r.Entry == nil || !r.Hit || r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
		t.Fatalf("got %q (err %v); want a fresh hit", r.CacheStatus, r.Err)
	}
	if want := fmt.Sprintf(`"edition":%d`, edition); !strings.Contains(string(r.Entry.Body), want) {
		t.Fatalf("served %s; want the new answer (%s)", r.Entry.Body, want)
	}
}

// A change reported by the feed, a soft purge of any scope and a setup
// change each leave the key its stored answer: every request during the
// key's floor gets it (never a 429), and a refresh goes out the moment
// the floor ends, without another request, so that the new answer is
// served from then on.
func TestChangesKeepAnAnswerUntilTheFloorAllowsARefresh(t *testing.T) {
	purge := func(req PurgeRequest) func(t *testing.T, v *economy) {
		return func(t *testing.T, v *economy) {
			t.Helper()
			if n, err := v.e.Purge(context.Background(), req); err != nil || n == 0 {
				t.Fatalf("Purge = %d, %v", n, err)
			}
		}
	}
	availKey := s360.Key("mosa", productAva, []byte(`{"productIds":[101]}`))
	for _, tc := range []struct {
		name   string
		call   s360.Call
		body   string
		floor  time.Duration
		change func(t *testing.T, v *economy)
		detail string
	}{
		{"the feed reports the product", productAva, `{"productIds":[101]}`, time.Minute,
			func(t *testing.T, v *economy) { mustPoll(t, v.e.pollUpdates) }, "invalidated"},
		{"soft purge of the key", productAva, `{"productIds":[101]}`, time.Minute, purge(PurgeRequest{Key: availKey}), "purged"},
		{"soft purge of a tag", productAva, `{"productIds":[101]}`, time.Minute, purge(PurgeRequest{Tag: "product:101"}), "purged"},
		{"soft purge of the class", productAva, `{"productIds":[101]}`, time.Minute, purge(PurgeRequest{Class: cachestore.Availability}), "purged"},
		{"soft purge of everything", productAva, `{"productIds":[101]}`, time.Minute, purge(PurgeRequest{}), "purged"},
		{"setup change", catalog, `{}`, 10 * time.Minute,
			func(t *testing.T, v *economy) { mustPoll(t, v.e.pollSetup) }, "generation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stub := newChangingStub()
				v := openEconomy(t, t.TempDir(), stub.s360Stub, nil)
				defer v.e.Close()
				mustPoll(t, v.e.pollSetup) // records the setup value
				v.serve(t, posConfig, `{}`)
				v.serve(t, catalog, `{}`)
				if tc.call != catalog {
					expect(t, v.serve(t, tc.call, tc.body), "s360edge; fwd=miss; stored", `"edition":1`)
				}
				start := time.Now() // the key's floor runs from here
				calls := stub.count(tc.call.Method)

				time.Sleep(5 * time.Second)
				stub.change()
				tc.change(t, v)
				for range 7 { // from 5 s into the floor to 1.25 s before its end
					staleHit(t, v.serve(t, tc.call, tc.body), tc.detail, 1)
					time.Sleep(tc.floor / 8)
				}
				synctest.Wait()
				if n := stub.count(tc.call.Method) - calls; n != 0 {
					t.Fatalf("%d calls within the floor, want 0", n)
				}
				time.Sleep(start.Add(tc.floor).Sub(time.Now()))
				synctest.Wait()
				if n := stub.count(tc.call.Method) - calls; n != 1 {
					t.Fatalf("%d calls when the floor ended, want 1 (the refresh)", n)
				}
				freshHit(t, v.serve(t, tc.call, tc.body), 2)
			})
		})
	}
}

// Past the floor, a request for an entry S-360 reported changed gets the
// new answer at once (within stale_timeout): it is known to be outdated.
func TestInvalidatedEntryPastTheFloorIsFetchedForTheBuyer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newChangingStub()
		v := openEconomy(t, t.TempDir(), stub.s360Stub, nil)
		defer v.e.Close()
		v.serve(t, posConfig, `{}`)
		v.serve(t, catalog, `{}`)
		v.serve(t, productAva, `{"productIds":[101]}`)
		time.Sleep(2 * time.Minute)
		stub.change()
		mustPoll(t, v.e.pollUpdates)
		expect(t, v.serve(t, productAva, `{"productIds":[101]}`), "s360edge; fwd=stale; stored", `"edition":2`)
		freshHit(t, v.serve(t, productAva, `{"productIds":[101]}`), 2)
	})
}

// Only a hard purge deletes: the next request is a miss, refused within
// the key's floor.
func TestHardPurgeDeletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := openEconomy(t, t.TempDir(), newChangingStub().s360Stub, nil)
		defer v.e.Close()
		v.serve(t, productAva, `{"productIds":[101]}`)
		key := s360.Key("mosa", productAva, []byte(`{"productIds":[101]}`))
		if n, err := v.e.Purge(context.Background(), PurgeRequest{Key: key, Hard: true}); n != 1 || err != nil {
			t.Fatalf("Purge = %d, %v", n, err)
		}
		if _, err := v.e.Store().Get(key); err == nil {
			t.Fatal("a hard purge left the entry")
		}
		if w := floorWait(t, v.serve(t, productAva, `{"productIds":[101]}`)); w <= 0 || w > time.Minute {
			t.Fatalf("floor wait %v", w)
		}
	})
}

// An answer asked for before a purge (soft or hard, of any scope) or an
// invalidation, and stored after it, is stored stale with the mark: the
// purge is not undone by the call that was out, and the key is refreshed
// when its floor allows.
func TestPurgeDuringACallLeavesItsAnswerStale(t *testing.T) {
	availKey := s360.Key("mosa", productAva, []byte(`{"productIds":[101]}`))
	catalogKey := s360.Key("mosa", catalog, []byte(`{}`))
	type change func(t *testing.T, v *economy)
	purge := func(req PurgeRequest) change {
		return func(t *testing.T, v *economy) {
			t.Helper()
			if _, err := v.e.Purge(context.Background(), req); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name   string
		call   s360.Call
		body   string
		change change
		mark   string
	}{
		{"the feed reports the product", productAva, `{"productIds":[101]}`, func(t *testing.T, v *economy) { mustPoll(t, v.e.pollUpdates) }, cachestore.InvalidatedTag},
		{"a catalog call, its class purged", catalog, `{}`, purge(PurgeRequest{Class: cachestore.Catalog}), cachestore.PurgedTag},
		{"a catalog call, its key purged hard", catalog, `{}`, purge(PurgeRequest{Key: catalogKey, Hard: true}), cachestore.PurgedTag},
	}
	for _, hard := range []bool{false, true} {
		for _, s := range []struct {
			name string
			req  PurgeRequest
		}{
			{"key", PurgeRequest{Key: availKey}},
			{"tag", PurgeRequest{Tag: "product:101"}},
			{"class", PurgeRequest{Class: cachestore.Availability}},
			{"everything", PurgeRequest{}},
		} {
			s.req.Hard = hard
			name := "soft purge of the " + s.name
			if hard {
				name = "hard purge of the " + s.name
			}
			cases = append(cases, struct {
				name   string
				call   s360.Call
				body   string
				change change
				mark   string
			}{name, productAva, `{"productIds":[101]}`, purge(s.req), cachestore.PurgedTag})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stub := newChangingStub()
				v := openEconomy(t, t.TempDir(), stub.s360Stub, nil)
				defer v.e.Close()
				v.serve(t, posConfig, `{}`)
				if tc.call != catalog {
					v.serve(t, catalog, `{}`)
				}
				release := make(chan struct{})
				answer := func(w http.ResponseWriter, r *http.Request) {
					<-release
					io.WriteString(w, `{"statusCode":"success","edition":1,"catalogData":{"seasons":[{"products":[{"id":101}]}]}}`)
				}
				stub.on(tc.call.Method, answer)
				done := make(chan Result)
				go func() { done <- v.serve(t, tc.call, tc.body) }()
				synctest.Wait() // the call is out
				time.Sleep(time.Second)
				tc.change(t, v)
				stub.change()
				close(release)
				// The buyer who waited gets the answer to the question asked.
				expect(t, <-done, "s360edge; fwd=miss; stored", `"edition":1`)
				ent, err := v.e.Store().Get(s360.Key("mosa", tc.call, []byte(tc.body)))
				if err != nil || time.Now().Before(ent.FreshUntil) || cachestore.Marked(ent.Tags) != tc.mark {
					t.Fatalf("stored %+v (err %v); want it stale, marked %s", ent, err, tc.mark)
				}
				detail := strings.TrimPrefix(tc.mark, "s360edge:")
				staleHit(t, v.serve(t, tc.call, tc.body), detail, 1)
				// Refreshed when the floor ends.
				stub.on(tc.call.Method, nil)
				calls := stub.count(tc.call.Method)
				time.Sleep(10 * time.Minute)
				synctest.Wait()
				if n := stub.count(tc.call.Method) - calls; n != 1 {
					t.Fatalf("%d refreshes once the floor passed, want 1", n)
				}
				r := v.serve(t, tc.call, tc.body)
				if r.Entry == nil || !r.Hit || r.CacheStatus != hitStatus(r.Entry, time.Now(), "") {
					t.Fatalf("after the refresh: %q", r.CacheStatus)
				}
			})
		})
	}
}

// Nor is that answer ever in the store fresh, not even for the moment
// between two Puts: a buyer's request at that moment would get it as a
// fresh hit (the property test's seeds 0 and 6 did, about 1 run in 10).
// The edge's clock is the test's window into the fetch: each time the
// edge reads it after the change, the store must not hold a fresh,
// unmarked copy of the key (keepStale reads it between the two Puts).
func TestChangeDuringACallNeverLeavesItsAnswerFresh(t *testing.T) {
	key := s360.Key("mosa", productAva, []byte(`{"productIds":[101]}`))
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, e *Edge)
		detail string
	}{
		{"soft purge of the key", func(t *testing.T, e *Edge) {
			if _, err := e.Purge(context.Background(), PurgeRequest{Key: key}); err != nil {
				t.Fatal(err)
			}
		}, "purged"},
		{"the feed reports the product", func(t *testing.T, e *Edge) { mustPoll(t, e.pollUpdates) }, "invalidated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var (
					e        *Edge
					watching atomic.Bool
					seen     atomic.Pointer[string]
				)
				now := func() time.Time {
					if watching.Load() {
						if ent, err := e.Store().Get(key); err == nil && time.Now().Before(ent.FreshUntil) && cachestore.Marked(ent.Tags) == "" {
							s := string(ent.Body)
							seen.CompareAndSwap(nil, &s)
						}
					}
					return time.Now()
				}
				stub := newChangingStub()
				e, err := Open(Options{Dir: t.TempDir(), Institution: "mosa", Gate: budget.New(budget.Config{}), Now: now})
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Timeout: 5 * time.Second,
					Transport: stub.transport(nil), Gate: e})
				e.Attach(c)
				v := &economy{e: e, client: c, stub: stub.s360Stub}
				v.serve(t, posConfig, `{}`)
				v.serve(t, catalog, `{}`)
				release := make(chan struct{})
				stub.on(productAva.Method, func(w http.ResponseWriter, r *http.Request) {
					<-release
					io.WriteString(w, `{"statusCode":"success","edition":1}`)
				})
				done := make(chan Result)
				go func() { done <- v.serve(t, productAva, `{"productIds":[101]}`) }()
				synctest.Wait() // the call is out
				time.Sleep(time.Second)
				tc.change(t, e)
				watching.Store(true)
				close(release)
				expect(t, <-done, "s360edge; fwd=miss; stored", `"edition":1`)
				synctest.Wait()
				watching.Store(false)
				if s := seen.Load(); s != nil {
					t.Fatalf("the store held %s fresh after the change", *s)
				}
				staleHit(t, v.serve(t, productAva, `{"productIds":[101]}`), tc.detail, 1)
			})
		})
	}
}
