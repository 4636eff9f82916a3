package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// watchConfig polls every second (the default is a minute) and sets our
// own floors to 0, so that a refresh follows a change at once.
func watchConfig(s *sim) string {
	return siteCaddyfile(s.URL, append([]string{"setup_poll 1s", "updates_poll 1s"}, noFloors...), staticSite)
}

// startWatchSim runs the simulator without its per-request floors (the
// tests fetch the same catalog again within seconds) but with its
// institution rate limit, which the sidecar must never trip.
func startWatchSim(t *testing.T) *sim {
	return startSim(t, "-catalog-floor", "0", "-availability-floor", "0")
}

type watchStats struct {
	Generation      uint64    `json:"generation"`
	Generations     uint64    `json:"generation_changes"`
	LastSetupPoll   time.Time `json:"last_setup_poll"`
	LastUpdatesPoll time.Time `json:"last_updates_poll"`
	SetupPolls      uint64    `json:"setup_polls"`
	UpdatesPolls    uint64    `json:"updates_polls"`
	PollFailures    uint64    `json:"poll_failures"`
	Invalidated     uint64    `json:"invalidated"`
	Refreshes       uint64    `json:"refreshes"`
}

func (e *edge) watchStats(t *testing.T) watchStats {
	t.Helper()
	var out struct{ Edges []watchStats }
	getJSON(t, "http://"+e.Admin+"/s360/stats", &out)
	if len(out.Edges) != 1 {
		t.Fatalf("%d edges in the stats", len(out.Edges))
	}
	return out.Edges[0]
}

// waitSetupPolls waits for n more successful setup polls.
func (e *edge) waitSetupPolls(t *testing.T, n int) {
	t.Helper()
	start := e.watchStats(t)
	waitFor(t, fmt.Sprintf("%d setup polls", n), time.Duration(n)*time.Second+10*time.Second, func() bool {
		st := e.watchStats(t)
		return st.SetupPolls >= start.SetupPolls+uint64(n) && st.LastSetupPoll.After(start.LastSetupPoll)
	})
}

func no509(t *testing.T, s *sim) {
	t.Helper()
	if c := s.Counters(t); c.Statuses["509"] != 0 || c.RateLimited != 0 {
		t.Errorf("the simulator rate-limited the sidecar: %+v", c.Statuses)
	}
}

const getCatalog = api + "catalogService/v1_33/getCatalogDetailed"

func TestSetupChangeRefreshesCatalog(t *testing.T) {
	s := startWatchSim(t)
	e := startEdge(t, watchConfig(s))
	fx := s.Fixtures(t)
	// The first poll, on an empty store, records the setup.
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })

	bodies := []string{`{}`, `{"scope":"EXTENDED"}`}
	for _, b := range bodies {
		if _, hdr, _ := post(t, e.URL+getCatalog, b); hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
			t.Fatalf("catalog %s: %q", b, hdr.Get("Cache-Status"))
		}
	}
	calls := func() int { return s.Counters(t).Calls["catalogService/getCatalogDetailed"] }
	if n := calls(); n != 2 {
		t.Fatalf("%d getCatalogDetailed calls, want 2", n)
	}

	// No setup change: no catalog call over several polls.
	e.waitSetupPolls(t, 3)
	if n, st := calls(), e.watchStats(t); n != 2 || st.Generations != 0 {
		t.Fatalf("without a setup change: %d getCatalogDetailed calls, %d generation changes", n, st.Generations)
	}

	s.Control(t, "/_sim/setup", `{}`)
	renamed := fx.Products[0].Name + " v2"
	// One refresh per distinct catalog key, without a buyer asking.
	waitFor(t, "the catalog refresh", 10*time.Second, func() bool { return calls() >= 4 })
	for _, b := range bodies {
		status, hdr, body := post(t, e.URL+getCatalog, b)
		if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, "s360edge; hit;") || strings.Contains(cs, "detail=") || !strings.Contains(string(body), renamed) {
			t.Fatalf("catalog %s after the setup change: %d %q, new name present: %v", b, status, cs, strings.Contains(string(body), renamed))
		}
	}
	e.waitSetupPolls(t, 2)
	if n, st := calls(), e.watchStats(t); n != 4 || st.Generations != 1 || st.Generation == 0 {
		t.Fatalf("after a setup change: %d getCatalogDetailed calls (want 4), stats %+v", n, st)
	}
	no509(t, s)
}

