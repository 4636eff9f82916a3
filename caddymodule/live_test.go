package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/s360edge/s360edge/live"
)

// liveHandler is newTestHandler with /s360/live open for max subscribers.
func liveHandler(t *testing.T, max int) *Handler {
	t.Helper()
	h := newTestHandler(t, &fakeUpstream{}, time.Second)
	h.LiveMax = &max
	h.provisionLive()
	t.Cleanup(h.cleanupLive)
	return h
}

// liveStream is an open subscription's response, read line by line.
type liveStream struct {
	resp  *http.Response
	lines *bufio.Reader
}

// openLive subscribes at url and returns the stream once its opening
// (the retry line and a comment) is read.
func openLive(t *testing.T, url string) *liveStream {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %q %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &liveStream{resp: resp, lines: bufio.NewReader(resp.Body)}
	if l := s.line(t); l != "retry: 5000" {
		t.Fatalf("the stream opens with %q, want the retry line", l)
	}
	return s
}

func (s *liveStream) line(t *testing.T) string {
	t.Helper()
	l, err := s.lines.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the stream: %v (read %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// data is the data line of the next event.
func (s *liveStream) data(t *testing.T) string {
	t.Helper()
	for {
		if d, ok := strings.CutPrefix(s.line(t), "data: "); ok {
			return d
		}
	}
}

// ended waits up to 5 s for the stream's end.
func (s *liveStream) ended(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s.lines)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open")
	}
}

func TestLiveEndpoint(t *testing.T) {
	h := liveHandler(t, 2)
	tooMany := make([]string, live.MaxProducts+1)
	for i := range tooMany {
		tooMany[i] = strconv.Itoa(1 + i)
	}
	for _, tc := range []struct {
		method, query string
		status        int
		code          string
	}{
		{"GET", "", http.StatusBadRequest, "invalid_products"},
		{"GET", "?products=12,x", http.StatusBadRequest, "invalid_products"},
		{"GET", "?products=" + strings.Join(tooMany, ","), http.StatusBadRequest, "invalid_products"},
		{"POST", "?products=12", http.StatusMethodNotAllowed, "method_not_allowed"},
	} {
		w, next := serve(h, tc.method, live.Path+tc.query, "", nil)
		var body struct{ Error, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != tc.status || body.Error != tc.code || body.Message == "" || next.called {
			t.Errorf("%s %s: %d %s (passed on: %v), want %d with error %q", tc.method, tc.query, w.Code, w.Body, next.called, tc.status, tc.code)
		}
	}
	if got := liveCounters.Subscribers.Load(); got != 0 {
		t.Fatalf("%d subscribers after refused subscriptions", got)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r, &nextHandler{}) }))
	t.Cleanup(srv.Close) // after the streams' bodies are closed (cleanups run last first)
	a := openLive(t, srv.URL+live.Path+"?products=7,8")
	b := openLive(t, srv.URL+live.Path+"?products=9")
	if got := liveCounters.Subscribers.Load(); got != 2 {
		t.Fatalf("the gauge counts %d subscribers, want 2", got)
	}
	resp, err := http.Get(srv.URL + live.Path + "?products=7")
	if err != nil {
		t.Fatal(err)
	}
	full, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "30" || !strings.Contains(string(full), `"error":"live_full"`) {
		t.Fatalf("a third subscriber with live_max 2: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), full)
	}

	h.live.hub.Changed([]string{"8"})
	if d := a.data(t); d != `{"productId":8}` {
		t.Fatalf("event %s, want product 8's", d)
	}
	// The handler's config goes: every stream ends.
	h.cleanupLive()
	a.ended(t)
	b.ended(t)
	if got := liveCounters.Subscribers.Load(); got != 0 {
		t.Fatalf("the gauge counts %d subscribers after the streams ended", got)
	}
}

// live_max 0 turns the endpoint off: the path is the website's.
func TestLiveMaxZeroPassesThePathOn(t *testing.T) {
	h := liveHandler(t, 0)
	if w, next := serve(h, "GET", live.Path+"?products=1", "", nil); !next.called || w.Code != http.StatusTeapot {
		t.Fatalf("with live_max 0: %d, passed on %v", w.Code, next.called)
	}
}

