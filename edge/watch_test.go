package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/s360"
)

// watchFake is an S-360 with a setup value, a catalog of n products
// (ids 101.., event ids 5101.., performances <id>1 and <id>2) and a
// getUpdatedAvailabilities that reports the products in updated.
type watchFake struct {
	mu          sync.Mutex
	setup       string // getLastSetupUpdate value
	setupStatus int    // HTTP status of getLastSetupUpdate; 0 = 200
	setupBody   string // if set, the whole getLastSetupUpdate answer
	products    int
	edition     string        // appears in the catalog: tells a refreshed catalog apart
	hold        chan struct{} // when set, getCatalogDetailed waits for it
	updated     map[string]bool
	failBatch   int // this getUpdatedAvailabilities call of a poll (1-based, counted by batch) answers 503
	batch       int
	bodies      map[string][]string // request bodies by method
	date        func() time.Time    // S-360's clock, for the Date header of getUpdatedAvailabilities
}

func newWatchFake() *watchFake {
	return &watchFake{setup: "2025-11-10T08:12:44.000+01:00", products: 2, edition: "v1", updated: map[string]bool{}, bodies: map[string][]string{}}
}

func (f *watchFake) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	method := path.Base(r.URL.Path)
	f.mu.Lock()
	f.bodies[method] = append(f.bodies[method], string(b))
	hold := f.hold
	f.mu.Unlock()
	if method == "getCatalogDetailed" && hold != nil {
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.date != nil {
		w.Header().Set("Date", f.date().UTC().Format(http.TimeFormat))
	}
	switch method {
	case "getLastSetupUpdate":
		if f.setupStatus != 0 {
			w.WriteHeader(f.setupStatus)
		}
		if f.setupBody != "" {
			io.WriteString(w, f.setupBody)
			return
		}
		fmt.Fprintf(w, `{"statusCode":"success","statusDetail":null,"requestId":%d,"lastSetupUpdate":%q}`, len(f.bodies[method]), f.setup)
	case "getPOSConfig":
		io.WriteString(w, `{"statusCode":"success","posConfigData":{"posId":9,"currencyCode":"EUR"}}`)
	case "getCatalogDetailed":
		var ps []string
		for i := 1; i <= f.products; i++ {
			id := 100 + i
			ps = append(ps, fmt.Sprintf(`{"id":%d,"code":"P%d","event":{"id":%d,"performances":[{"id":%d1},{"id":%d2}]}}`, id, id, 5000+id, id, id))
		}
		fmt.Fprintf(w, `{"statusCode":"success","edition":%q,"catalogData":{"seasons":[{"products":[%s]},{"products":[]}]}}`, f.edition, strings.Join(ps, ","))
	case "getUpdatedAvailabilities":
		f.batch++
		if f.batch == f.failBatch {
			w.WriteHeader(503)
			return
		}
		var req struct{ ProductIDs []json.Number }
		json.Unmarshal(b, &req)
		rows := []string{}
		for _, id := range req.ProductIDs {
			if f.updated[id.String()] {
				rows = append(rows, fmt.Sprintf(`{"productId":%s,"lastUpdate":"2025-11-12T14:03:11.000+01:00"}`, id))
			}
		}
		fmt.Fprintf(w, `{"statusCode":"success","availabilityUpdateData":[%s]}`, strings.Join(rows, ","))
	default:
		fmt.Fprintf(w, `{"statusCode":"success","echo":%s}`, b)
	}
}

