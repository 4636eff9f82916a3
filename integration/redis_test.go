package integration

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is Debian's redis-server (7) run as a process on a loopback
// port, without persistence, for the cluster tests. It can be killed with
// SIGKILL and started again on the same port, empty, as after a crash.
type redisServer struct {
	*proc
	Addr     string // 127.0.0.1:port
	Password string // requirepass, "" for none
	path     string
	dir      string
}

// redisPath finds redis-server; without it the test is skipped, or fails
// under CI (which installs it, see .ci/run).
func redisPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not found (apt-get install redis-server): %v", err)
		}
		t.Skip("redis-server not found; apt-get install redis-server to run the cluster tests")
	}
	return path
}

// startRedis runs redis-server on a free loopback port, with password as
// its requirepass when not empty. redis-server cannot bind port 0 and
// report it, so a start that lost its port to another process is retried
// on a new one.
func startRedis(t *testing.T, password string) *redisServer {
	t.Helper()
	r := &redisServer{Password: password, path: redisPath(t), dir: t.TempDir()}
	for attempt := 1; ; attempt++ {
		r.Addr = freeAddr(t)
		if r.run(t) {
			return r
		}
		if attempt == bindRetries || !strings.Contains(r.Output(), "in use") {
			t.Fatalf("redis-server exited:\n%s", tail(r.Output(), 4000))
		}
	}
}

// URL is the cluster subdirective's argument for this server.
func (r *redisServer) URL() string {
	if r.Password != "" {
		return "redis://:" + r.Password + "@" + r.Addr + "/0"
	}
	return "redis://" + r.Addr + "/0"
}

// run starts redis-server on r.Addr and waits until it answers PING;
// false means it exited first.
func (r *redisServer) run(t *testing.T) bool {
	t.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password)
	}
	r.proc = startPath(t, "redis-server", r.path, nil, args...)
	exited := false
	waitFor(t, "redis-server to answer PING", 15*time.Second, func() bool {
		select {
		case <-r.done:
			exited = true
			return true
		default:
		}
		return ping(r.Addr)
	})
	return !exited
}

// ping sends a RESP PING and reports whether the server answered; with a
// requirepass it answers -NOAUTH, which is as good a sign of life.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && (line == "+PONG\r\n" || strings.HasPrefix(line, "-NOAUTH"))
}

// Kill ends redis-server with SIGKILL, as a crash would, and waits until
// its port refuses connections.
func (r *redisServer) Kill(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("redis-server survived SIGKILL for 10s")
	}
	if ping(r.Addr) {
		t.Fatalf("something still answers on %s after redis-server was killed", r.Addr)
	}
}

// Restart starts a new, empty redis-server on the killed one's port.
func (r *redisServer) Restart(t *testing.T) {
	t.Helper()
	if !r.run(t) {
		t.Fatalf("redis-server did not start again on %s:\n%s", r.Addr, tail(r.Output(), 4000))
	}
}

// Client is a go-redis client on r for the test's own checks.
func (r *redisServer) Client(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.Password})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisHarness checks the harness the cluster tests rely on: a crash
// of redis-server loses its data and frees its port, and a restart on the
// same port serves again.
func TestRedisHarness(t *testing.T) {
	r := startRedis(t, "harness-pass")
	c := r.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	if err := c.Get(ctx, "k").Err(); err == nil {
		t.Fatal("GET succeeded with redis-server killed")
	}
	r.Restart(t)
	if err := c.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET after the restart: %v, want redis.Nil (no persistence)", err)
	}
}