func TestLiveMaxConfig(t *testing.T) {
	for _, tc := range []struct {
		line string
		want any // the value, or the error's text
	}{
		{"live_max 5", 5},
		{"live_max 0", 0},
		{"live_max -1", `s360: live_max: want the most pages that may follow availability at once, an integer >= 0 (0 turns /s360/live off), got "-1"; write e.g. live_max 10000`},
		{"live_max many", `got "many"; write e.g. live_max 10000`},
		{"live_max 1 2", "s360: live_max: wrong number of values; write e.g. live_max 10000"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s360 {\n" + tc.line + "\n}"))
		switch want := tc.want.(type) {
		case int:
			if err != nil || h.LiveMax == nil || *h.LiveMax != want {
				t.Errorf("%s: %v, %v", tc.line, h.LiveMax, err)
			}
		case string:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %v, want %q", tc.line, err, want)
			}
		}
	}
	neg := -3
	h := Handler{LiveMax: &neg}
	if err := h.checkLive(); err == nil || !strings.HasPrefix(err.Error(), "live_max: -3 is negative;") || !strings.HasSuffix(err.Error(), "e.g. live_max 10000") {
		t.Errorf("live_max -3 in JSON: %v", err)
	}
}

// The godoc of LiveMax and the README give the limits of package live.
func TestLiveLimitsAreDocumented(t *testing.T) {
	doc := fieldDoc(t, "LiveMax")
	for _, want := range []string{
		"Default " + strconv.Itoa(live.DefaultMax) + ".",
		"at most " + strconv.Itoa(live.MaxProducts) + " products",
		"Retry-After " + strconv.Itoa(int(live.FullRetryAfter/time.Second)),
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("LiveMax's godoc does not say %q: %q", want, doc)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf("| `live_max <pages>` | `%d` |", live.DefaultMax)
	if !strings.Contains(string(readme), row) {
		t.Errorf("the README's table has no row starting %q", row)
	}
	if heartbeat := fmt.Sprintf("every %d s", int(live.Heartbeat/time.Second)); !strings.Contains(string(readme), heartbeat) {
		t.Errorf("the README does not give the heartbeat, %q", heartbeat)
	}
}

// A reload ends the old config's streams (EventSource then reconnects to
// the new one), and the reloads leave no goroutine behind; stopping Caddy
// ends them too.
func TestLiveStreamsEndOnReloadAndStop(t *testing.T) {
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	cfg := handlerJSON(dir, 40, 0, "5s")
	if err := loadConfig(t, listen, cfg); err != nil {
		t.Fatal(err)
	}
	url := "http://" + listen + live.Path + "?products=1"
	client := &http.Client{Transport: &http.Transport{}}
	settle := func() int {
		client.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	open := func() *liveStream {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("subscribing: %d", resp.StatusCode)
		}
		s := &liveStream{resp: resp, lines: bufio.NewReader(resp.Body)}
		s.line(t)
		return s
	}
	s := open() // a first stream and reload warm up what stays
	if err := loadConfig(t, listen, cfg); err != nil {
		t.Fatal(err)
	}
	s.ended(t)
	s.resp.Body.Close()
	before := settle()

	const rounds, streams = 3, 10
	for range rounds {
		var open10 []*liveStream
		for range streams {
			open10 = append(open10, open())
		}
		if err := loadConfig(t, listen, cfg); err != nil {
			t.Fatal(err)
		}
		for _, s := range open10 {
			s.ended(t)
			s.resp.Body.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for after := settle(); after > before+5; after = settle() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after %d reloads with %d streams each, %d before:\n%s", after, rounds, streams, before, buf[:runtime.Stack(buf, true)])
		}
	}
	if n := liveCounters.Subscribers.Load(); n != 0 {
		t.Fatalf("%d subscribers counted after the reloads", n)
	}

	s = open()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	s.ended(t)
	s.resp.Body.Close()
}
