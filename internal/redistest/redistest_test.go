package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A kill loses the data and frees the port; a restart serves again on the
// same address, empty, with the same password.
func TestKillThenRestart(t *testing.T) {
	s := Start(t, "harness-pass")
	addr := s.Addr
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: s.Password, MaxRetries: -1})
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := c.Get(ctx, "k").Err(); err == nil {
		t.Fatal("GET succeeded with redis-server killed")
	}
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr, addr)
	}
	if err := c.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET after the restart: %v, want redis.Nil (no persistence)", err)
	}
	s.Kill()
	s.Kill() // a second kill is harmless
}

// A paused server takes connections but answers nothing until resumed.
func TestPauseResume(t *testing.T) {
	s := Start(t, "")
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	defer c.Close()
	ping := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		return c.Ping(ctx).Err()
	}
	s.Pause()
	var ne net.Error
	if err := ping(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING to a paused server: %v, want a timeout", err)
	}
	s.Resume()
	if err := ping(); err != nil {
		t.Fatalf("PING after resuming: %v", err)
	}
}

// A port that another process takes between its choice and redis-server's
// bind is given up for a new one, whether the taker is a plain listener
// (redis-server exits) or another redis-server, which answers on the port
// while this one exits.
func TestStartMovesOffATakenPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		take func(t *testing.T) string
	}{
		{"plain listener", func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return l.Addr().String()
		}},
		{"another redis-server", func(t *testing.T) string { return Start(t, "").Addr }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taken := tc.take(t)
			picks := 0
			s := start(t, "", func(t testing.TB) string {
				picks++
				if picks == 1 {
					return taken
				}
				return freeAddr(t)
			})
			if s.Addr == taken || picks != 2 {
				t.Fatalf("started on %s after %d picks; want a second pick, not the taken %s", s.Addr, picks, taken)
			}
			if pid, err := s.pid(); err != nil || pid != s.cmd.Process.Pid {
				t.Fatalf("the server on %s has pid %d (%v), want %d", s.Addr, pid, err, s.cmd.Process.Pid)
			}
		})
	}
}

// Without redis-server a test is skipped, except under CI, which must run it.
func TestMissingRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, tc := range []struct {
		name, ci string
		want     string
	}{
		{"locally", "", "skipped"},
		{"under CI", "1", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			o := &outcome{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); binary(o) }()
			<-done
			if o.got != tc.want || !strings.Contains(o.msg, "apt-get install redis-server") {
				t.Fatalf("%s (%q), want %s with the package to install", o.got, o.msg, tc.want)
			}
		})
	}
}

// outcome records how a test would have ended.
type outcome struct {
	testing.TB
	got, msg string
}

func (o *outcome) Skip(args ...any) {
	o.got, o.msg = "skipped", fmt.Sprint(args...)
	runtime.Goexit()
}

func (o *outcome) Fatalf(format string, args ...any) {
	o.got, o.msg = "failed", fmt.Sprintf(format, args...)
	runtime.Goexit()
}
