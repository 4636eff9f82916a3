package integration

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s360edge/s360edge/internal/redistest"
)

// clusterAt adds the cluster subdirective on the Redis URL redisURL, with
// the block's lines (prefix first), at the start of the s360 block.
func clusterAt(caddyfile, redisURL string, lines ...string) string {
	lines = append([]string{"prefix " + clusterPrefix}, lines...)
	block := "s360 {\n\t\tcluster " + redisURL + " {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n"
	if !strings.Contains(caddyfile, "s360 {\n") {
		panic("clusterAt: no s360 block in the Caddyfile")
	}
	return strings.Replace(caddyfile, "s360 {\n", block, 1)
}

// refusedRedisURL is a redis:// URL on a loopback port that refuses
// connections (a listener's, closed).
func refusedRedisURL(t *testing.T) string {
	return "redis://" + freeAddr(t) + "/0"
}

// burst sends n distinct availability misses to each node at once and
// counts the answers by status.
func burst(t *testing.T, nodes []*edge, fx fixtures, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i, e := range nodes {
		for j := range n {
			wg.Go(func() {
				a := postAsync(e.URL+getEventAvailability, availabilityBody(fx, i*n+j))
				mu.Lock()
				defer mu.Unlock()
				if a.err != nil {
					statuses[0]++
					return
				}
				statuses[a.status]++
			})
		}
	}
	wg.Wait()
	return statuses
}

// TestClusterRedisRefusedAtStart: three nodes start while their Redis
// address refuses connections, with rate_limit 30 per 6 s, and take 90
// distinct misses at once (30 each). With nodes 3 each takes a third of
// rate_limit; without nodes, knowing nothing of the cluster's size, a
// tenth, and says so once. S-360 (the simulator, limited to 30 per
// window too) sees at most its limit in a window and refuses nothing.
func TestClusterRedisRefusedAtStart(t *testing.T) {
	const limit, perNode = 30, 30
	for _, tc := range []struct {
		name    string
		lines   []string
		share   int // each node's calls per window
		unknown bool
	}{
		{"nodes 3", []string{"nodes 3"}, limit / 3, false},
		{"nodes unknown", nil, limit / 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSim(t, "-rate-limit", "30", "-rate-window", "6s", "-availability-floor", "0", "-token-ttl", "10m")
			cfg := clusterAt(caddyfile(s, "rate_limit 30 6s\n\t\tclient_quota off\n\t\tmax_wait 500ms"), refusedRedisURL(t), tc.lines...)
			nodes := startNodes(t, 3, cfg)
			for i, e := range nodes {
				if st := e.clusterStatus(t); st.Mode != "local" || st.RedisOK {
					t.Fatalf("node %d with Redis refused: %+v, want local mode", i, st)
				}
			}
			fx := s.Fixtures(t)
			statuses := burst(t, nodes, fx, perNode)
			var c perWindow
			getJSON(t, s.URL+"/_sim/counters", &c)
			total, busiest := 0, 0
			for _, w := range c.PerMinute {
				total += w.Calls
				busiest = max(busiest, w.Calls)
				if w.Calls > 3*tc.share {
					t.Errorf("window %s: %d S-360 calls, want at most 3 nodes × %d", w.Start, w.Calls, tc.share)
				}
			}
			if n := c.Statuses["509"]; n != 0 {
				t.Errorf("S-360 answered 509 %d times", n)
			}
			// A tenth of 30 is 3 calls a window, the token's and what the
			// reserves leave: maybe no data at all.
			if (!tc.unknown && statuses[200] == 0) || statuses[200]+statuses[429] != len(nodes)*perNode {
				t.Errorf("answers %v: want 200s within the share, the rest 429", statuses)
			}
			for i, e := range nodes {
				if got := e.budgetLimit(t); got != tc.share {
					t.Errorf("node %d: budget limit %d in /s360/stats, want its share %d", i, got, tc.share)
				}
				warns := lines(e.proc, "number of sidecars is unknown")
				if want := map[bool]int{true: 1, false: 0}[tc.unknown]; len(warns) != want {
					t.Errorf("node %d logged %d WARN lines about an unknown number of nodes, want %d", i, len(warns), want)
				}
			}
			t.Logf("%s: %d S-360 calls (busiest window %d, limit %d), 509s %d, answers %v", tc.name, total, busiest, limit, c.Statuses["509"], statuses)
		})
	}
}

