package cluster

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProc is a real redis-server on a free loopback port, which a test
// may kill (-9), pause (SIGSTOP) and start again on the same port.
type redisProc struct {
	t    testing.TB
	addr string
	cmd  *exec.Cmd
}

// startRedisB starts a redis-server and stops it (by its PID) when the
// test ends. Tests are skipped where no redis-server is installed.
func startRedisB(t testing.TB) *redisProc {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := &redisProc{t: t, addr: addr}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) url() string { return "redis://" + r.addr + "/0" }

func (r *redisProc) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	rdb := r.client()
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer within 10 s", r.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill is kill -9: no shutdown, connections drop.
func (r *redisProc) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT) // a paused server dies as well
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

// pause freezes the server: it accepts connections but answers nothing.
func (r *redisProc) pause()  { r.cmd.Process.Signal(syscall.SIGSTOP) }
func (r *redisProc) resume() { r.cmd.Process.Signal(syscall.SIGCONT) }

// client is a plain client, for a test to look at or tamper with the keys.
func (r *redisProc) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1, DialTimeout: time.Second})
}

// stateNode opens a node with test timings (heartbeat 100 ms, polling lease
// 1 s, calls bounded at 250 ms rather than 50 so that a loaded test
// machine does not pass for a sick Redis; TestRedisOutOfReach checks the
// 50 ms default) and closes it when the test ends.
func stateNode(t testing.TB, r *redisProc, name, dir string) *Cluster {
	t.Helper()
	return stateNodeCfg(t, Config{URL: r.url(), Node: name, Dir: dir, OpTimeout: 250 * time.Millisecond})
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
