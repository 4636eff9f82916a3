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
	"github.com/s360edge/s360edge/s360"
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

// putNow stores ent as the answer of a call that begins now.
func putNow(ctx context.Context, c *Cluster, key string, ent *cachestore.Entry) error {
	mark, err := c.Mark(ctx)
	if err != nil {
		return err
	}
	return c.PutEntry(ctx, key, ent, mark)
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
			if err := putNow(ctx, a, tc.name, tc.ent); err != nil {
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
	if err := putNow(ctx, a, "k", entry([]byte(`{"a":1}`), cachestore.Other, time.Minute)); err != nil {
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
			if err := putNow(ctx, a, tc.name, ent); err != nil {
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
	if err := putNow(ctx, a, "short", entry([]byte("x"), cachestore.Other, 50*time.Millisecond)); err != nil {
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
			if err := putNow(ctx, a, k, e); err != nil {
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
			if err := putNow(ctx, c, "bench", entry(body, cachestore.Availability, time.Hour, "product:1")); err != nil {
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

// An availability answer asked for before an invalidation of what it tells
// about, and stored after it, must not reach the other nodes as fresh:
// PutEntry with the call's mark refuses it.
func TestTierPutAfterAnInvalidation(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "") // the poller, or an operator's node
	b := stateNode(t, r, "b", "") // the node whose call is out
	ctx := context.Background()
	invalidate := func(tags ...string) func() error {
		return func() error { return a.Invalidate(ctx, tags) }
	}
	purge := func(ev edge.Event) func() error {
		return func() error { ev.Kind = edge.EventPurge; return a.Purge(ctx, ev) }
	}
	avail := cachestore.Availability
	for _, tc := range []struct {
		name    string
		class   cachestore.Class
		tags    []string
		before  func() error // runs before the call's mark
		during  func() error // runs while the call is out
		age     time.Duration
		refused bool
	}{
		// First, while no invalidation has run yet in this Redis.
		{"no invalidation, a call of 59 minutes", avail, []string{"product:59"}, nil, nil, markLife - time.Minute, false},
		{"its tag invalidated during the call", avail, []string{"product:1"}, nil, invalidate("product:1"), 0, true},
		{"one of its tags invalidated", avail, []string{"product:1", "performance:12"}, nil, invalidate("performance:12", "product:9"), 0, true},
		{"the untagged tag invalidated", avail, []string{s360.UntaggedTag}, nil, invalidate(s360.UntaggedTag, "product:9"), 0, true},
		{"another tag invalidated", avail, []string{"product:1"}, nil, invalidate("product:2"), 0, false},
		{"its tag invalidated before the call", avail, []string{"product:1"}, invalidate("product:1"), nil, 0, false},
		{"its tag purged softly", avail, []string{"product:1"}, nil, purge(edge.Event{Tags: []string{"product:1"}, Soft: true}), 0, true},
		{"the availability class purged", avail, []string{"product:1"}, nil, purge(edge.Event{Class: "availability"}), 0, true},
		{"everything purged", avail, []string{"product:1"}, nil, purge(edge.Event{}), 0, true},
		{"the catalog class purged", avail, []string{"product:1"}, nil, purge(edge.Event{Class: "catalog"}), 0, false},
		// An operator's purge of the key itself (the table's name is the key).
		{"its key purged", avail, []string{"product:1"}, nil, purge(edge.Event{Key: "its key purged"}), 0, true},
		{"its key purged softly", avail, []string{"product:1"}, nil, purge(edge.Event{Key: "its key purged softly", Soft: true}), 0, true},
		{"another key purged", avail, []string{"product:1"}, nil, purge(edge.Event{Key: "another"}), 0, false},
		{"its key purged before the call", avail, []string{"product:1"}, purge(edge.Event{Key: "its key purged before the call"}), nil, 0, false},
		// The marks set since may have expired: it cannot be judged.
		{"a mark older than the marks' life", avail, []string{"product:61"}, nil, nil, markLife + time.Second, true},
		// A catalog answer is refused after a purge of it too (a setup
		// change is the generation's business), not after another's.
		{"a catalog entry after everything was purged", cachestore.Catalog, nil, nil, purge(edge.Event{}), 0, true},
		{"a catalog entry after everything was purged softly", cachestore.Catalog, nil, nil, purge(edge.Event{Soft: true}), 0, true},
		{"a catalog entry after the catalog class was purged", cachestore.Catalog, nil, nil, purge(edge.Event{Class: "catalog", Soft: true}), 0, true},
		{"a catalog entry after its key was purged", cachestore.Catalog, nil, nil, purge(edge.Event{Key: "a catalog entry after its key was purged"}), 0, true},
		{"a catalog entry after the availability class was purged", cachestore.Catalog, nil, nil, purge(edge.Event{Class: "availability"}), 0, false},
		{"a catalog entry after an invalidation", cachestore.Catalog, nil, nil, invalidate("product:1", s360.UntaggedTag), 0, false},
		{"a catalog entry after another key was purged", cachestore.Catalog, nil, nil, purge(edge.Event{Key: "another"}), 0, false},
		{"a catalog entry after the catalog class was purged before the call", cachestore.Catalog, nil, purge(edge.Event{Class: "catalog"}), nil, 0, false},
		{"another class's entry after everything was purged", cachestore.Other, nil, nil, purge(edge.Event{}), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				if err := tc.before(); err != nil {
					t.Fatal(err)
				}
			}
			mark, err := b.Mark(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.during != nil {
				if err := tc.during(); err != nil {
					t.Fatal(err)
				}
			}
			ent := entry([]byte(`{"seats":10}`), tc.class, time.Hour, tc.tags...)
			err = b.PutEntry(ctx, tc.name, ent, mark-tc.age.Microseconds())
			if tc.refused != errors.Is(err, edge.ErrInvalidated) || !tc.refused && err != nil {
				t.Fatalf("PutEntry = %v; want refused %v", err, tc.refused)
			}
			_, err = a.GetEntry(ctx, tc.name)
			if stored := err == nil; stored == tc.refused {
				t.Fatalf("another node's GetEntry after the put: %v; want stored %v", err, !tc.refused)
			}
		})
	}

	t.Run("mark unknown", func(t *testing.T) {
		err := b.PutEntry(ctx, "unknown", entry([]byte(`{"seats":10}`), avail, time.Hour, "product:5"), 0)
		if !errors.Is(err, edge.ErrInvalidated) {
			t.Fatalf("PutEntry with mark 0 = %v; want ErrInvalidated", err)
		}
	})

	// Refused, not stored stale: a newer answer, asked for after the
	// invalidation, stays.
	t.Run("a newer answer stays", func(t *testing.T) {
		old, _ := b.Mark(ctx)
		if err := a.Invalidate(ctx, []string{"product:3"}); err != nil {
			t.Fatal(err)
		}
		if err := putNow(ctx, a, "newer", entry([]byte(`{"seats":2}`), avail, time.Hour, "product:3")); err != nil {
			t.Fatal(err)
		}
		if err := b.PutEntry(ctx, "newer", entry([]byte(`{"seats":10}`), avail, time.Hour, "product:3"), old); !errors.Is(err, edge.ErrInvalidated) {
			t.Fatalf("the older answer's PutEntry = %v; want ErrInvalidated", err)
		}
		if got, err := b.GetEntry(ctx, "newer"); err != nil || string(got.Body) != `{"seats":2}` {
			t.Fatalf("GetEntry = %v, %v; want the newer answer", got, err)
		}
	})

	rdb := r.client()
	defer rdb.Close()
	if ttl := rdb.PTTL(ctx, "t:i:t:product:1").Val(); ttl <= markLife-time.Minute || ttl > markLife {
		t.Errorf("an invalidation mark's TTL is %v; want about %v", ttl, markLife)
	}
	if ttl := rdb.PTTL(ctx, "t:i:c:catalog").Val(); ttl <= markLife-time.Minute || ttl > markLife {
		t.Errorf("a catalog purge's mark TTL is %v; want about %v", ttl, markLife)
	}
}