func TestStockChangeInvalidatesOnlyThatProduct(t *testing.T) {
	s := startWatchSim(t)
	simUp := time.Now() // the simulator stamps every product with its start time
	e := startEdge(t, watchConfig(s))
	fx := s.Fixtures(t)
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })
	post(t, e.URL+getCatalog, `{}`)
	// Polls overlap by a second (edge.updatesOverlap): wait until the next
	// poll's reference date is past the simulator's start, or every
	// product would be reported as changed once.
	waitFor(t, "an updates poll past the simulator's start", 15*time.Second, func() bool {
		return e.watchStats(t).LastUpdatesPoll.After(simUp.Add(1500 * time.Millisecond))
	})

	a := fx.Products[0]
	b := fx.Products[0]
	for _, p := range fx.Products[1:] {
		// A performance has its product's state; only sellable products
		// are in the catalog, and so in the updates poll.
		if len(p.Performances) > 0 && p.Performances[0].State == "RUNNING" {
			b = p
			break
		}
	}
	if b.ID == a.ID {
		t.Fatal("no second RUNNING product in the fixtures")
	}
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
	bodyA := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, a.Performances[0].ID)
	bodyB := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, b.Performances[0].ID)
	for _, body := range []string{bodyA, bodyB} {
		if _, hdr, _ := post(t, url, body); hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
			t.Fatalf("availability %s: %q", body, hdr.Get("Cache-Status"))
		}
	}
	// Let an updates poll run with both cached and nothing changed.
	cached := time.Now()
	waitFor(t, "an updates poll", 15*time.Second, func() bool { return e.watchStats(t).LastUpdatesPoll.After(cached) })
	for _, body := range []string{bodyA, bodyB} {
		if _, hdr, _ := post(t, url, body); !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit;") {
			t.Fatalf("availability %s after an updates poll with no change: %q", body, hdr.Get("Cache-Status"))
		}
	}
	calls := func() int { return s.Counters(t).Calls["availabilityService/getEventAvailability"] }
	if n := calls(); n != 2 {
		t.Fatalf("%d getEventAvailability calls, want 2", n)
	}

	s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":3}`, a.Performances[0].ID, a.Performances[0].SeatCategoryIDs[0]))
	// No floor: the invalidated entry is fetched again for the request.
	waitFor(t, "A's availability to be refetched", 15*time.Second, func() bool {
		_, hdr, body := post(t, url, bodyA)
		return strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; fwd=stale") && strings.Contains(string(body), `"availableQuantity":3,`)
	})
	if _, hdr, _ := post(t, url, bodyB); !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit;") {
		t.Fatalf("B's availability after A's stock changed: %q", hdr.Get("Cache-Status"))
	}
	if n := calls(); n != 3 {
		t.Fatalf("%d getEventAvailability calls, want 3 (A refetched once, B never)", n)
	}
	if st := e.watchStats(t); st.Invalidated == 0 || st.PollFailures != 0 {
		t.Fatalf("stats %+v", st)
	}
	no509(t, s)
}

