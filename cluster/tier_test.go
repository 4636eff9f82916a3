package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

func entry(body []byte, class cachestore.Class, staleIn time.Duration, tags ...string) *cachestore.Entry {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &cachestore.Entry{
		Status:     200,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       body,
		StoredAt:   now,
		FreshUntil: now.Add(staleIn / 2),
		StaleUntil: now.Add(staleIn),
		Class:      class,
		Generation: 4,
		Tags:       tags,
		Canonical:  []byte(`{"q":1}`),
	}
}

func TestTierRoundTrip(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	noise := make([]byte, 4<<20)
	rand.Read(noise) // incompressible: the worst case for the transfer
	// A catalog-like 10 MB body whose compressed form (about 2 MB) takes
	// the large-value path.
	var catalog []byte
	for i := 0; len(catalog) < 10<<20; i++ {
		catalog = fmt.Appendf(catalog, `{"productId":%d,"name":"Concert %x","price":%d},`, 10228231108335+i*7919, i*2654435761, i%9973)
	}
	for _, tc := range []struct {
		name string
		ent  *cachestore.Entry
	}{
		{"small", entry([]byte(`{"ok":true}`), cachestore.Availability, time.Minute, "product:1", "product:2")},
		{"empty body", entry(nil, cachestore.Other, time.Minute)},
		{"4 MB random body", entry(noise, cachestore.Catalog, time.Minute)},
		{"10 MB catalog", entry(catalog, cachestore.Catalog, time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			start := time.Now()
			if err := a.PutEntry(ctx, tc.name, tc.ent); err != nil {
				t.Fatalf("PutEntry: %v", err)
			}
			put := time.Since(start)
			start = time.Now()
			got, err := b.GetEntry(ctx, tc.name)
			if err != nil {
				t.Fatalf("GetEntry on another node: %v", err)
			}
			t.Logf("%d bytes (%d in Redis): put %v, get %v", len(tc.ent.Body), a.rdb.StrLen(ctx, a.key("e", tc.name)).Val(), put.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			if !bytes.Equal(got.Body, tc.ent.Body) {
				t.Fatal("body differs")
			}
			got.Body, tc.ent.Body = nil, nil
			if !reflect.DeepEqual(got, tc.ent) {
				t.Fatalf("entry differs:\n got %+v\nwant %+v", got, tc.ent)
			}
		})
	}
	if _, err := b.GetEntry(context.Background(), "absent"); !errors.Is(err, cachestore.ErrNotFound) {
		t.Fatalf("GetEntry of an absent key: %v; want ErrNotFound", err)
	}
}

func TestTierCorruptValueIsAMiss(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	rdb := r.client()
	defer rdb.Close()
	ctx := context.Background()
	if err := a.PutEntry(ctx, "k", entry([]byte(`{"a":1}`), cachestore.Other, time.Minute)); err != nil {
		t.Fatal(err)
	}
	good, err := rdb.Get(ctx, "t:e:k").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	for _, tc := range []struct {
		name string
		val  []byte
	}{
		{"not zstd", []byte("garbage")},
		{"one bit flipped", flipped},
		{"zstd of garbage", zenc().EncodeAll([]byte("garbage, not an entry"), nil)},
		{"truncated", good[:len(good)-3]},
		{"large and corrupt", append(zenc().EncodeAll(make([]byte, 1<<20), nil), bytes.Repeat([]byte{1}, inlineMax)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := rdb.Set(ctx, "t:e:k", tc.val, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := a.GetEntry(ctx, "k"); !errors.Is(err, cachestore.ErrNotFound) {
				t.Fatalf("GetEntry of a corrupt value: %v; want ErrNotFound", err)
			}
			if n := rdb.Exists(ctx, "t:e:k").Val(); n != 0 {
				t.Fatal("the corrupt value was not deleted")
			}
		})
	}
}

func TestTierTTLFollowsStaleUntil(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	rdb := r.client()
	defer rdb.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		staleIn  time.Duration
		never    bool
		min, max time.Duration
	}{
		{"an hour", time.Hour, false, time.Hour - 2*time.Second, time.Hour},
		{"below a second", 100 * time.Millisecond, false, 900 * time.Millisecond, time.Second},
		{"never stale", 0, true, maxTierTTL - 2*time.Second, maxTierTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ent := entry([]byte("x"), cachestore.Availability, tc.staleIn, "product:9")
			if tc.never {
				ent.StaleUntil = time.Time{}
			}
			if err := a.PutEntry(ctx, tc.name, ent); err != nil {
				t.Fatal(err)
			}
			ttl := rdb.PTTL(ctx, "t:e:"+tc.name).Val()
			if ttl < tc.min || ttl > tc.max {
				t.Fatalf("entry TTL %v; want in [%v, %v]", ttl, tc.min, tc.max)
			}
			if tagTTL := rdb.PTTL(ctx, "t:t:product:9").Val(); tagTTL < ttl-10*time.Millisecond {
				t.Fatalf("tag set TTL %v is shorter than the entry's %v", tagTTL, ttl)
			}
		})
	}
	// An entry read after its StaleUntil (kept the 1 s minimum) is a miss.
	if err := a.PutEntry(ctx, "short", entry([]byte("x"), cachestore.Other, 50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if _, err := a.GetEntry(ctx, "short"); !errors.Is(err, cachestore.ErrNotFound) {
		t.Fatalf("GetEntry past StaleUntil: %v; want ErrNotFound", err)
	}
}

func TestTierInvalidateAndPurge(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	ctx := context.Background()
	put := func() {
		t.Helper()
		for k, e := range map[string]*cachestore.Entry{
			"x": entry([]byte("x"), cachestore.Availability, time.Minute, "product:1"),
			"y": entry([]byte("y"), cachestore.Availability, time.Minute, "product:2"),
			"z": entry([]byte("z"), cachestore.Availability, time.Minute, "product:2", "product:1"),
			"w": entry([]byte("w"), cachestore.Catalog, time.Minute),
			"v": entry([]byte("v"), cachestore.Other, time.Minute),
		} {
			if err := a.PutEntry(ctx, k, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	present := func() string {
		s := ""
		for _, k := range []string{"v", "w", "x", "y", "z"} {
			if _, err := b.GetEntry(ctx, k); err == nil {
				s += k
			} else if !errors.Is(err, cachestore.ErrNotFound) {
				t.Fatal(err)
			}
		}
		return s
	}
	for _, tc := range []struct {
		name string
		drop func() error
		want string
	}{
		{"invalidate one tag", func() error { return b.Invalidate(ctx, []string{"product:1"}) }, "vwy"},
		{"invalidate an unknown tag", func() error { return b.Invalidate(ctx, []string{"product:404"}) }, "vwxyz"},
		{"purge a class", func() error { return b.Purge(ctx, edge.Event{Kind: edge.EventPurge, Class: "availability"}) }, "vw"},
		{"purge a key", func() error { return b.Purge(ctx, edge.Event{Kind: edge.EventPurge, Key: "w"}) }, "vxyz"},
		{"soft purge of tags", func() error {
			return b.Purge(ctx, edge.Event{Kind: edge.EventPurge, Tags: []string{"product:2"}, Soft: true})
		}, "vwx"},
		{"purge everything", func() error { return b.Purge(ctx, edge.Event{Kind: edge.EventPurge}) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put()
			if err := tc.drop(); err != nil {
				t.Fatal(err)
			}
			if got := present(); got != tc.want {
				t.Fatalf("left %q; want %q", got, tc.want)
			}
		})
	}
	put()
	if err := b.Purge(ctx, edge.Event{Kind: edge.EventPurge, Class: "bogus"}); err == nil {
		t.Fatal("Purge of an unknown class: no error")
	}
	if got := present(); got != "vwxyz" {
		t.Fatalf("a refused purge changed the tier: left %q", got)
	}
}

// BenchmarkSharedTierGet measures a shared-tier hit (what a node without
// the entry in its local tier pays): one GetEntry from a real redis-server
// on loopback, decompression and checksum included. p50 and p99 are
// reported as metrics.
func BenchmarkSharedTierGet(b *testing.B) {
	r := startRedisB(b)
	c := stateNode(b, r, "bench", "")
	for _, size := range []int{2 << 10, 1 << 20} {
		var body []byte
		for i := 0; len(body) < size; i++ {
			body = fmt.Appendf(body, `{"performanceId":%d,"seats":%d},`, 10228231108335+i*7919, i%977)
		}
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			ctx := context.Background()
			if err := c.PutEntry(ctx, "bench", entry(body, cachestore.Availability, time.Hour, "product:1")); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, err := c.GetEntry(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