// gen is the catalog generation of the fake's setup value now.
func (f *watchFake) gen(t *testing.T) uint64 {
	t.Helper()
	f.mu.Lock()
	body := fmt.Sprintf(`{"statusCode":"success","statusDetail":null,"requestId":0,"lastSetupUpdate":%q}`, f.setup)
	f.mu.Unlock()
	v, err := s360.Canonical([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return GenerationOf(v)
}

func (f *watchFake) set(fn func(f *watchFake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *watchFake) calls(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.bodies[method])
}

func newWatchEnv(t *testing.T, f *watchFake, dir string) *env {
	t.Helper()
	fs := &fakeS360{}
	fs.answer.Store(f.serve)
	v := newEnv(t, fs, dir)
	f.mu.Lock()
	if f.date == nil {
		f.date = time.Now
	}
	f.mu.Unlock()
	return v
}

var (
	posConfig  = s360.Call{Service: "catalogService", Version: "v1_33", Method: "getPOSConfig", Class: s360.Catalog}
	productAva = s360.Call{Service: "availabilityService", Version: "v1_33", Method: "getProductAvailability", Class: s360.Availability}
)

// eventually waits until cond holds, in a synctest bubble: it lets time
// pass only when cond does not hold once everything has settled, and fails
// at a deadline of fake time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 5*time.Second, what, cond)
}

// eventuallyWithin is eventually with a deadline of d.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for synctest.Wait(); !cond(); synctest.Wait() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustPoll(t *testing.T, poll func(context.Context) error) {
	t.Helper()
	if err := poll(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupChangeServesOldGenerationThenRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		mustPoll(t, v.e.pollSetup) // first poll, empty store: recorded, no new generation
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss; stored", `"edition":"v1"`)

		// No change: no new generation, no catalog call, however many polls.
		for range 20 {
			mustPoll(t, v.e.pollSetup)
		}
		if g, n := v.e.Generation(), len(f.calls("getCatalogDetailed")); g != 0 || n != 1 {
			t.Fatalf("without a setup change: generation %d, %d catalog calls", g, n)
		}

		hold := make(chan struct{})
		f.set(func(f *watchFake) { f.setup, f.edition, f.hold = "2025-11-11T09:00:00.000+01:00", "v2", hold })
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != f.gen(t) {
			t.Fatalf("generation %d after a setup change, want the new value's %d", g, f.gen(t))
		}
		eventually(t, "the refresh-ahead call", func() bool { return len(f.calls("getCatalogDetailed")) == 2 })
		// While the refresh is in flight, the old entry is served.
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400; detail=generation", `"edition":"v1"`)
		close(hold)
		waitRefreshes(t, v, 1)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v2"`)
		if n := len(f.calls("getCatalogDetailed")); n != 2 {
			t.Fatalf("%d catalog calls, want 2 (one per generation)", n)
		}
		st := v.e.Stats()
		if st.Generations != 1 || st.SetupPolls != 22 || st.LastSetupChange.IsZero() || !st.LastSetupPoll.Equal(time.Now()) {
			t.Fatalf("stats %+v", st)
		}
		if b, _ := json.Marshal(st); !strings.Contains(string(b), `"last_setup_change":`) || !strings.Contains(string(b), `"refreshes":1`) {
			t.Fatalf("stats JSON %s", b)
		}
	})
}

func TestSetupValueAndGenerationSurviveRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		dir := t.TempDir()
		v := newWatchEnv(t, f, dir)
		mustPoll(t, v.e.pollSetup)
		v.serve(t, catalog, `{}`)
		v.e.Close()

		// Same value after the restart: the cache stays valid.
		v = newWatchEnv(t, f, dir)
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != 0 {
			t.Fatalf("generation %d after a restart without change", g)
		}
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v1"`)
		v.e.Close()

		// Changed while down: seen at the first poll.
		f.set(func(f *watchFake) { f.setup, f.edition = "2025-11-12T10:00:00.000+01:00", "v2" })
		v = newWatchEnv(t, f, dir)
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != f.gen(t) {
			t.Fatalf("generation %d after a change made while down, want the new value's %d", g, f.gen(t))
		}
		waitRefreshes(t, v, 1)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v2"`)
		v.e.Close()

		// The generation itself is persisted too.
		v = newWatchEnv(t, f, dir)
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != f.gen(t) {
			t.Fatalf("generation %d after restart, want %d", g, f.gen(t))
		}
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v2"`)
		if n := len(f.calls("getCatalogDetailed")); n != 2 {
			t.Fatalf("%d catalog calls, want 2", n)
		}
	})
}

func TestFirstPollWithCachedCatalogStartsGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		dir := t.TempDir()
		v := newWatchEnv(t, f, dir)
		v.serve(t, catalog, `{}`) // cached by a sidecar that never polled
		v.e.Close()
		time.Sleep(time.Second)
		v = newWatchEnv(t, f, dir)
		mustPoll(t, v.e.pollSetup) // the cached catalog's setup is unknown
		if g := v.e.Generation(); g != f.gen(t) {
			t.Fatalf("generation %d, want the value's %d", g, f.gen(t))
		}
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != f.gen(t) || v.e.Stats().Generations != 1 {
			t.Fatalf("generation %d after a second poll (%d generations), want the same", g, v.e.Stats().Generations)
		}
		waitRefreshes(t, v, 1)
	})
}

// A catalog fetched since the edge opened is as new as the first poll's
// value: no generation, no refetch (on a cluster, every node would refetch).
func TestFirstPollAfterAFreshFetchKeepsTheGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		time.Sleep(time.Second)
		v.serve(t, catalog, `{}`)
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != 0 {
			t.Fatalf("generation %d, want 0", g)
		}
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v1"`)
		if n := len(f.calls("getCatalogDetailed")); n != 1 {
			t.Fatalf("%d catalog calls, want 1", n)
		}
	})
}

// waitRefreshes waits for n entries refreshed ahead, also so that a test
// does not end (Close) with a fetch in flight.
func waitRefreshes(t *testing.T, v *env, n uint64) {
	t.Helper()
	eventually(t, "the refresh-ahead", func() bool { return v.e.Stats().Refreshes >= n })
}

func TestFailedSetupPollChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		mustPoll(t, v.e.pollSetup)
		v.serve(t, catalog, `{}`)
		before, _ := v.e.Store().GetMeta(metaSetupLast)
		for _, fail := range []func(f *watchFake){
			func(f *watchFake) { f.setupStatus, f.setupBody = 503, "unavailable" },
			func(f *watchFake) { f.setupStatus, f.setupBody = 509, `{"statusCode":"error"}` },
			func(f *watchFake) { f.setupStatus, f.setupBody = 200, `{"statusCode":"in_progress"}` },
			func(f *watchFake) {
				f.setupStatus, f.setupBody = 200, `{"statusCode":"error","statusDetail":"error.technical"}`
			},
			func(f *watchFake) { f.setupStatus, f.setupBody = 500, `{"statusCode":"success","lastSetupUpdate":"x"}` },
		} {
			f.set(fail)
			if err := v.e.pollSetup(context.Background()); err == nil {
				t.Fatalf("poll succeeded with setup answer %d %s", f.setupStatus, f.setupBody)
			}
		}
		after, _ := v.e.Store().GetMeta(metaSetupLast)
		if g := v.e.Generation(); g != 0 || string(after) != string(before) {
			t.Fatalf("failed polls changed things: generation %d, value %s -> %s", g, before, after)
		}
		if st := v.e.Stats(); st.PollFailures != 5 || st.Generations != 0 {
			t.Fatalf("stats %+v", st)
		}
		if n := len(f.calls("getCatalogDetailed")); n != 1 {
			t.Fatalf("%d catalog calls", n)
		}
		f.set(func(f *watchFake) { f.setupStatus, f.setupBody, f.setup = 0, "", "changed" })
		mustPoll(t, v.e.pollSetup)
		if g := v.e.Generation(); g != f.gen(t) {
			t.Fatalf("generation %d after recovery with a change, want %d", g, f.gen(t))
		}
		waitRefreshes(t, v, 1)
	})
}

func TestRefreshAheadWaitsOutTheFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		v.gate.floor = 10 * time.Minute
		mustPoll(t, v.e.pollSetup)
		v.serve(t, catalog, `{}`)
		time.Sleep(10*time.Minute - 20*time.Millisecond)
		f.set(func(f *watchFake) { f.setup, f.edition = "changed", "v2" })
		mustPoll(t, v.e.pollSetup)

		// The floor refuses the refresh: it is retried on a timer. (No request
		// is served meanwhile: its own stale refresh would race the timer.)
		key := s360.Key("mosa", catalog, []byte(`{}`))
		eventually(t, "a retry timer", func() bool {
			v.e.mu.Lock()
			defer v.e.mu.Unlock()
			return v.e.watch.retries[key] != nil
		})
		if n := len(f.calls("getCatalogDetailed")); n != 1 {
			t.Fatalf("floor let the refresh through: %d catalog calls", n)
		}
		time.Sleep(20 * time.Millisecond) // the floor has passed
		waitRefreshes(t, v, 1)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86400", `"edition":"v2"`)
		if n := len(f.calls("getCatalogDetailed")); n != 2 {
			t.Fatalf("%d catalog calls, want 2", n)
		}
	})
}

