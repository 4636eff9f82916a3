package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/s360edge/s360edge/internal/redistest"
)

// The live availability stream (GET /s360/live) through the real binary:
// the simulator's stock changes, the sidecar's feed poll reports them, and
// the subscribers of the changed product, and only they, hear it.

// liveSub is an open subscription; its data lines arrive on events.
type liveSub struct {
	url    string
	events chan string
	ended  chan struct{}
}

// subscribeLive opens GET /s360/live?products=<products> on base and reads
// its events on a goroutine until the stream ends or the test does.
func subscribeLive(t *testing.T, base, products string) *liveSub {
	t.Helper()
	url := base + "/s360/live?products=" + products
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %q %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &liveSub{url: url, events: make(chan string, 100), ended: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				s.events <- d
			}
		}
	}()
	return s
}

// next is the next event's data, within d.
func (s *liveSub) next(t *testing.T, d time.Duration, what string) string {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-s.ended:
		t.Fatalf("%s: the stream ended waiting for %s", s.url, what)
	case <-time.After(d):
		t.Fatalf("%s: no event within %s waiting for %s", s.url, d, what)
	}
	return ""
}

// none checks that no event came (within grace, for one in transit).
func (s *liveSub) none(t *testing.T, grace time.Duration, why string) {
	t.Helper()
	select {
	case ev := <-s.events:
		t.Fatalf("%s: got %s, want no event: %s", s.url, ev, why)
	case <-time.After(grace):
	}
}

// noneAbout checks that no event about product comes within d; events
// about other products may (a change is reported again by the next poll,
// which overlaps the last by a second).
func (s *liveSub) noneAbout(t *testing.T, product int64, d time.Duration) {
	t.Helper()
	about := fmt.Sprintf(`{"productId":%d`, product)
	for end := time.After(d); ; {
		select {
		case ev := <-s.events:
			if strings.HasPrefix(ev, about) {
				t.Fatalf("%s: got %.200s, an event of a product it does not follow", s.url, ev)
			}
		case <-end:
			return
		}
	}
}

// liveSetup starts the simulator and returns it, a product A with a
// RUNNING performance and another one B, and a getEventAvailability body
// of each one's first performance.
func liveSetup(t *testing.T) (s *sim, simUp time.Time, a, b int64, bodyA, bodyB string, stock func(product int64, quantity int)) {
	t.Helper()
	s = startWatchSim(t)
	simUp = time.Now() // the simulator stamps every product with its start time
	fx := s.Fixtures(t)
	perf := map[int64]int{}
	for i, p := range fx.Products {
		if len(p.Performances) > 0 && p.Performances[0].State == "RUNNING" {
			if a == 0 {
				a = p.ID
			} else if b == 0 {
				b = p.ID
			}
			perf[p.ID] = i
		}
	}
	if b == 0 {
		t.Fatal("fewer than two RUNNING products in the fixtures")
	}
	body := func(id int64) string {
		return fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, fx.Products[perf[id]].Performances[0].ID)
	}
	stock = func(id int64, quantity int) {
		p := fx.Products[perf[id]].Performances[0]
		s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":%d}`, p.ID, p.SeatCategoryIDs[0], quantity))
	}
	return s, simUp, a, b, body(a), body(b), stock
}

// waitQuietFeed waits until the updates poll of e has a reference date
// past the simulator's start: before, every product is reported changed
// once (the polls overlap by a second).
func waitQuietFeed(t *testing.T, e *edge, simUp time.Time) {
	t.Helper()
	waitFor(t, "an updates poll past the simulator's start", 20*time.Second, func() bool {
		return e.watchStats(t).LastUpdatesPoll.After(simUp.Add(1500 * time.Millisecond))
	})
}

// metric is the value of the unlabelled metric name on e's admin /metrics.
func (e *edge) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	return string(m[1])
}

