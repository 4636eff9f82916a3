package cluster

import (
	"context"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startRedis starts a real redis-server on a free 127.0.0.1 port, without
// persistence, and waits until it answers. stop kills it (SIGKILL, as a
// crash would) and may be called more than once; the test's cleanup calls
// it too. The test is skipped when redis-server is not installed.
func startRedis(t testing.TB) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	return addr, startRedisAt(t, addr)
}

// startRedisAt starts redis-server on addr, e.g. again after stopping the
// one startRedis started there.
func startRedisAt(t testing.TB, addr string) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (Debian: apt-get install redis-server); cluster tests need a real one")
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--loglevel", "warning", "--enable-debug-command", "local")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("redis-server on %s did not answer within 10s: %v", addr, err)
		}
	}
}

// redisURL is the URL of a server startRedis started.
func redisURL(addr string) string { return "redis://" + addr + "/0" }

// redisClient is a plain client of a server startRedis started.
func redisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}
