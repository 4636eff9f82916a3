package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/internal/redistest"
)

// waitUntil polls cond until it holds, and fails the test at the deadline.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node with Redis: the cluster's budget is the gate, logouts are kept in
// Redis where another node sees them, and when Redis dies the stats, the
// metrics and the status page say so while sessions fail closed.
func TestClusterWithRedis(t *testing.T) {
	redis := redistest.Start(t, "")
	redisURL, killRedis := redis.URL(), redis.Kill
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	h := handlerJSON(dir, 40, 0, "5s")
	h["cluster"] = map[string]any{"url": redisURL, "prefix": "wire-test"}
	if err := loadConfig(t, listen, h); err != nil {
		t.Fatal(err)
	}
	p := runningPooled(t)
	if _, ok := p.Gate().(*cluster.Budget); !ok {
		t.Fatalf("the gate of a cluster node is a %T, want *cluster.Budget", p.Gate())
	}
	status := func() cluster.Status { return *allStats()[0].Cluster }
	waitUntil(t, "cluster mode with Redis up", 5*time.Second, func() bool { return status().RedisOK })
	if st := status(); st.Mode != "cluster" || st.Nodes != 1 || st.Node == "" {
		t.Fatalf("stats' cluster: %+v, want mode cluster, 1 node", st)
	}
	// Alone in its cluster, the node takes the polling lease.
	waitUntil(t, "the node to hold the polling lease", 5*time.Second, func() bool { return status().Leader == status().Node })
	if err := testutil.CollectAndCompare(collector{}, strings.NewReader(`# HELP caddy_s360_cluster_leader 1 on the node that runs the cluster's polls (holds the polling lease), else 0.
# TYPE caddy_s360_cluster_leader gauge
caddy_s360_cluster_leader 1
# HELP caddy_s360_cluster_nodes Live nodes of the cluster last seen (at least 1); the budget falls back to rate_limit divided by it while Redis is down.
# TYPE caddy_s360_cluster_nodes gauge
caddy_s360_cluster_nodes 1
# HELP caddy_s360_cluster_redis_up 1 while Redis answers, 0 while the node serves alone from its local tier.
# TYPE caddy_s360_cluster_redis_up gauge
caddy_s360_cluster_redis_up 1
`), "caddy_s360_cluster_redis_up", "caddy_s360_cluster_leader", "caddy_s360_cluster_nodes"); err != nil {
		t.Fatal(err)
	}
	if got := budgetStats(p.Edge).Limit; got != 40 {
		t.Fatalf("the cluster budget's limit: %d, want rate_limit 40", got)
	}

	t.Run("a reload's rate_limit reaches the cluster budget", func(t *testing.T) {
		h["rate_limit"] = map[string]any{"calls": 90, "window": "1m"}
		if err := loadConfig(t, listen, h); err != nil {
			t.Fatal(err)
		}
		if q := runningPooled(t); q.Edge != p.Edge || q.cluster != p.cluster {
			t.Fatal("the reload reopened the edge or its cluster")
		}
		if b := budgetStats(p.Edge); b.Limit != 90 || b.EffectiveLimit != 90 {
			t.Fatalf("limit after the reload: %d (effective %d), want 90 (90)", b.Limit, b.EffectiveLimit)
		}
	})

	t.Run("a logout is seen by every node, not kept in the local store", func(t *testing.T) {
		revs := storeRevocations{h: &Handler{edge: p.Edge, cluster: p.cluster}}
		if err := revs.Revoke("sess-1", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		other, err := cluster.Open(cluster.Config{URL: redisURL, Prefix: "wire-test", Node: "other"})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		for id, want := range map[string]bool{"sess-1": true, "sess-2": false} {
			if got, err := other.Revoked(id); err != nil || got != want {
				t.Errorf("another node: Revoked(%s) = %v, %v; want %v", id, got, err, want)
			}
		}
		if _, err := p.Store().GetMeta(revokedPrefix + "sess-1"); !errors.Is(err, cachestore.ErrNotFound) {
			t.Errorf("the logout is in the local store too (%v): another node would not see it", err)
		}
	})

	t.Run("Redis down: stats, metrics and the page say so, sessions fail closed", func(t *testing.T) {
		killRedis()
		revs := storeRevocations{h: &Handler{edge: p.Edge, cluster: p.cluster}}
		if _, err := revs.Revoked("sess-1"); err == nil {
			t.Fatal("Revoked answered with Redis down: a logout on another node could be missed")
		}
		waitUntil(t, "local mode after Redis died", 5*time.Second, func() bool { return !status().RedisOK })
		if st := status(); st.Mode != "local" {
			t.Fatalf("stats' cluster with Redis down: %+v, want mode local", st)
		}
		if err := testutil.CollectAndCompare(collector{}, strings.NewReader("# HELP caddy_s360_cluster_redis_up 1 while Redis answers, 0 while the node serves alone from its local tier.\n# TYPE caddy_s360_cluster_redis_up gauge\ncaddy_s360_cluster_redis_up 0\n"), "caddy_s360_cluster_redis_up"); err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/s360/", nil)
		r.Header.Set("Accept", "text/html")
		w := httptest.NewRecorder()
		if err := serveStatus(w, r); err != nil {
			t.Fatal(err)
		}
		page := w.Body.String()
		if w.Code != http.StatusOK || stat(t, page, "cluster.redis_ok") != "down" || stat(t, page, "cluster.nodes") != fmt.Sprint(status().Nodes) {
			t.Fatalf("status page with Redis down: %d\n%s", w.Code, page)
		}
	})
}
