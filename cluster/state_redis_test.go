package cluster

import (
	"fmt"
	"testing"
	"time"
)

// stateNode opens a node with test timings (heartbeat 100 ms, polling lease
// 1 s, calls bounded at 250 ms rather than 50 so that a loaded test
// machine does not pass for a sick Redis; TestRedisOutOfReach checks the
// 50 ms default) and closes it when the test ends.
func stateNode(t testing.TB, r *redisProc, name, dir string) *Cluster {
	t.Helper()
	return stateNodeCfg(t, Config{URL: r.URL(), Node: name, Dir: dir, OpTimeout: 250 * time.Millisecond})
}

func stateNodeCfg(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	cfg.Prefix, cfg.Heartbeat, cfg.Poll = "t", 100*time.Millisecond, time.Second
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds, and fails the test at the deadline.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// die stops a node's loops without its goodbye: the polling lease and
// membership it holds are left to expire, as after kill -9.
func die(c *Cluster) {
	c.closeOnce.Do(func() {
		c.cancel()
		c.released.close()
		c.bulk.Close()
		c.wg.Wait()
		c.rdb.Close()
	})
}

func nodeNames(cs ...*Cluster) string {
	s := ""
	for _, c := range cs {
		p, f := c.Poller()
		s += fmt.Sprintf("%s:(%v,%d) ", c.Node(), p, f)
	}
	return s
}
