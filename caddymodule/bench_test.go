package caddymodule

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// rewound is a request body read again by every iteration.
type rewound struct{ *bytes.Reader }

func (rewound) Close() error { return nil }

// discard is a ResponseWriter that keeps nothing but its header map,
// cleared by every iteration.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkServeHTTPHit is the handler's whole hit, as Caddy's server
// calls it (a replacer in the context), without the network: classify,
// read and canonicalize the body, the edge's hit, the headers and the
// placeholders. The request and the writer are reused, so that what is
// counted is the handler's.
func BenchmarkServeHTTPHit(b *testing.B) {
	for _, bs := range []struct {
		name string
		size int
	}{{"2KB", 2 << 10}, {"1MB", 1 << 20}} {
		b.Run(bs.name, func(b *testing.B) {
			answer := `{"statusCode":"success","data":"` + strings.Repeat("x", bs.size-33) + `"}`
			f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(answer)) }}
			h := newTestHandler(b, f, 5*time.Second)
			h.MaxBodySize = 1 << 20
			body := []byte(`{"performanceIds":[10228231500032],"pointOfSalesId":10228100000100}`)
			const path = "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability"
			rd := bytes.NewReader(body)
			r, _ := http.NewRequestWithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()), http.MethodPost, path, rewound{rd})
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Type", "application/json")
			w := &discard{h: http.Header{}}
			next := &nextHandler{}
			serveOnce := func() string {
				rd.Reset(body)
				clear(w.h)
				h.ServeHTTP(w, r, next)
				return w.h.Get("Cache-Status")
			}
			serveOnce() // the miss
			if cs := serveOnce(); !strings.HasPrefix(cs, "s360edge; hit") {
				b.Fatalf("second call not a hit: %q", cs)
			}
			b.ReportAllocs()
			for b.Loop() {
				serveOnce()
			}
			if cs := serveOnce(); !strings.HasPrefix(cs, "s360edge; hit") {
				b.Fatalf("not a hit: %q", cs)
			}
		})
	}
}
