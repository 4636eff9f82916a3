package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSentTellsWhetherTheRequestLeft(t *testing.T) {
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close()
	cases := []struct {
		name    string
		baseURL string // a refused port when set
		answer  http.HandlerFunc
		kind    Kind
		sent    bool
	}{
		{name: "connection refused", baseURL: refused.URL, kind: Unreachable, sent: false},
		{name: "closed after reading the request", answer: func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, kind: Unreachable, sent: true},
		{name: "no answer in time", answer: func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body) // lets the server see the client leave
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, kind: Timeout, sent: true},
		{name: "body cut short of its Content-Length", answer: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, `{"statusCode":"success","code":"TRUNC`)
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, kind: Invalid, sent: true},
		{name: "chunked body cut", answer: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"statusCode":"success","code":"TRUNC`)
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, kind: Invalid, sent: true},
		{name: "HTML page", answer: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `<html>"statusCode":"success"</html>`)
		}, kind: Invalid, sent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cl *Client
			var f *fakeS360
			if c.baseURL != "" {
				cl = New(Config{BaseURL: c.baseURL, Secret: "s3cret"})
			} else {
				cl, f = setup(t, func(cfg *Config, f *fakeS360) {
					cfg.Timeout = 300 * time.Millisecond
					f.handler = c.answer
				})
			}
			_, err := cl.Do(context.Background(), posCall, []byte(`{}`))
			var ue *Error
			if !errors.As(err, &ue) || ue.Kind != c.kind || ue.Sent != c.sent || Sent(err) != c.sent {
				t.Fatalf("got %#v (%v), want kind %d sent %v", ue, err, c.kind, c.sent)
			}
			if f != nil && f.calls.Load() != 1 {
				t.Errorf("%d calls upstream: a sent call must never be retried", f.calls.Load())
			}
		})
	}
}

func TestTokenFailureIsNotSent(t *testing.T) {
	c, _ := setup(t, func(cfg *Config, f *fakeS360) {
		cfg.Secret = "wrong"
	})
	_, err := c.Do(context.Background(), posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != AuthFailed || Sent(err) {
		t.Fatalf("got %v (sent %v), want AuthFailed, not sent", err, Sent(err))
	}
}

// Only the answers whose body reaches the website must be S-360 answers;
// the others become the sidecar's own errors.
func TestRelayedAnswersMustBeValid(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		valid  bool
	}{
		{"success", 200, `{"statusCode":"success"}`, true},
		{"business error", 200, `{"statusCode":"error","statusDetail":"x"}`, true},
		{"array", 200, `[{"statusCode":"success"}]`, false},
		{"no statusCode", 200, `{"ok":true}`, false},
		{"two objects", 200, `{"statusCode":"success"}{"statusCode":"success"}`, false},
		{"empty", 200, ``, false},
		{"4xx HTML", 404, `<html>not found</html>`, false},
		{"5xx HTML is the handler's business", 503, `<html>down</html>`, true},
		{"509 text", 509, `slow down`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, _ := setup(t, func(cfg *Config, f *fakeS360) {
				f.handler = func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(c.status)
					io.WriteString(w, c.body)
				}
			})
			resp, err := cl.Do(context.Background(), posCall, []byte(`{}`))
			var ue *Error
			switch {
			case c.valid && (err != nil || resp.Status != c.status || string(resp.Body) != c.body):
				t.Fatalf("got %v %v, want the answer as it is", resp, err)
			case !c.valid && (!errors.As(err, &ue) || ue.Kind != Invalid):
				t.Fatalf("got %v %v, want Invalid", resp, err)
			}
		})
	}
}

// heapWatch samples the live heap (after a collection, so that garbage of
// finished reads does not count) until stopped, and returns its peak.
func heapWatch() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// hugeAnswers serves valid answers of size bytes, with or without a
// Content-Length, without holding them in memory.
func hugeAnswers(size int, withLength bool) http.HandlerFunc {
	head, tail := `{"statusCode":"success","pad":"`, `"}`
	chunk := []byte(strings.Repeat("x", 1<<20))
	return func(w http.ResponseWriter, r *http.Request) {
		if withLength {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		io.WriteString(w, head)
		for left := size - len(head) - len(tail); left > 0; left -= len(chunk) {
			if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
		io.WriteString(w, tail)
	}
}

// Eight concurrent 100 MiB answers: the bytes being read at once stay
// within the Reading bound; calls over it wait (known length) or are
// refused (unknown length). Unbounded, the heap would reach 800 MiB. The
// bound covers an answer until Do returns it; on a loaded machine a sample
// may catch a caller or two still holding the answer Do gave them, hence
// two answers on top of the bound.
func TestReadingBoundHoldsUnderHugeAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 800 MiB over loopback")
	}
	const (
		answer = 100 << 20 / memScale
		bound  = 256 << 20 / memScale
		// At a tenth of the size (under -race) the GC's own headroom
		// weighs more: at least 16 MiB of slack, still far below the
		// ~2 x 8 answers an unbounded read reaches.
		slack = max(64<<20/memScale, 16<<20)
	)
	for _, withLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("Content-Length=%v", withLength), func(t *testing.T) {
			cl, _ := setup(t, func(cfg *Config, f *fakeS360) {
				cfg.Timeout = 2 * time.Minute
				cfg.MaxResponseBytes = 128 << 20 / memScale
				cfg.Reading = NewReading(bound)
				f.handler = hugeAnswers(answer, withLength)
			})
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			stop := heapWatch()
			var wg sync.WaitGroup
			var ok, refused atomic.Int32
			for range 8 {
				wg.Go(func() {
					resp, err := cl.Do(context.Background(), posCall, []byte(`{}`))
					var ue *Error
					switch {
					case err == nil && len(resp.Body) == answer:
						ok.Add(1)
					case errors.As(err, &ue) && ue.Kind == TooLarge && !withLength:
						refused.Add(1)
					default:
						t.Errorf("unexpected outcome: %v", err)
					}
				})
			}
			wg.Wait()
			peak := stop()
			t.Logf("%d read, %d refused; heap in use %d MiB at start, peak %d MiB", ok.Load(), refused.Load(), base.HeapInuse>>20, peak>>20)
			if peak > base.HeapInuse+bound+2*answer+slack {
				t.Errorf("heap peaked at %d MiB, over the %d MiB bound + two %d MiB answers + %d MiB slack above the %d MiB start", peak>>20, bound>>20, answer>>20, slack>>20, base.HeapInuse>>20)
			}
			if withLength && ok.Load() != 8 {
				t.Errorf("%d of 8 answers with a Content-Length read; they should wait for room, not fail", ok.Load())
			}
			if ok.Load() == 0 {
				t.Error("no answer was read at all")
			}
		})
	}
}

func TestReadingWaitEndsWithTheCaller(t *testing.T) {
	cl, _ := setup(t, func(cfg *Config, f *fakeS360) {
		cfg.Reading = NewReading(1 << 20)
		f.handler = hugeAnswers(1<<19, true)
	})
	if _, err := cl.Token(context.Background(), posCall); err != nil {
		t.Fatal(err)
	}
	// Someone else holds the whole bound.
	if err := cl.cfg.Reading.sem.Acquire(context.Background(), 1<<20); err != nil {
		t.Fatal(err)
	}
	defer cl.cfg.Reading.sem.Release(1 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := cl.Do(ctx, posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != Canceled || !ue.Sent {
		t.Fatalf("got %v, want Canceled (sent) once the caller's context ends", err)
	}
}