func TestUpdatesInvalidateOnlyChangedProducts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		v.serve(t, posConfig, `{}`)
		v.serve(t, catalog, `{}`)
		a := []struct {
			call s360.Call
			body string
		}{
			{avail, `{"pointOfSalesId":9,"performanceIds":[1011]}`},
			{avail, `{"pointOfSalesId":9,"eventIds":[5101]}`},
			{productAva, `{"pointOfSalesId":9,"productIds":[101]}`},
		}
		b := []struct {
			call s360.Call
			body string
		}{
			{avail, `{"pointOfSalesId":9,"performanceIds":[1021]}`},
			{avail, `{"pointOfSalesId":9,"eventIds":[102]}`},
			{productAva, `{"pointOfSalesId":9,"productIds":[102]}`},
		}
		for _, r := range append(a, b...) {
			v.serve(t, r.call, r.body)
		}
		first := time.Now()
		mustPoll(t, v.e.pollUpdates) // first poll ever: from now
		time.Sleep(time.Minute)
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, v.e.pollUpdates)

		got := f.calls("getUpdatedAvailabilities")
		want := []string{
			`{"pointOfSalesId":9,"productIds":[101,102],"referenceDate":"` + first.UTC().Format(refDateLayout) + `"}`,
			`{"pointOfSalesId":9,"productIds":[101,102],"referenceDate":"` + first.Add(-updatesOverlap).UTC().Format(refDateLayout) + `"}`,
		}
		if !slices.Equal(got, want) {
			t.Fatalf("getUpdatedAvailabilities bodies\n%q\nwant\n%q", got, want)
		}
		for _, r := range a { // no floor: fetched again, the invalidated copy at hand
			expect(t, v.serve(t, r.call, r.body), "s360edge; fwd=stale; stored", "echo")
		}
		for _, r := range b {
			expect(t, v.serve(t, r.call, r.body), "s360edge; hit; ttl=3540", "echo")
		}
		st := v.e.Stats()
		if st.Invalidated != 3 || st.UpdatesPolls != 2 || !st.LastUpdatesPoll.Equal(time.Now()) || st.PollFailures != 0 {
			t.Fatalf("stats %+v", st)
		}
		if n := len(f.calls("getPOSConfig")); n != 1 {
			t.Fatalf("%d getPOSConfig calls: the cached one was not used", n)
		}
		ref, _ := v.e.Store().GetMeta(metaUpdatesRef)
		if string(ref) != time.Now().UTC().Format(refDateLayout) {
			t.Fatalf("reference date %s", ref)
		}
	})
}

func TestUpdatesFetchPOSOnceAndSkipWithoutCatalog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		mustPoll(t, v.e.pollUpdates) // nothing cached: no call at all
		if n := v.f.calls.Load(); n != 0 {
			t.Fatalf("%d upstream calls without a catalog", n)
		}
		v.serve(t, catalog, `{}`)
		mustPoll(t, v.e.pollUpdates)
		mustPoll(t, v.e.pollUpdates)
		if n := len(f.calls("getPOSConfig")); n != 1 {
			t.Fatalf("%d getPOSConfig calls, want 1", n)
		}
		if n := len(f.calls("getUpdatedAvailabilities")); n != 2 {
			t.Fatalf("%d getUpdatedAvailabilities calls, want 2", n)
		}
	})
}