func TestLiveAvailabilityEvents(t *testing.T) {
	s, simUp, a, b, bodyA, _, stock := liveSetup(t)
	e := startEdge(t, siteCaddyfile(s.URL, append([]string{"setup_poll 1s", "updates_poll 1s", "live_max 2"}, noFloors...), staticSite))
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return !e.watchStats(t).LastSetupPoll.IsZero() })
	post(t, e.URL+getCatalog, `{}`)
	url := e.URL + getEventAvailability
	if _, hdr, _ := post(t, url, bodyA); hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("A's availability: %q", hdr.Get("Cache-Status"))
	}
	waitQuietFeed(t, e, simUp)

	subA := subscribeLive(t, e.URL, fmt.Sprint(a))
	subB := subscribeLive(t, e.URL, fmt.Sprint(b))
	t.Run("live_max 2: a third subscriber gets 503", func(t *testing.T) {
		resp, err := http.Get(e.URL + "/s360/live?products=" + fmt.Sprint(a))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "30" || !strings.Contains(string(body), `"error":"live_full"`) {
			t.Fatalf("third subscription: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		if n := e.metric(t, "caddy_s360_live_subscribers"); n != "2" {
			t.Fatalf("caddy_s360_live_subscribers %s, want 2", n)
		}
	})
	t.Run("a malformed subscription gets 400", func(t *testing.T) {
		status, body := get(t, e.URL+"/s360/live?products=12,abc")
		if status != 400 || !strings.Contains(body, `"error":"invalid_products"`) {
			t.Fatalf("%d %s", status, body)
		}
	})

	stock(a, 3)
	changed := time.Now()
	if ev, want := subA.next(t, 15*time.Second, "A's change"), fmt.Sprintf(`{"productId":%d}`, a); ev != want {
		t.Fatalf("A's subscriber got %s, want %s", ev, want)
	}
	t.Logf("A's change heard %s after the stock changed (updates_poll 1s)", time.Since(changed).Round(time.Millisecond))
	// The page fetches A's availability again: the sidecar asks S-360,
	// and the fresh answer goes to A's subscribers too.
	_, hdr, got := post(t, url, bodyA)
	if !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; fwd=stale; stored") || !strings.Contains(string(got), `"availableQuantity":3,`) {
		t.Fatalf("A's availability after the event: %q %.200s", hdr.Get("Cache-Status"), got)
	}
	ev := subA.next(t, 5*time.Second, "A's fresh answer")
	if !strings.HasPrefix(ev, fmt.Sprintf(`{"productId":%d,"availability":{"method":"availabilityService/getEventAvailability","request":{`, a)) ||
		!strings.Contains(ev, `"availableQuantity":3,`) {
		t.Fatalf("A's second event: %.300s, want the fresh answer", ev)
	}
	subB.none(t, 300*time.Millisecond, "B did not change")

	stock(b, 2)
	if ev, want := subB.next(t, 15*time.Second, "B's change"), fmt.Sprintf(`{"productId":%d}`, b); ev != want {
		t.Fatalf("B's subscriber got %s, want %s", ev, want)
	}
	subA.noneAbout(t, b, 2*time.Second) // two polls: B's change and its report again

	// Stopping the sidecar ends the streams at once: Caddy's graceful
	// shutdown does not wait for them.
	stopping := time.Now()
	e.Stop(t)
	for _, sub := range []*liveSub{subA, subB} {
		select {
		case <-sub.ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream outlived the sidecar")
		}
	}
	if took := time.Since(stopping); took > 5*time.Second {
		t.Errorf("the sidecar took %s to stop with 2 streams open", took)
	}
	no509(t, s)
}

// In a cluster, a subscriber on a node that does not poll hears the
// change the polling node found (through the Redis stream), and its own
// refetch's fresh answer.
func TestLiveClusterEventsReachEveryNode(t *testing.T) {
	s, simUp, a, b, bodyA, _, stock := liveSetup(t)
	r := redistest.Start(t, "")
	nodes := startNodes(t, 2, withCluster(watchConfig(s), r))
	waitJoined(t, nodes, 2)
	leader := waitLeader(t, nodes)
	poller, other := nodes[leader], nodes[1-leader]
	post(t, poller.URL+getCatalog, `{}`) // the poller asks about the cached catalog's products
	url := getEventAvailability
	for _, n := range nodes {
		if status, hdr, _ := post(t, n.URL+url, bodyA); status != 200 {
			t.Fatalf("A's availability: %d %q", status, hdr.Get("Cache-Status"))
		}
	}
	waitQuietFeed(t, poller, simUp)

	subA := subscribeLive(t, other.URL, fmt.Sprint(a))
	subB := subscribeLive(t, other.URL, fmt.Sprint(b))
	polls := other.watchStats(t).UpdatesPolls
	stock(a, 4)
	if ev, want := subA.next(t, 15*time.Second, "A's change, polled by the other node"), fmt.Sprintf(`{"productId":%d}`, a); ev != want {
		t.Fatalf("A's subscriber on the node that does not poll got %s, want %s", ev, want)
	}
	if n := other.watchStats(t).UpdatesPolls; n != polls {
		t.Fatalf("the subscriber's node polled %d times meanwhile: the change must come from the poller", n-polls)
	}
	_, hdr, got := post(t, other.URL+url, bodyA)
	if !strings.Contains(string(got), `"availableQuantity":4,`) {
		t.Fatalf("A's availability on the subscriber's node after the event: %q %.200s", hdr.Get("Cache-Status"), got)
	}
	if ev := subA.next(t, 5*time.Second, "A's fresh answer"); !strings.Contains(ev, `"availableQuantity":4,`) {
		t.Fatalf("A's second event: %.300s, want the fresh answer", ev)
	}
	subB.none(t, 500*time.Millisecond, "B did not change")
	no509(t, s)
}

// get is a GET of url: status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
