package integration

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/s360edge/s360edge/internal/redistest"
)

// The cluster tests run several real s360edge processes, each
// with its own storage directory, sharing one real redis-server, in front
// of one simulator: the simulator's counters are what S-360 would see of
// the institution as a whole.

// clusterPrefix is the key prefix of the tests' clusters; every Redis key
// they leave must start with it.
const clusterPrefix = "s360test"

// withCluster adds the cluster subdirective on r to a Caddyfile of the
// integration tests, at the start of its s360 block.
func withCluster(caddyfile string, r *redistest.Server) string {
	block := "s360 {\n\t\tcluster " + r.URL() + " {\n\t\t\tprefix " + clusterPrefix + "\n\t\t}\n"
	if !strings.Contains(caddyfile, "s360 {\n") {
		panic("withCluster: no s360 block in the Caddyfile")
	}
	return strings.Replace(caddyfile, "s360 {\n", block, 1)
}

// startNodes runs n sidecars on caddyfile, each with its own storage.
func startNodes(t *testing.T, n int, caddyfile string, env ...string) []*edge {
	t.Helper()
	nodes := make([]*edge, n)
	for i := range nodes {
		nodes[i] = startEdge(t, caddyfile, env...)
	}
	return nodes
}

// clusterStatus is the cluster object of an edge in /s360/stats.
type clusterStatus struct {
	Mode    string `json:"mode"`
	Node    string `json:"node"`
	Nodes   int    `json:"nodes"`
	Leader  string `json:"leader"`
	RedisOK bool   `json:"redis_ok"`
}

func (e *edge) clusterStatus(t *testing.T) clusterStatus {
	t.Helper()
	var st struct {
		Edges []struct {
			Cluster *clusterStatus `json:"cluster"`
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if len(st.Edges) != 1 || st.Edges[0].Cluster == nil {
		t.Fatalf("%s: /s360/stats has no cluster object for its one edge", e.URL)
	}
	return *st.Edges[0].Cluster
}

// waitJoined waits until every node is in cluster mode with Redis up and
// counts want live nodes.
func waitJoined(t *testing.T, nodes []*edge, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d nodes to see a cluster of %d", len(nodes), want), 15*time.Second, func() bool {
		for _, e := range nodes {
			st := e.clusterStatus(t)
			if st.Mode != "cluster" || !st.RedisOK || st.Nodes != want {
				return false
			}
		}
		return true
	})
}

// waitLeader waits until every node names the same leader, one of nodes,
// and returns its index.
func waitLeader(t *testing.T, nodes []*edge) int {
	t.Helper()
	leader := -1
	waitFor(t, "the nodes to agree on a polling leader", 15*time.Second, func() bool {
		names := map[string]int{}
		var seen string
		for i, e := range nodes {
			st := e.clusterStatus(t)
			names[st.Node] = i
			if st.Leader == "" || (seen != "" && st.Leader != seen) {
				return false
			}
			seen = st.Leader
		}
		i, ok := names[seen]
		leader = i
		return ok
	})
	return leader
}

// lastingKeys are the only Redis keys without a TTL (decision 6 of the
// design): the generation and the setup answer it stands for, the event
// stream (trimmed) and the leader's token counter.
var lastingKeys = map[string]bool{clusterPrefix + ":gen": true, clusterPrefix + ":setup": true, clusterPrefix + ":ref": true, clusterPrefix + ":events": true, clusterPrefix + ":leader:token": true}

// checkKeys checks what the nodes left in Redis: every key under the
// prefix, and none without a TTL but lastingKeys.
func checkKeys(t *testing.T, r *redistest.Server) {
	t.Helper()
	c := redisClient(t, r)
	ctx := t.Context()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	if len(keys) == 0 {
		t.Fatal("the cluster left no key in Redis")
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, clusterPrefix+":") {
			t.Errorf("Redis key %q is outside the prefix %q", k, clusterPrefix)
		}
		if ttl, err := c.PTTL(ctx, k).Result(); err == nil && ttl == -1 && !lastingKeys[k] {
			t.Errorf("Redis key %q has no TTL; only %v may live without one", k, slices.Sorted(maps.Keys(lastingKeys)))
		}
	}
}

