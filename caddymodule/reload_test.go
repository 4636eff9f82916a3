package caddymodule

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/edge"
)

// handlerJSON is an s360 handler that never calls S-360 on its own (no
// polls), with the given limit, max_size and timeout.
func handlerJSON(dir string, calls int, maxSize int64, timeout string) map[string]any {
	return map[string]any{
		"handler": "s360", "upstream": "http://127.0.0.1:9", "operator": "OP", "secret": "s3cret",
		"shop": "https://shop.example", "storage": dir, "setup_poll": 0, "updates_poll": 0,
		"rate_limit": map[string]any{"calls": calls, "window": "1m"},
		"max_size":   maxSize, "timeout": timeout, "max_wait": "1s",
	}
}

func loadConfig(t *testing.T, listen string, handlers ...map[string]any) error {
	t.Helper()
	var routes []any
	for _, h := range handlers {
		routes = append(routes, map[string]any{"handle": []any{h}})
	}
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"s": map[string]any{"listen": []string{listen}, "routes": routes},
		}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return caddy.Load(b, true)
}

// runningEdge is the only open edge.
func runningEdge(t *testing.T) *edge.Edge {
	t.Helper()
	var all []*edge.Edge
	eachEdge(func(e *edge.Edge) { all = append(all, e) })
	if len(all) != 1 {
		t.Fatalf("%d edges open, want 1", len(all))
	}
	return all[0]
}

type applied struct {
	limit   int
	maxSize int64
	timeout time.Duration
	wait    time.Duration
}

func appliedOf(e *edge.Edge) applied {
	s := e.Settings()
	return applied{
		limit:   budgetStats(e).Limit,
		maxSize: e.Store().Stats().MaxBytes,
		timeout: s.Timeout,
		wait:    s.Waits.Foreground,
	}
}

func freeListen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestReloadIsTransactional(t *testing.T) {
	dir := t.TempDir()
	listen := freeListen(t)
	t.Cleanup(func() { caddy.Stop() })

	if err := loadConfig(t, listen, handlerJSON(dir, 40, 64<<20, "20s")); err != nil {
		t.Fatalf("loading config A: %v", err)
	}
	e := runningEdge(t)
	a := applied{limit: 40, maxSize: 64 << 20, timeout: 20 * time.Second, wait: time.Second}
	if got := appliedOf(e); got != a {
		t.Fatalf("after config A: %+v, want %+v", got, a)
	}

	t.Run("a config that fails to provision changes nothing", func(t *testing.T) {
		bad := handlerJSON(dir, 90, 32<<20, "5s")
		bad["cart_target"] = "nowhere" // fails Provision after the first handler provisioned
		err := loadConfig(t, listen, handlerJSON(dir, 90, 32<<20, "5s"), bad)
		if err == nil || !strings.Contains(err.Error(), "cart_target") {
			t.Fatalf("loading config B: err %v, want the cart_target error", err)
		}
		if runningEdge(t) != e {
			t.Fatal("the failed config replaced the running edge")
		}
		if got := appliedOf(e); got != a {
			t.Fatalf("after the failed config B: %+v, want A's %+v", got, a)
		}
	})

	t.Run("a config that fails to start changes nothing", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		// The http app fails to start; Caddy starts apps in map order,
		// so the s360 app has started first in some runs and must undo.
		for range 5 {
			if err := loadConfig(t, busy.Addr().String(), handlerJSON(dir, 70, 16<<20, "7s")); err == nil {
				t.Fatal("a config listening on a busy port loaded")
			}
			if got := appliedOf(e); got != a {
				t.Fatalf("after a config that failed to start: %+v, want A's %+v", got, a)
			}
		}
	})

	t.Run("a config that loads applies every setting", func(t *testing.T) {
		h := handlerJSON(dir, 90, 32<<20, "5s")
		h["max_wait"] = "2s"
		if err := loadConfig(t, listen, h); err != nil {
			t.Fatalf("loading config B': %v", err)
		}
		if runningEdge(t) != e {
			t.Fatal("the reload reopened the edge")
		}
		want := applied{limit: 90, maxSize: 32 << 20, timeout: 5 * time.Second, wait: 2 * time.Second}
		if got := appliedOf(e); got != want {
			t.Fatalf("after config B': %+v, want %+v", got, want)
		}
	})
}

// The old config's client keeps no idle connection to S-360 once the
// config is cleaned up.
func TestCleanupClosesIdleUpstreamConnections(t *testing.T) {
	var closed atomic.Int32
	srv := httptest.NewUnstartedServer(&fakeUpstream{})
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	h := handlerJSON(dir, 40, 0, "5s")
	h["upstream"] = srv.URL
	if err := loadConfig(t, listen, h); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+listen+catalogPath, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the call through Caddy: %d", resp.StatusCode)
	}
	if n := closed.Load(); n != 0 {
		t.Fatalf("%d upstream connections closed before the reload", n)
	}
	if err := loadConfig(t, listen, h); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the old config's idle connection to S-360 is still open after its cleanup")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