// A stock change the feed reports within the key's floor leaves buyers
// the stored answer (200, detail=invalidated), never a 429 min_interval,
// and the new stock is served once the floor ends: within floor + poll of
// the change.
func TestStockChangeWithinTheFloorIsServedStaleThenRefreshed(t *testing.T) {
	// The floor leaves the feed time to report the change first, even on
	// a loaded machine.
	const floor, poll = 8 * time.Second, time.Second
	s := startWatchSim(t)
	simUp := time.Now()
	e := startEdge(t, siteCaddyfile(s.URL, []string{"setup_poll 1s", "updates_poll 1s",
		"min_interval catalogService/* 0", "min_interval availabilityService/* " + floor.String()}, staticSite))
	fx := s.Fixtures(t)
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })
	post(t, e.URL+getCatalog, `{}`)
	waitFor(t, "an updates poll past the simulator's start", 15*time.Second, func() bool {
		return e.watchStats(t).LastUpdatesPoll.After(simUp.Add(1500 * time.Millisecond))
	})
	perf := fx.Products[0].Performances[0]
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
	body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, perf.ID)
	if _, hdr, _ := post(t, url, body); hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("availability: %q", hdr.Get("Cache-Status"))
	}
	calls := func() int { return s.Counters(t).Calls["availabilityService/getEventAvailability"] }

	s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":3}`, perf.ID, perf.SeatCategoryIDs[0]))
	changed := time.Now()
	var invalidated, before int
	var last string
	waitFor(t, "the new stock", floor+poll+5*time.Second, func() bool {
		status, hdr, b := post(t, url, body)
		last = fmt.Sprintf("%d %q %.120s", status, hdr.Get("Cache-Status"), b)
		cs := hdr.Get("Cache-Status")
		switch {
		case status != 200:
			t.Fatalf("%s after the stock change: %s", time.Since(changed), last)
		case strings.Contains(string(b), `"availableQuantity":3,`):
			return true
		case strings.HasPrefix(cs, "s360edge; hit; ttl=-") || strings.HasPrefix(cs, "s360edge; hit; ttl=0;"):
			if !strings.HasSuffix(cs, "; detail=invalidated") {
				t.Fatalf("the old stock served as %q", cs)
			}
			invalidated++
		case strings.HasPrefix(cs, "s360edge; hit; ttl=") && !strings.Contains(cs, "detail="):
			before++ // fresh: the feed has not reported the change yet
		default:
			t.Fatalf("%s after the stock change: %s", time.Since(changed), last)
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	took := time.Since(changed)
	t.Logf("new stock served %s after the change (floor %s, poll %s): %d answers of the old stock before the feed reported it, %d invalidated; last %s",
		took.Round(10*time.Millisecond), floor, poll, before, invalidated, last)
	if invalidated == 0 {
		t.Error("no request was answered with the invalidated entry")
	}
	// Refreshed in the background when the floor ended: served as a hit.
	if _, hdr, _ := post(t, url, body); !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit; ttl=") || strings.Contains(hdr.Get("Cache-Status"), "detail=") {
		t.Errorf("after the refresh: %q", hdr.Get("Cache-Status"))
	}
	if n := calls(); n != 2 {
		t.Errorf("%d getEventAvailability calls, want 2 (the miss, the refresh when the floor ended)", n)
	}
	if took > floor+poll+2*time.Second {
		t.Errorf("the new stock came %s after the change, more than floor + poll (%s) with 2 s to spare", took, floor+poll)
	}
	no509(t, s)
}

func TestSetupChangeWhileDownIsDetectedAtStart(t *testing.T) {
	s := startWatchSim(t)
	e := startEdge(t, watchConfig(s))
	fx := s.Fixtures(t)
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })
	_, _, first := post(t, e.URL+getCatalog, `{}`)
	calls := func() int { return s.Counters(t).Calls["catalogService/getCatalogDetailed"] }

	// Restart without a change: the catalog stays valid.
	e.Stop(t)
	e = restartEdge(t, e)
	waitFor(t, "a setup poll after the restart", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })
	status, hdr, body := post(t, e.URL+getCatalog, `{}`)
	if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, "s360edge; hit;") || strings.Contains(cs, "detail=") || string(body) != string(first) {
		t.Fatalf("after a restart without a setup change: %d %q", status, cs)
	}
	if n, st := calls(), e.watchStats(t); n != 1 || st.Generations != 0 {
		t.Fatalf("after a restart without a setup change: %d getCatalogDetailed calls, stats %+v", n, st)
	}

	// Change the setup while the sidecar is down.
	e.Stop(t)
	s.Control(t, "/_sim/setup", `{}`)
	e = restartEdge(t, e)
	renamed := fx.Products[0].Name + " v2"
	waitFor(t, "the stale catalog to be refetched", 10*time.Second, func() bool { return calls() == 2 })
	// The simulator counts the call before the sidecar has stored its
	// answer: poll until the new generation's entry is served.
	waitFor(t, "the refreshed catalog to be served", 10*time.Second, func() bool {
		status, hdr, body = post(t, e.URL+getCatalog, `{}`)
		return status == 200 && !strings.Contains(hdr.Get("Cache-Status"), "detail=generation")
	})
	if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, "s360edge; hit;") || strings.Contains(cs, "detail=") || !strings.Contains(string(body), renamed) {
		t.Fatalf("after a restart with a setup change: %d %q, new name present: %v", status, cs, strings.Contains(string(body), renamed))
	}
	if n := calls(); n != 2 {
		t.Fatalf("after a restart with a setup change: %d getCatalogDetailed calls, want 2", n)
	}
	if st := e.watchStats(t); st.Generations != 1 || st.Generation == 0 || st.LastSetupPoll.IsZero() {
		t.Fatalf("stats %+v", st)
	}
	no509(t, s)
}
