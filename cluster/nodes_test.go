package cluster

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/internal/redistest"
)

// refusedURL is a Redis URL whose port refuses connections: a listener's,
// closed.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return redisURL(addr)
}

// thirty is rate_limit 30 per minute, without reserves or quotas: the
// local share is the whole story.
var thirty = budget.Config{Calls: 30, Window: time.Minute, FixedLimit: true, OrderReserve: -1, WatchReserve: -1, Reserve: -1, ClientQuota: -1}

// openAlone opens a node on cfg with the test's logger, and its budget.
func openAlone(t *testing.T, cfg Config, log *zap.Logger) (*Cluster, *Budget) {
	t.Helper()
	cfg.Logger, cfg.Heartbeat = log, 100*time.Millisecond
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, NewBudget(c, thirty)
}

// grantsUntilFull counts the grants b makes before it refuses one (the
// window of a minute does not move meanwhile).
func grantsUntilFull(t *testing.T, b *Budget) int {
	t.Helper()
	n := 0
	for ; n <= 100; n++ {
		if err := try(b, budget.Foreground, 20*time.Millisecond); err != nil {
			if !errors.Is(err, budget.ErrLimited) {
				t.Fatalf("refusal after %d grants: %v, want ErrLimited", n, err)
			}
			return n
		}
	}
	t.Fatalf("more than 100 grants of rate_limit 30")
	return n
}

// A node that never reached Redis takes rate_limit / nodes; without nodes,
// the count it saved in an earlier run; without either, a tenth, and it
// says why once.
func TestNodeThatNeverReachedRedis(t *testing.T) {
	t.Run("nodes 3", func(t *testing.T) {
		c, b := openAlone(t, Config{URL: refusedURL(t), Nodes: 3}, zap.NewNop())
		if got := grantsUntilFull(t, b); got != 10 {
			t.Fatalf("%d grants with Redis refused and nodes 3, want rate_limit / 3 = 10", got)
		}
		if p, f := c.Poller(); !p || f != 3 {
			t.Fatalf("Poller() = (%v, %d), want (true, 3): three nodes polling, each three times less often", p, f)
		}
	})

	t.Run("the count saved by an earlier run", func(t *testing.T) {
		r := startRedisB(t)
		dir := filepath.Join(t.TempDir(), "store") // not made yet: the node joins before the store opens
		var nodes []*Cluster
		for _, name := range []string{"a", "b", "c"} {
			nodes = append(nodes, stateNode(t, r, name, map[string]string{"a": dir}[name]))
		}
		waitFor(t, 2*time.Second, "node a to see 3 nodes", func() bool { return nodes[0].Status().Nodes == 3 })
		waitFor(t, 2*time.Second, "node a to save the count", func() bool { return loadNodeCount(dir) == 3 })
		nodes[0].Close()
		r.Kill()
		_, b := openAlone(t, Config{URL: r.URL(), Dir: dir}, zap.NewNop())
		if got := grantsUntilFull(t, b); got != 10 {
			t.Fatalf("%d grants after a restart with Redis down, 3 nodes saved, want 10", got)
		}
	})

	t.Run("nothing known: a tenth, and one WARN", func(t *testing.T) {
		core, logs := observer.New(zapcore.WarnLevel)
		c, b := openAlone(t, Config{URL: refusedURL(t), Dir: t.TempDir()}, zap.New(core))
		if got := grantsUntilFull(t, b); got != 3 {
			t.Fatalf("%d grants with nothing known of the cluster's size, want a tenth of rate_limit, 3", got)
		}
		for range 5 {
			try(b, budget.Foreground, time.Millisecond)
			if p, f := c.Poller(); !p || f != unknownNodes {
				t.Fatalf("Poller() = (%v, %d), want (true, %d)", p, f, unknownNodes)
			}
		}
		warns := logs.FilterMessageSnippet("number of sidecars is unknown").All()
		if len(warns) != 1 || !strings.Contains(warns[0].Message, "nodes <n>") {
			t.Fatalf("%d WARN lines about the unknown count (%v), want one naming the nodes subdirective", len(warns), logs.All())
		}
	})

	t.Run("nodes is a floor of the count last seen", func(t *testing.T) {
		r := startRedisB(t)
		c, b := openAlone(t, Config{URL: r.URL(), Nodes: 3}, zap.NewNop())
		waitFor(t, 2*time.Second, "the node to see itself", func() bool { return c.Status().RedisOK })
		r.Kill()
		// It saw itself alone; three are deployed.
		if got := grantsUntilFull(t, b); got != 10 {
			t.Fatalf("%d grants after Redis went, nodes 3, one live node seen: want 10", got)
		}
	})
}

func TestNodeCountFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content string }{{""}, {"x"}, {"0"}, {"-2"}, {"999999999"}} {
		os.WriteFile(filepath.Join(dir, nodeCountFile), []byte(tc.content), 0o600)
		if n := loadNodeCount(dir); n != 0 {
			t.Errorf("%q read as %d nodes, want none", tc.content, n)
		}
	}
	os.WriteFile(filepath.Join(dir, nodeCountFile), []byte("4\n"), 0o600)
	if n := loadNodeCount(dir); n != 4 {
		t.Errorf("read %d, want 4", n)
	}
	if _, err := Open(Config{URL: "redis://127.0.0.1:1/0", Nodes: -1}); err == nil || !strings.Contains(err.Error(), "nodes -1") {
		t.Errorf("Open with nodes -1: %v, want an error naming it", err)
	}
}

// A Redis Cluster endpoint is refused when the connection is made: the
// node stays local, says why once at ERROR and in its status, and its
// budget is its share.
func TestRedisClusterIsRefused(t *testing.T) {
	r := redistest.StartCluster(t)
	core, logs := observer.New(zapcore.WarnLevel)
	c, b := openAlone(t, Config{URL: r.URL(), Nodes: 3}, zap.New(core))
	if got := grantsUntilFull(t, b); got != 10 {
		t.Fatalf("%d grants against a Redis Cluster, nodes 3: want the local share, 10", got)
	}
	if err := c.Revoke("s", time.Now().Add(time.Minute)); !errors.Is(err, ErrRedisCluster) {
		t.Fatalf("Revoke against a Redis Cluster: %v, want ErrRedisCluster", err)
	}
	s := c.Status()
	if s.Mode != "local" || s.RedisOK || !strings.Contains(s.Error, "Redis Cluster") {
		t.Fatalf("status %+v, want local mode with the reason", s)
	}
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "standalone Redis") {
		t.Fatalf("%d ERROR lines (%v), want one saying what to use instead", len(errs), logs.All())
	}
}
