package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// runningPooled is the only open edge, with its cluster.
func runningPooled(t *testing.T) pooledEdge {
	t.Helper()
	var all []pooledEdge
	eachPooled(func(p pooledEdge) { all = append(all, p) })
	if len(all) != 1 {
		t.Fatalf("%d edges open, want 1", len(all))
	}
	return all[0]
}

// The cluster belongs to the running cache: a reload keeps it and applies
// the budget to it, a reload that changes it fails and says a restart is
// needed, and the running config goes on unchanged.
func TestClusterReload(t *testing.T) {
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	// Nothing listens there: a node whose Redis is down still starts.
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t))
	// Redis never answers here: a node's budget is rate_limit / nodes.
	nodes := 2
	withCluster := func(calls int, url, prefix string) map[string]any {
		h := handlerJSON(dir, calls, 0, "5s")
		h["cluster"] = map[string]any{"url": url, "prefix": prefix, "nodes": nodes}
		return h
	}
	if err := loadConfig(t, listen, withCluster(40, redisURL, "inst-a")); err != nil {
		t.Fatalf("loading the cluster config: %v", err)
	}
	first := runningPooled(t)
	if first.cluster == nil {
		t.Fatal("the edge of a config with cluster has no cluster")
	}
	stats := allStats()
	if c := stats[0].Cluster; c == nil || c.Mode != "local" || c.RedisOK || c.Nodes < 1 || c.Node == "" {
		t.Fatalf("stats' cluster with Redis down: %+v, want mode local, redis_ok false, nodes >= 1", c)
	}
	t.Run("metrics say Redis is down", func(t *testing.T) {
		want := `# HELP caddy_s360_cluster_leader 1 on the node that runs the cluster's polls (holds the polling lease), else 0.
# TYPE caddy_s360_cluster_leader gauge
caddy_s360_cluster_leader 0
# HELP caddy_s360_cluster_redis_up 1 while Redis answers, 0 while the node serves alone from its local tier.
# TYPE caddy_s360_cluster_redis_up gauge
caddy_s360_cluster_redis_up 0
`
		if err := testutil.CollectAndCompare(collector{}, strings.NewReader(want), "caddy_s360_cluster_leader", "caddy_s360_cluster_redis_up"); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"caddy_s360_cluster_nodes", "caddy_s360_shared_hits_total", "caddy_s360_shared_waits_total", "caddy_s360_shared_errors_total"} {
			if n := testutil.CollectAndCount(collector{}, name); n != 1 {
				t.Errorf("%d %s series, want 1", n, name)
			}
		}
	})

	for _, tc := range []struct {
		name string
		cfg  map[string]any
	}{
		{"another prefix", withCluster(90, redisURL, "inst-b")},
		{"another URL", withCluster(90, strings.Replace(redisURL, "redis://", "redis://user:pw-s3cret@", 1), "inst-a")},
		{"cluster turned off", handlerJSON(dir, 90, 0, "5s")},
	} {
		t.Run("reload with "+tc.name+" fails and changes nothing", func(t *testing.T) {
			err := loadConfig(t, listen, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), "restart") {
				t.Fatalf("reload: %v, want an error saying a restart is needed", err)
			}
			if strings.Contains(err.Error(), "pw-s3cret") {
				t.Fatalf("the error shows the Redis password: %v", err)
			}
			if p := runningPooled(t); p.Edge != first.Edge || p.cluster != first.cluster {
				t.Fatal("the failed reload replaced the running edge or cluster")
			}
			if got := budgetStats(first.Edge).Limit; got != 20 {
				t.Fatalf("limit after the failed reload: %d, want 40 / 2 nodes = 20", got)
			}
		})
	}

	// With Redis down the stats are this node's share of the budget,
	// which follows the new rate_limit and nodes.
	for _, tc := range []struct {
		name         string
		calls, nodes int
		want         int
	}{
		{"the same cluster applies the budget", 20, 2, 10},
		{"other nodes applies them", 20, 4, 5},
	} {
		t.Run("reload with "+tc.name, func(t *testing.T) {
			nodes = tc.nodes
			if err := loadConfig(t, listen, withCluster(tc.calls, redisURL, "inst-a")); err != nil {
				t.Fatalf("reload: %v", err)
			}
			if p := runningPooled(t); p.Edge != first.Edge || p.cluster != first.cluster {
				t.Fatal("the reload reopened the edge or its cluster")
			}
			if got := budgetStats(first.Edge).Limit; got != tc.want {
				t.Fatalf("limit after the reload: %d, want %d / %d nodes = %d", got, tc.calls, tc.nodes, tc.want)
			}
		})
	}
}

// Without cluster, /s360/stats has no cluster object and the cluster
// metrics are absent.
func TestStatsWithoutCluster(t *testing.T) {
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	if err := loadConfig(t, listen, handlerJSON(dir, 40, 0, "5s")); err != nil {
		t.Fatal(err)
	}
	if p := runningPooled(t); p.cluster != nil {
		t.Fatal("an edge without cluster config has a cluster")
	}
	b, err := json.Marshal(allStats())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"cluster"`) {
		t.Fatalf("stats without cluster mode show a cluster: %s", b)
	}
	for _, name := range []string{"caddy_s360_cluster_nodes", "caddy_s360_cluster_leader", "caddy_s360_cluster_redis_up",
		"caddy_s360_shared_hits_total", "caddy_s360_shared_waits_total", "caddy_s360_shared_errors_total"} {
		if n := testutil.CollectAndCount(collector{}, name); n != 0 {
			t.Errorf("%s exported without cluster mode", name)
		}
	}
}

// A prefix from an unset environment variable would silently become the
// default one, which another institution on the same Redis may use.
func TestClusterPrefixFromAnUnsetVariableFails(t *testing.T) {
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	h := handlerJSON(dir, 40, 0, "5s")
	h["cluster"] = map[string]any{"url": fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t)), "prefix": "{env.S360EDGE_TEST_UNSET_PREFIX}"}
	err := loadConfig(t, listen, h)
	if err == nil || !strings.Contains(err.Error(), "s360: cluster: prefix: empty once its placeholders are replaced (is its environment variable set?); set it, e.g. prefix myinstit, or leave it out for the default s360edge") {
		t.Fatalf("load: %v, want an error about the empty prefix", err)
	}
}