func TestUpdatesBatchesAndFailureKeepsReference(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		f.products = 5
		v := newWatchEnv(t, f, "")
		v.e.SetWatch(Watch{BatchSize: 2}) // no polling loops: the test drives the polls
		v.serve(t, posConfig, `{}`)
		v.serve(t, catalog, `{}`)
		first := time.Now()
		mustPoll(t, v.e.pollUpdates)
		ids := func(bodies []string) (out []string) {
			for _, b := range bodies {
				var req struct {
					ProductIDs    []json.Number
					ReferenceDate string
				}
				json.Unmarshal([]byte(b), &req)
				out = append(out, fmt.Sprint(req.ProductIDs, " ", req.ReferenceDate))
			}
			return out
		}
		ref0 := first.UTC().Format(refDateLayout)
		want := []string{"[101 102] " + ref0, "[103 104] " + ref0, "[105] " + ref0}
		if got := ids(f.calls("getUpdatedAvailabilities")); !slices.Equal(got, want) {
			t.Fatalf("batches %q, want %q", got, want)
		}

		// The second batch fails: the reference date stays.
		time.Sleep(time.Minute)
		f.set(func(f *watchFake) { f.batch, f.failBatch = 0, 2 })
		if err := v.e.pollUpdates(context.Background()); err == nil {
			t.Fatal("a failed batch went unnoticed")
		}
		if ref, _ := v.e.Store().GetMeta(metaUpdatesRef); string(ref) != ref0 {
			t.Fatalf("reference date moved to %s after a failed batch", ref)
		}
		time.Sleep(time.Minute)
		f.set(func(f *watchFake) { f.batch, f.failBatch, f.bodies["getUpdatedAvailabilities"] = 0, 0, nil })
		mustPoll(t, v.e.pollUpdates)
		ref1 := first.Add(-updatesOverlap).UTC().Format(refDateLayout)
		want = []string{"[101 102] " + ref1, "[103 104] " + ref1, "[105] " + ref1}
		if got := ids(f.calls("getUpdatedAvailabilities")); !slices.Equal(got, want) {
			t.Fatalf("after the failure: batches %q, want %q", got, want)
		}
		if st := v.e.Stats(); st.PollFailures != 1 || !st.LastUpdatesPoll.Equal(time.Now()) {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestSetWatchLoopsRestartAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		v := newWatchEnv(t, f, "")
		mustPoll(t, v.e.pollSetup) // record the setup first: the loops start no refresh
		v.serve(t, posConfig, `{}`)
		v.serve(t, catalog, `{}`)
		starts := func() int {
			v.e.mu.Lock()
			defer v.e.mu.Unlock()
			return v.e.watch.starts
		}
		w := Watch{SetupPoll: 2 * time.Millisecond, UpdatesPoll: 2 * time.Millisecond}
		v.e.SetWatch(w)
		eventually(t, "polls", func() bool { st := v.e.Stats(); return st.SetupPolls >= 3 && st.UpdatesPolls >= 3 })
		v.e.SetWatch(w) // a reload with the same settings
		if n := starts(); n != 1 {
			t.Fatalf("same settings restarted the loops (%d starts)", n)
		}
		v.e.SetWatch(Watch{SetupPoll: 3 * time.Millisecond})
		if n := starts(); n != 2 {
			t.Fatalf("new settings did not restart the loops (%d starts)", n)
		}
		polls := v.e.Stats().SetupPolls
		eventually(t, "polls after the restart", func() bool { return v.e.Stats().SetupPolls >= polls+3 })
		v.e.Close() // returns only once the loops have stopped
		v.e.SetWatch(w)
		if n := starts(); n != 2 {
			t.Fatal("SetWatch started loops on a closed edge")
		}
	})
}

func TestBackoff(t *testing.T) {
	for failures, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		t.Run(fmt.Sprintf("%d failures", failures), func(t *testing.T) {
			if got := backoff(time.Minute, failures); got != want {
				t.Errorf("backoff after %d failures = %s, want %s", failures, got, want)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	v := newEnv(t, nil, "") // institution "mosa"
	body := []byte(`{"a":"x|y","b":[1]}`)
	call, ok := v.e.parseKey(s360.Key("mosa", catalog, body))
	if !ok || call != catalog {
		t.Fatalf("parseKey = %+v %v", call, ok)
	}
	for _, tc := range []struct{ name, key string }{
		{"no separators", "nope"},
		{"no version", "mosa|catalogService/getCatalogDetailed|{}"},
		{"a method that is never cached", "mosa|externalOrderFacade/v1_33/createOrUpdateOrder|{}"},
		{"another institution", s360.Key("play", catalog, body)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := v.e.parseKey(tc.key); ok {
				t.Errorf("parseKey(%q) accepted", tc.key)
			}
		})
	}
}
