package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// benchServeEnv opens an edge on a tiny upstream that answers a success
// envelope of about size bytes, and warms one key.
func benchServeEnv(b *testing.B, size int) (*Edge, *upstream.Client, []byte) {
	b.Helper()
	answer := `{"statusCode":"success","data":"` + strings.Repeat("x", max(size-33, 0)) + `"}`
	e, c := benchEdge(b, []byte(answer), "")
	canonical, err := s360.Canonical([]byte(`{"performanceIds":[10228231500032],"pointOfSalesId":10228100000100}`))
	if err != nil {
		b.Fatal(err)
	}
	if r := e.Serve(context.Background(), c, avail, canonical, ""); r.Entry == nil || len(r.Entry.Body) != len(answer) {
		b.Fatalf("warming the key: %+v", r)
	}
	if r := e.Serve(context.Background(), c, avail, canonical, ""); !r.Hit {
		b.Fatalf("second call not a hit: %q", r.CacheStatus)
	}
	return e, c, canonical
}

// benchEdge opens an edge on an upstream that answers every call with
// answer, sent with the given Content-Encoding.
func benchEdge(b *testing.B, answer []byte, encoding string) (*Edge, *upstream.Client) {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == upstream.AuthPath {
			w.Write([]byte(`{"token":"t"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if encoding != "" {
			w.Header().Set("Content-Encoding", encoding)
		}
		w.Write(answer)
	}))
	b.Cleanup(srv.Close)
	e, err := Open(Options{Dir: b.TempDir(), Institution: "mosa"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	c := upstream.New(upstream.Config{BaseURL: srv.URL, Secret: "s", Gate: e})
	e.Attach(c)
	return e, c
}

// BenchmarkServeHit is Serve on a warm key: the edge's share of a cache
// hit (key, memory-layer lookup, freshness, Cache-Status), without HTTP.
func BenchmarkServeHit(b *testing.B) {
	for _, bs := range []struct {
		name string
		size int
	}{{"2KB", 2 << 10}, {"1MB", 1 << 20}} {
		b.Run(bs.name, func(b *testing.B) {
			e, c, canonical := benchServeEnv(b, bs.size)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if r := e.Serve(ctx, c, avail, canonical, ""); !r.Hit {
					b.Fatalf("not a hit: %q", r.CacheStatus)
				}
			}
		})
	}
}

// BenchmarkServeHitParallel is the same under contention (GOMAXPROCS
// goroutines on one key).
func BenchmarkServeHitParallel(b *testing.B) {
	e, c, canonical := benchServeEnv(b, 2<<10)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := e.Serve(ctx, c, avail, canonical, ""); !r.Hit {
				b.Errorf("not a hit: %q", r.CacheStatus)
				return
			}
		}
	})
}

// BenchmarkServeMissLarge is the miss of a 10 MB catalog answer, sent
// gzipped as S-360 does, then read once more as the next reader would: the
// bytes allocated per op count the copies of the body that the miss path
// makes (read, decompress, store, load).
func BenchmarkServeMissLarge(b *testing.B) {
	const size = 10 << 20
	// Random letters compress about as well as a catalog does (4-5×);
	// a run of one letter would not, and would hide gunzip's sizing.
	data := make([]byte, size-34)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = 'a' + byte(rng.IntN(26))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"statusCode":"success","data":"` + string(data) + `"}`))
	zw.Close()
	e, c := benchEdge(b, gz.Bytes(), "gzip")
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		canonical := []byte(`{"pointOfSalesId":` + strconv.Itoa(i) + `}`)
		if r := e.Serve(ctx, c, catalog, canonical, ""); r.Entry == nil || len(r.Entry.Body) != size {
			b.Fatalf("miss: %+v", r.CacheStatus)
		}
		if r := e.Serve(ctx, c, catalog, canonical, ""); !r.Hit || len(r.Entry.Body) != size {
			b.Fatalf("next reader: %q", r.CacheStatus)
		}
	}
}