// answer is one request's outcome, for requests sent from goroutines
// (which must not call t.Fatal).
type answer struct {
	status int
	cache  string
	body   string
	err    error
}

func postAsync(target, body string) answer {
	resp, err := noRedirect.Post(target, "application/json", strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, cache: resp.Header.Get("Cache-Status"), body: string(b), err: err}
}

// availabilityBody is a distinct getEventAvailability key per n.
func availabilityBody(fx fixtures, n int) string {
	p := fx.Products[n%len(fx.Products)]
	return fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"eventIds":[%d]}`, fx.PosID, p.Performances[0].ID, 9_000_000+n)
}

const getEventAvailability = api + "availabilityService/v1_33/getEventAvailability"

// warmTokens makes one distinct availability call on each node, so that
// each holds its S-360 token before a storm begins: the storm's windows
// then hold its own calls only.
func warmTokens(t *testing.T, nodes []*edge, fx fixtures) {
	t.Helper()
	for i, e := range nodes {
		if status, hdr, b := post(t, e.URL+getEventAvailability, availabilityBody(fx, 100+i)); status != 200 {
			t.Fatalf("node %d warm-up: %d %q %s", i, status, hdr.Get("Cache-Status"), b)
		}
	}
}

// nextWindow sleeps until just after the start of the simulator's next
// fixed window.
func nextWindow(window time.Duration) {
	time.Sleep(time.Until(time.Now().Truncate(window).Add(window + 50*time.Millisecond)))
}

// checkWindows fails unless every window of the simulator held at most
// limit calls, none was refused, and the storm used the budget.
func checkWindows(t *testing.T, s *sim, limit int, st *storm) {
	t.Helper()
	var c perWindow
	getJSON(t, s.URL+"/_sim/counters", &c)
	if n := c.Statuses["509"]; n != 0 {
		t.Errorf("the simulator answered 509 %d times", n)
	}
	busiest := 0
	for _, w := range c.PerMinute {
		if w.Calls > limit {
			t.Errorf("window %s: %d upstream calls, rate_limit is %d for the cluster", w.Start, w.Calls, limit)
		}
		busiest = max(busiest, w.Calls)
	}
	if n := st.bad.Load(); n != 0 {
		t.Errorf("%d answers were neither data nor 429 with Retry-After, e.g. %v", n, st.badSample.Load())
	}
	if st.ok.Load() == 0 || st.throttled.Load() == 0 || busiest < limit/2 {
		t.Errorf("storm not exercised: ok=%d stale=%d throttled=%d, busiest window %d calls", st.ok.Load(), st.stale.Load(), st.throttled.Load(), busiest)
	}
	t.Logf("storm: %d fresh, %d stale, %d throttled; windows %+v", st.ok.Load(), st.stale.Load(), st.throttled.Load(), c.PerMinute)
}

// stormNodes runs a storm of distinct availability misses on every node
// at once, clients per node, until ctx ends.
func stormNodes(ctx context.Context, t *testing.T, nodes []*edge, fx fixtures, clients int) *storm {
	st := &storm{backoff: 100 * time.Millisecond}
	var wg sync.WaitGroup
	for _, e := range nodes {
		wg.Go(func() { st.run(ctx, t, e.URL+getEventAvailability, fx, clients) })
	}
	wg.Wait()
	return st
}

// TestClusterBudgetStorm: three nodes with rate_limit 20 (per 6 s, so the
// test fits in CI) take 66 concurrent clients of distinct misses, 22 per
// node. S-360, limited to 20 per window as well, sees at most 20 calls in
// each of its windows and refuses none.
func TestClusterBudgetStorm(t *testing.T) {
	const window = 6 * time.Second
	s := startSim(t, "-rate-limit", "20", "-rate-window", "6s", "-availability-floor", "0", "-token-ttl", "10m")
	r := redistest.Start(t, "")
	nodes := startNodes(t, 3, withCluster(caddyfile(s, "rate_limit 20 6s\n\t\tclient_quota off\n\t\tmax_wait 500ms"), r))
	waitJoined(t, nodes, 3)
	fx := s.Fixtures(t)
	warmTokens(t, nodes, fx)

	nextWindow(window)
	ctx, cancel := context.WithTimeout(t.Context(), 2*window+time.Second)
	defer cancel()
	st := stormNodes(ctx, t, nodes, fx, 22)
	checkWindows(t, s, 20, st)
}

// TestClusterOneFetchPerKey: the same catalog miss on three nodes at once,
// with S-360 answering in 1 s, makes one call; a fourth node started
// afterwards answers it from the shared tier with no S-360 call at all.
// Redis requires a password here, which no node may log.
func TestClusterOneFetchPerKey(t *testing.T) {
	s := startSim(t, "-catalog-latency", "1s")
	r := redistest.Start(t, "cluster-pass-7c1e9")
	cfg := withCluster(caddyfile(s, ""), r)
	nodes := startNodes(t, 3, cfg)
	waitJoined(t, nodes, 3)

	got := make([]answer, len(nodes))
	var wg sync.WaitGroup
	for i, e := range nodes {
		wg.Go(func() { got[i] = postAsync(e.URL+getCatalog, `{}`) })
	}
	wg.Wait()
	for i, a := range got {
		if a.err != nil || a.status != 200 || !strings.Contains(a.body, "products") || a.body != got[0].body {
			t.Errorf("node %d: %d %q err %v, body equal to node 0's: %v", i, a.status, a.cache, a.err, a.body == got[0].body)
		}
	}
	calls := func() counters { return s.Counters(t) }
	if n := calls().Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("the same miss on 3 nodes made %d getCatalogDetailed calls, want 1", n)
	}

	before := calls().Total
	fourth := startEdge(t, cfg)
	waitJoined(t, append(nodes, fourth), 4)
	for i := range 2 {
		status, hdr, b := post(t, fourth.URL+getCatalog, `{}`)
		if status != 200 || string(b) != got[0].body {
			t.Fatalf("fourth node, request %d: %d %q, same body: %v", i+1, status, hdr.Get("Cache-Status"), string(b) == got[0].body)
		}
		if i == 1 && !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit") {
			t.Errorf("fourth node, second request: %q, want a hit from its own tier", hdr.Get("Cache-Status"))
		}
	}
	if c := calls(); c.Total != before {
		t.Errorf("the fourth node made %d S-360 calls (%v), want none", c.Total-before, c.Calls)
	}

	// A local hit never touches Redis: 200 hits cost no more commands
	// than the nodes' background work (heartbeats) meanwhile.
	rc := redisClient(t, r)
	processed := func() int64 {
		info, err := rc.Info(t.Context(), "stats").Result()
		if err != nil {
			t.Fatalf("INFO stats: %v", err)
		}
		var n int64
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
				fmt.Sscan(v, &n)
			}
		}
		return n
	}
	q0 := processed()
	time.Sleep(time.Second) // the background work's rate, measured
	quiet := processed() - q0
	all := append(nodes, fourth)
	n0, t0 := processed(), time.Now()
	for i := range 200 {
		if status, hdr, _ := post(t, all[i%len(all)].URL+getCatalog, `{}`); status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit") {
			t.Fatalf("local hit %d: %d %q", i, status, hdr.Get("Cache-Status"))
		}
	}
	n, span := processed()-n0, time.Since(t0)
	if allowed := 10 + quiet*int64(span/time.Second+1); n > allowed {
		t.Errorf("200 local hits in %s: Redis processed %d commands, want at most %d (%d a second without requests)", span.Round(time.Millisecond), n, allowed, quiet)
	}
	checkKeys(t, r)
	for i, e := range append(nodes, fourth) {
		if strings.Contains(e.Output(), r.Password) {
			t.Errorf("node %d logged the Redis password", i)
		}
	}
}

// TestClusterOnePoller: with setup_poll 1s, the cluster polls
// getLastSetupUpdate about once a second in all; a setup change reaches
// every node with one getCatalogDetailed per key in total; when the
// polling node is killed, another one polls within two intervals.
func TestClusterOnePoller(t *testing.T) {
	const interval = time.Second
	s := startWatchSim(t)
	r := redistest.Start(t, "")
	nodes := startNodes(t, 3, withCluster(watchConfig(s), r))
	waitJoined(t, nodes, 3)
	leader := waitLeader(t, nodes)
	fx := s.Fixtures(t)
	setupPolls := func() int { return s.Counters(t).Calls["catalogService/getLastSetupUpdate"] }
	catalogCalls := func() int { return s.Counters(t).Calls["catalogService/getCatalogDetailed"] }
	waitFor(t, "the first setup poll", 10*time.Second, func() bool { return setupPolls() > 0 })

	if !t.Run("one poll a second in all", func(t *testing.T) {
		n0, t0 := setupPolls(), time.Now()
		time.Sleep(6 * interval) // a rate is measured over a span
		n, span := setupPolls()-n0, time.Since(t0)
		if perSec := float64(n) / span.Seconds(); perSec < 0.5 || perSec > 1.6 {
			t.Errorf("%d getLastSetupUpdate calls in %s (%.2f/s) from 3 nodes, want about 1/s", n, span.Round(time.Millisecond), perSec)
		}
	}) {
		t.FailNow()
	}

	bodies := []string{`{}`, `{"scope":"EXTENDED"}`}
	renamed := fx.Products[0].Name + " v2"
	t.Run("a setup change reaches every node with one call per key", func(t *testing.T) {
		for i, e := range nodes {
			for _, b := range bodies {
				if status, hdr, _ := post(t, e.URL+getCatalog, b); status != 200 {
					t.Fatalf("node %d, catalog %s: %d %q", i, b, status, hdr.Get("Cache-Status"))
				}
			}
		}
		if n := catalogCalls(); n != 2 {
			t.Fatalf("2 catalog keys on 3 nodes made %d getCatalogDetailed calls, want 2", n)
		}
		s.Control(t, "/_sim/setup", `{}`)
		waitFor(t, "the catalog refresh", 10*time.Second, func() bool { return catalogCalls() >= 4 })
		for i, e := range nodes {
			for _, b := range bodies {
				waitFor(t, fmt.Sprintf("node %d to serve the new catalog %s", i, b), 10*time.Second, func() bool {
					status, _, body := post(t, e.URL+getCatalog, b)
					return status == 200 && strings.Contains(string(body), renamed)
				})
			}
		}
		time.Sleep(3 * interval) // polls that would refetch again have run
		if n := catalogCalls(); n != 4 {
			t.Errorf("after a setup change: %d getCatalogDetailed calls, want 4 (2 keys, once each, for the 3 nodes)", n)
		}
		gen := nodes[0].watchStats(t).Generation
		for i, e := range nodes {
			if g := e.watchStats(t).Generation; g == 0 || g != gen {
				t.Errorf("node %d: generation %d, node 0's %d, want the same, above 0", i, g, gen)
			}
		}
	})

	t.Run("the polling node is killed", func(t *testing.T) {
		dead := nodes[leader]
		n0 := setupPolls()
		dead.cmd.Process.Kill()
		killed := time.Now()
		<-dead.done
		// Two intervals, and half a second for the processes of a loaded
		// machine running the race detector.
		waitFor(t, "a setup poll after the leader's death", 2*interval+500*time.Millisecond, func() bool { return setupPolls() > n0 })
		t.Logf("polling resumed %s after the kill", time.Since(killed).Round(time.Millisecond))

		alive := append(append([]*edge{}, nodes[:leader]...), nodes[leader+1:]...)
		waitJoined(t, alive, 2)
		waitLeader(t, alive)
		n1, t1 := setupPolls(), time.Now()
		time.Sleep(4 * interval)
		n, span := setupPolls()-n1, time.Since(t1)
		if perSec := float64(n) / span.Seconds(); perSec < 0.5 || perSec > 1.6 {
			t.Errorf("after the failover: %d getLastSetupUpdate calls in %s (%.2f/s), want about 1/s", n, span.Round(time.Millisecond), perSec)
		}

		// The new leader publishes: a second change reaches the survivors.
		before := catalogCalls()
		s.Control(t, "/_sim/setup", `{}`)
		again := fx.Products[0].Name + " v3"
		for i, e := range alive {
			waitFor(t, fmt.Sprintf("survivor %d to serve the catalog after a second change", i), 15*time.Second, func() bool {
				status, _, body := post(t, e.URL+getCatalog, `{}`)
				return status == 200 && strings.Contains(string(body), again)
			})
		}
		time.Sleep(2 * interval)
		if n := catalogCalls() - before; n > len(bodies) {
			t.Errorf("the second change made %d getCatalogDetailed calls, want at most %d", n, len(bodies))
		}
	})
	no509(t, s)
	checkKeys(t, r)
}

// TestClusterRedisDown: Redis is frozen (SIGSTOP), then killed with
// SIGKILL. Every node answers its cached keys with 200 at once, and under
// a storm the nodes together stay within rate_limit (each takes
// rate_limit / nodes). Redis is started again on the same port, empty,
// while the storm goes on: every node rejoins, without a burst above
// rate_limit, and the shared tier works again.
func TestClusterRedisDown(t *testing.T) {
	const window = 6 * time.Second
	s := startSim(t, "-rate-limit", "20", "-rate-window", "6s", "-availability-floor", "0", "-token-ttl", "10m")
	r := redistest.Start(t, "")
	nodes := startNodes(t, 3, withCluster(caddyfile(s, "rate_limit 20 6s\n\t\tclient_quota off\n\t\tmax_wait 500ms"), r))
	waitJoined(t, nodes, 3)
	fx := s.Fixtures(t)
	warmTokens(t, nodes, fx)
	cached := availabilityBody(fx, 1)
	for i, e := range nodes {
		if status, hdr, b := post(t, e.URL+getEventAvailability, cached); status != 200 {
			t.Fatalf("node %d, the cached key: %d %q %s", i, status, hdr.Get("Cache-Status"), b)
		}
	}

	// A frozen Redis (SIGSTOP: connections open, no answers) is the slow
	// case: every Redis call must give up within its 50 ms bound.
	t.Run("Redis frozen", func(t *testing.T) {
		r.Pause()
		defer r.Resume()
		for i, e := range nodes {
			start := time.Now()
			status, hdr, _ := post(t, e.URL+getEventAvailability, cached)
			if d := time.Since(start); status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit") || d > time.Second {
				t.Errorf("node %d with Redis frozen, the cached key: %d %q in %s", i, status, hdr.Get("Cache-Status"), d.Round(time.Millisecond))
			}
		}
		// A miss is decided by the node's share of the budget (20 / 3,
		// less the reserves): S-360's answer, or a 429 within max_wait.
		start := time.Now()
		status, hdr, b := post(t, nodes[0].URL+getEventAvailability, availabilityBody(fx, 3))
		if d := time.Since(start); (status != 200 && (status != 429 || hdr.Get("Retry-After") == "")) || d > 2*time.Second {
			t.Errorf("a miss with Redis frozen: %d %q in %s (max_wait 500ms), %s", status, hdr.Get("Cache-Status"), d.Round(time.Millisecond), b)
		}
		waitFor(t, "every node to see Redis frozen", 10*time.Second, func() bool {
			for _, e := range nodes {
				if e.clusterStatus(t).RedisOK {
					return false
				}
			}
			return true
		})
	})
	waitJoined(t, nodes, 3)

	r.Kill()
	waitFor(t, "every node to see Redis down", 10*time.Second, func() bool {
		for _, e := range nodes {
			if st := e.clusterStatus(t); st.RedisOK || st.Mode != "local" {
				return false
			}
		}
		return true
	})
	for i, e := range nodes {
		start := time.Now()
		status, hdr, _ := post(t, e.URL+getEventAvailability, cached)
		if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit") {
			t.Errorf("node %d with Redis down, the cached key: %d %q", i, status, hdr.Get("Cache-Status"))
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("node %d with Redis down took %s for a local hit", i, d)
		}
	}

	nextWindow(window)
	ctx, cancel := context.WithTimeout(t.Context(), 2*window+time.Second)
	defer cancel()
	stormDone := make(chan *storm, 1)
	go func() { stormDone <- stormNodes(ctx, t, nodes, fx, 8) }()
	time.Sleep(window) // a whole window with Redis down
	r.Restart()
	waitJoined(t, nodes, 3)
	checkWindows(t, s, 20, <-stormDone)

	// The shared tier serves again: a new key fetched by one node is
	// answered by the others without a call.
	// The storm may have spent the window: node 0 waits for a slot.
	fresh := availabilityBody(fx, 2)
	waitFor(t, "node 0 to fetch a new key after the storm", 2*window, func() bool {
		status, _, _ := post(t, nodes[0].URL+getEventAvailability, fresh)
		return status == 200
	})
	n := s.Counters(t).Calls["availabilityService/getEventAvailability"]
	for i, e := range nodes[1:] {
		if status, hdr, _ := post(t, e.URL+getEventAvailability, fresh); status != 200 {
			t.Errorf("node %d after the rejoin: %d %q", i+1, status, hdr.Get("Cache-Status"))
		}
	}
	if m := s.Counters(t).Calls["availabilityService/getEventAvailability"]; m != n {
		t.Errorf("after the rejoin, a key fetched by node 0 cost %d more calls on the other nodes", m-n)
	}
}

// TestClusterLogoutRevokesEverywhere: a buyer logs in on node A; the
// session cookie works on node B too; after logout on A, a copy of the
// cookie is refused on B. With Redis down a node cannot know whether a
// session was revoked, and refuses it (503).
func TestClusterLogoutRevokesEverywhere(t *testing.T) {
	p := startProvider(t)
	s := startSim(t)
	r := redistest.Start(t, "")
	env := oidcEnv(t, p)
	nodes := startNodes(t, 2, withCluster(oidcCaddyfile(s, p, "{env.XDG_DATA_HOME}", ""), r), env...)
	a, b := nodes[0], nodes[1]
	waitJoined(t, nodes, 2)

	login := func(sub string) string {
		c := newClient(sub)
		p.QueueUser(&mockoidc.MockUser{Subject: sub, Email: sub + "@example.com"})
		c.login(t, a, p, "/", "/")
		return c.sessionCookie(t, a)
	}
	// userinfo with a copy of cookie on node e.
	userinfo := func(e *edge, cookie string) reply {
		c := newClient("copy")
		u, _ := url.Parse(e.URL)
		c.jar.SetCookies(u, []*http.Cookie{{Name: "s360_session", Value: strings.TrimPrefix(cookie, "s360_session="), Path: "/"}})
		r, _ := c.userinfo(t, e)
		return r
	}

	cookie := login("buyer-12")
	if r := userinfo(b, cookie); r.status != 200 {
		t.Fatalf("the session on node B before logout: %s, want 200", r)
	}
	buyer := newClient("buyer-12")
	u, _ := url.Parse(a.URL)
	buyer.jar.SetCookies(u, []*http.Cookie{{Name: "s360_session", Value: strings.TrimPrefix(cookie, "s360_session="), Path: "/"}})
	if r := buyer.do(t, "POST", a.URL+"/auth/logout", "", "Sec-Fetch-Site", "same-origin", "Origin", a.URL); r.status != http.StatusFound {
		t.Fatalf("logout on node A: %s, want 302", r)
	}
	for name, e := range map[string]*edge{"A": a, "B": b} {
		if r := userinfo(e, cookie); r.status != http.StatusUnauthorized {
			t.Errorf("the logged-out cookie on node %s: %s, want 401", name, r)
		}
	}

	other := login("buyer-13")
	r.Kill()
	waitFor(t, "node B to see Redis down", 10*time.Second, func() bool { return !b.clusterStatus(t).RedisOK })
	if r := userinfo(b, other); r.status != http.StatusServiceUnavailable {
		t.Errorf("a session on node B with Redis down: %s, want 503 (revocations unknown: fail closed)", r)
	}
}