// budgetLimit is the limit of e's budget in /s360/stats: the node's share
// while it decides alone.
func (e *edge) budgetLimit(t *testing.T) int {
	t.Helper()
	var st struct {
		Edges []struct {
			Budget struct {
				Limit int `json:"limit"`
			} `json:"budget"`
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if len(st.Edges) != 1 {
		t.Fatalf("%s: %d edges in /s360/stats, want 1", e.URL, len(st.Edges))
	}
	return st.Edges[0].Budget.Limit
}

// TestClusterRedisClusterRefused: a cluster URL that leads to a Redis
// Cluster (one redis-server with cluster-enabled yes) is not used: the
// node starts, serves alone with its share, says why at ERROR once and in
// /s360/stats.
func TestClusterRedisClusterRefused(t *testing.T) {
	r := redistest.StartCluster(t)
	s := startSim(t, "-availability-floor", "0")
	e := startEdge(t, clusterAt(caddyfile(s, "rate_limit 30 6s"), r.URL(), "nodes 3"))
	fx := s.Fixtures(t)
	if status, hdr, b := post(t, e.URL+getEventAvailability, availabilityBody(fx, 1)); status != 200 {
		t.Fatalf("a miss: %d %q %s", status, hdr.Get("Cache-Status"), b)
	}
	var st struct {
		Edges []struct {
			Cluster *struct {
				clusterStatus
				Error string `json:"error"`
			} `json:"cluster"`
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if len(st.Edges) != 1 || st.Edges[0].Cluster == nil {
		t.Fatal("/s360/stats has no cluster object")
	}
	c := st.Edges[0].Cluster
	if c.Mode != "local" || c.RedisOK || !strings.Contains(c.Error, "Redis Cluster") {
		t.Fatalf("cluster status %+v, want local mode and the reason", *c)
	}
	if got := e.budgetLimit(t); got != 10 {
		t.Errorf("budget limit %d, want the node's share, 30 / 3", got)
	}
	if n := len(lines(e.proc, `"level":"error"`)); n != 1 || len(lines(e.proc, "Redis Cluster")) == 0 {
		t.Errorf("%d ERROR lines, want one naming Redis Cluster:\n%s", n, tail(e.Output(), 4000))
	}
}

// TestClusterSAMLReplayOnAnotherNode: a buyer logs in with SAML on node A
// of two; the same signed answer, posted to node B with a copy of the
// browser's state cookie, is refused there. With Redis down, node B
// refuses a new login's answer with 503 (it cannot rule out a replay).
func TestClusterSAMLReplayOnAnotherNode(t *testing.T) {
	r := redistest.Start(t, "")
	simAddr := freeAddr(t)
	simURL := "http://" + simAddr
	cert, key := spKeyPair(t)
	key32 := make([]byte, 32)
	rand.Read(key32)
	// Behind a load balancer the nodes share one site: entity_id names it,
	// and so the ACS every answer is addressed to.
	login := subBlock("saml", "idp_metadata "+simURL+"/saml/metadata", "entity_id http://shop-site.test/auth/saml/metadata",
		"cert "+cert, "key "+key, "cookie_secret {env.S360_COOKIE_KEY}")
	cfg := clusterAt(pollsOffCaddyfile(simURL, login, staticSite...), r.URL())
	nodes := startNodes(t, 2, cfg, "S360_COOKIE_KEY="+base64.StdEncoding.EncodeToString(key32))
	a, b := nodes[0], nodes[1]
	waitJoined(t, nodes, 2)
	sp := start(t, "s360sim", nil, "-addr", simAddr, "-operator", simOperator, "-secret", simSecret,
		"-saml-sp-metadata", a.URL+"/auth/saml/metadata")
	waitFor(t, "s360sim to listen", 20*time.Second, func() bool {
		resp, err := http.Get(simURL + "/saml/metadata")
		if err == nil {
			resp.Body.Close()
		}
		sp.failIfExited(t)
		return err == nil && resp.StatusCode == 200
	})

	buyer := newClient("buyer")
	state, answer := samlAnswer(t, buyer, a, simURL)
	if r := buyer.postForm(t, a.URL+"/auth/saml/acs", answer); r.status != http.StatusSeeOther || r.cookie("s360_session") == nil {
		t.Fatalf("the answer on node A: %s", r)
	}
	thief := newClient("thief")
	bu, _ := url.Parse(b.URL + "/auth/saml/acs")
	thief.jar.SetCookies(bu, state)
	r2 := thief.postForm(t, b.URL+"/auth/saml/acs", answer)
	if r2.status != http.StatusUnauthorized || r2.cookie("s360_session") != nil {
		t.Fatalf("the same answer on node B: %s, want 401 and no session", r2)
	}
	if e := r2.apiError(t); e.Error != "invalid_response" {
		t.Errorf("error %q, want invalid_response", e.Error)
	}
	// The line is written before the answer, but read from the process's
	// output by another goroutine: it may come a moment later.
	waitFor(t, "node B to log the refusal as a replay", 5*time.Second, func() bool {
		return len(lines(b.proc, `"reason":"replayed"`)) == 1
	})

	r.Kill()
	waitFor(t, "node B to see Redis down", 10*time.Second, func() bool { return !b.clusterStatus(t).RedisOK })
	other := newClient("another buyer")
	_, answer = samlAnswer(t, other, b, simURL)
	if r := other.postForm(t, b.URL+"/auth/saml/acs", answer); r.status != http.StatusServiceUnavailable || r.cookie("s360_session") != nil {
		t.Fatalf("an answer on node B with Redis down: %s, want 503 and no session", r)
	}
}

// samlAnswer starts a SAML login on e as c and logs the simulator's buyer
// in at the shop: it returns the login's state cookies and the shop's
// signed answer, not yet posted.
func samlAnswer(t *testing.T, c *client, e *edge, simURL string) ([]*http.Cookie, url.Values) {
	t.Helper()
	r := c.get(t, e.URL+"/auth/login?provider=saml")
	loc, _ := url.Parse(r.hdr.Get("Location"))
	if r.status != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), simURL+"/saml/sso?") {
		t.Fatalf("login on %s: %s", e.URL, r)
	}
	acsURL, _ := url.Parse(e.URL + "/auth/saml/acs")
	state := c.jar.Cookies(acsURL)
	if len(state) == 0 {
		t.Fatalf("login on %s set no state cookie for the ACS", e.URL)
	}
	action, fields := form(t, c.get(t, loc.String()))
	fields.Set("user", "buyer")
	fields.Set("password", "buyer-password")
	if r := c.postForm(t, action, fields); r.status != http.StatusSeeOther {
		t.Fatalf("shop login: %s", r)
	}
	_, answer := form(t, c.get(t, loc.String()))
	if answer.Get("SAMLResponse") == "" {
		t.Fatalf("the shop's answer has no SAMLResponse: %v", answer)
	}
	return state, answer
}
