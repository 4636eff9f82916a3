package cachestore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// openTest opens a store in a fresh temporary directory unless opts.Dir is set, and closes it
// when the test ends.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// entryAt returns an entry stored at now, fresh for a minute and usable for an hour.
func entryAt(now time.Time, class Class, body string, tags ...string) *Entry {
	return &Entry{
		Status:     200,
		Header:     map[string][]string{"Content-Type": {"application/json"}},
		Body:       []byte(body),
		StoredAt:   now,
		FreshUntil: now.Add(time.Minute),
		StaleUntil: now.Add(time.Hour),
		Class:      class,
		Tags:       tags,
	}
}

func mustPut(t testing.TB, s *Store, key string, e *Entry) {
	t.Helper()
	if err := s.Put(key, e); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func assertNotFound(t testing.TB, s *Store, key string) {
	t.Helper()
	if e, err := s.Get(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%q) = %v, %v; want ErrNotFound", key, e, err)
	}
}

// rawKeys lists the Badger keys under prefix, bypassing the store.
func rawKeys(t testing.TB, s *Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, string(it.Item().KeyCopy(nil)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPutGetRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		want := fullEntry()
		want.StoredAt = time.Now()
		want.StaleUntil = time.Now().Add(24 * time.Hour)
		mustPut(t, s, "k", want)
		got, err := s.Get("k")
		if err != nil {
			t.Fatal(err)
		}
		assertSameEntry(t, want, got)
		if st := s.Stats(); st.Entries != 1 || st.Bytes != int64(len(encodeEntry(want))) {
			t.Errorf("stats after one Put: %+v", st)
		}
		assertNotFound(t, s, "missing")
	})
}

// TestPutDefaultsStoredAtAndKeepsTheBody: a zero StoredAt is stored as now without changing the
// caller's entry, and the next reader is served the body that was put, not a copy of it (a
// 10 MB catalog is held once from its miss on).
func TestPutDefaultsStoredAtAndKeepsTheBody(t *testing.T) {
	for _, size := range []int{4, bodyFileMin} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				s := openTest(t, Options{Dir: dir})
				e := entryAt(time.Time{}, Other, strings.Repeat("b", size))
				e.StaleUntil = time.Time{} // never
				mustPut(t, s, "k", e)
				got, err := s.Get("k")
				if err != nil {
					t.Fatal(err)
				}
				if !got.StoredAt.Equal(time.Now()) || !e.StoredAt.IsZero() {
					t.Errorf("got StoredAt %v; caller's StoredAt %v", got.StoredAt, e.StoredAt)
				}
				if &got.Body[0] != &e.Body[0] {
					t.Error("Get after Put returned a copy of the body")
				}
				s.Close()
				s = openTest(t, Options{Dir: dir})
				got, err = s.Get("k")
				if err != nil || string(got.Body) != string(e.Body) {
					t.Errorf("after reopening: %d bytes, %v", len(got.Body), err)
				}
			})
		})
	}
}

func TestPutRejectsBadInput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		now := time.Now()
		stale := entryAt(now, Other, "x")
		stale.StaleUntil = now
		for name, tc := range map[string]struct {
			key string
			e   *Entry
		}{
			"empty key":   {"", entryAt(now, Other, "x")},
			"nil entry":   {"k", nil},
			"no class":    {"k", entryAt(now, 0, "x")},
			"bad status":  {"k", &Entry{Status: 1000, Class: Other}},
			"empty tag":   {"k", entryAt(now, Other, "x", "")},
			"NUL in tag":  {"k", entryAt(now, Other, "x", "a\x00b")},
			"stale entry": {"k", stale},
		} {
			if err := s.Put(tc.key, tc.e); err == nil || !strings.HasPrefix(err.Error(), "storing entry") {
				t.Errorf("%s: Put error = %v", name, err)
			}
		}
		if st := s.Stats(); st.Entries != 0 {
			t.Errorf("entries after refused Puts: %d", st.Entries)
		}
	})
}

func TestPersistsAcrossReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		want := entryAt(time.Now(), Catalog, `{"big":"`+strings.Repeat("x", 200<<10)+`"}`, "product:1")
		mustPut(t, s, "catalog", want)
		mustPut(t, s, "other", entryAt(time.Now(), Other, "{}"))
		if err := s.PutMeta("generation", []byte("7")); err != nil {
			t.Fatal(err)
		}
		before := s.Stats()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = openTest(t, Options{Dir: dir})
		if st := s.Stats(); st.Entries != before.Entries || st.Bytes != before.Bytes {
			t.Errorf("counters after reopen: %d entries %d bytes, want %d, %d",
				st.Entries, st.Bytes, before.Entries, before.Bytes)
		}
		got, err := s.Get("catalog")
		if err != nil {
			t.Fatal(err)
		}
		assertSameEntry(t, want, got)
		if st := s.Stats(); st.DiskHits != 1 || st.MemoryHits != 0 {
			t.Errorf("first Get after reopen should be a disk hit: %+v", st)
		}
		if v, err := s.GetMeta("generation"); err != nil || string(v) != "7" {
			t.Errorf("GetMeta after reopen = %q, %v", v, err)
		}
		if n, err := s.PurgeTag("product:1"); err != nil || n != 1 {
			t.Errorf("PurgeTag after reopen = %d, %v", n, err)
		}
	})
}

func TestCorruptEntryIsDeletedNotServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		mustPut(t, s, "k", entryAt(time.Now(), Availability, `{"seats":12}`, "product:1"))
		mustPut(t, s, "ok", entryAt(time.Now(), Availability, `{"seats":3}`))
		// Flip one byte of the stored value behind the store's back.
		err := s.db.Update(func(txn *badger.Txn) error {
			item, err := txn.Get(entryKey("k"))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			v[len(v)/2] ^= 0x20
			return txn.Set(entryKey("k"), v)
		})
		if err != nil {
			t.Fatal(err)
		}
		s.mem.clear() // read from disk

		assertNotFound(t, s, "k")
		st := s.Stats()
		if st.Corrupt != 1 || st.Misses != 1 || st.Entries != 1 {
			t.Errorf("stats after reading a corrupt entry: %+v", st)
		}
		for _, p := range []string{"e/k", "i/k", "t/"} {
			if keys := rawKeys(t, s, p); len(keys) != 0 {
				t.Errorf("keys left under %q: %q", p, keys)
			}
		}
		assertNotFound(t, s, "k")
		if st := s.Stats(); st.Corrupt != 1 {
			t.Errorf("corrupt counted again after deletion: %d", st.Corrupt)
		}
		if _, err := s.Get("ok"); err != nil {
			t.Errorf("the other entry: %v", err)
		}
	})
}

func TestCorruptIndexRecordIsDroppedAtOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "k", entryAt(time.Now(), Other, "{}"))
		mustPut(t, s, "ok", entryAt(time.Now(), Other, "{}"))
		if err := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set(indexKey("k"), []byte("garbage"))
		}); err != nil {
			t.Fatal(err)
		}
		s.Close()

		s = openTest(t, Options{Dir: dir})
		if st := s.Stats(); st.Corrupt != 1 || st.Entries != 1 {
			t.Errorf("stats after reopen: %+v", st)
		}
		assertNotFound(t, s, "k")
		if keys := rawKeys(t, s, "e/"); !slices.Equal(keys, []string{"e/ok"}) {
			t.Errorf("entries left: %q", keys)
		}
	})
}

func TestPurges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		now := time.Now()
		mustPut(t, s, "cat1", entryAt(now, Catalog, "{}", "product:1"))
		mustPut(t, s, "cat2", entryAt(now, Catalog, "{}", "product:2"))
		mustPut(t, s, "av1", entryAt(now, Availability, "{}", "product:1", "product:2"))
		mustPut(t, s, "av2", entryAt(now, Availability, "{}", "product:2"))
		mustPut(t, s, "other", entryAt(now, Other, "{}"))
		if err := s.PutMeta("setup", []byte(`{"lastUpdate":1}`)); err != nil {
			t.Fatal(err)
		}

		if n, err := s.PurgeTag("product:1"); err != nil || n != 2 {
			t.Fatalf("PurgeTag(product:1) = %d, %v; want 2", n, err)
		}
		assertNotFound(t, s, "cat1")
		assertNotFound(t, s, "av1")
		want := []string{"t/product:2\x00av2", "t/product:2\x00cat2"}
		if keys := rawKeys(t, s, "t/"); !slices.Equal(keys, want) {
			t.Errorf("tag index after PurgeTag: %q, want %q", keys, want)
		}
		if n, err := s.PurgeTag("product:1"); err != nil || n != 0 {
			t.Errorf("second PurgeTag = %d, %v", n, err)
		}

		if n, err := s.PurgeClass(Availability); err != nil || n != 1 {
			t.Fatalf("PurgeClass(availability) = %d, %v; want 1", n, err)
		}
		assertNotFound(t, s, "av2")
		if _, err := s.Get("cat2"); err != nil {
			t.Fatalf("catalog entry after purging availability: %v", err)
		}
		if keys := rawKeys(t, s, "t/"); !slices.Equal(keys, []string{"t/product:2\x00cat2"}) {
			t.Errorf("tag index after PurgeClass: %q", keys)
		}

		if n, err := s.PurgeAll(); err != nil || n != 2 {
			t.Fatalf("PurgeAll = %d, %v; want 2", n, err)
		}
		for _, p := range []string{"e/", "i/", "t/"} {
			if keys := rawKeys(t, s, p); len(keys) != 0 {
				t.Errorf("keys left under %q after PurgeAll: %q", p, keys)
			}
		}
		if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
			t.Errorf("stats after PurgeAll: %+v", st)
		}
		if v, err := s.GetMeta("setup"); err != nil || string(v) != `{"lastUpdate":1}` {
			t.Errorf("meta after PurgeAll = %q, %v", v, err)
		}
		if _, err := s.GetMeta("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing meta: %v", err)
		}
	})
}

func TestPutReplacesTags(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, "{}", "product:1", "product:2"))
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, `{"v":2}`, "product:2", "product:3", "product:3"))
		want := []string{"t/product:2\x00k", "t/product:3\x00k"}
		if keys := rawKeys(t, s, "t/"); !slices.Equal(keys, want) {
			t.Errorf("tag index: %q, want %q", keys, want)
		}
		if n, _ := s.PurgeTag("product:1"); n != 0 {
			t.Errorf("PurgeTag of a dropped tag removed %d entries", n)
		}
		if st := s.Stats(); st.Entries != 1 || st.Bytes != int64(len(encodeEntry(entryAt(time.Now(), Catalog, `{"v":2}`, "product:2", "product:3", "product:3")))) {
			t.Errorf("stats after replacing: %+v", st)
		}
	})
}

func TestDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		mustPut(t, s, "k", entryAt(time.Now(), Other, "{}", "a"))
		if err := s.Delete("k"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete("k"); err != nil {
			t.Fatalf("deleting a missing key: %v", err)
		}
		assertNotFound(t, s, "k")
		for _, p := range []string{prefixEntry, prefixIndex, prefixTag} {
			if keys := rawKeys(t, s, p); len(keys) != 0 {
				t.Errorf("keys left: %q", keys)
			}
		}
		if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
			t.Errorf("stats: %+v", st)
		}
	})
}

// sizedKeys returns n keys of equal length, so that equal entries have equal encoded sizes.
func sizedKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	return keys
}

func TestEvictionOldestStoredAtFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := time.Now()
		body := strings.Repeat("x", 1000)
		size := int64(len(encodeEntry(entryAt(base, Other, body))))
		s := openTest(t, Options{MaxBytes: 10 * size})

		// Written in an order unrelated to StoredAt: eviction must follow StoredAt.
		keys := sizedKeys(11)
		age := []int{5, 2, 9, 0, 7, 1, 8, 3, 6, 4} // k03 is the oldest, then k05
		for i, a := range age {
			mustPut(t, s, keys[i], entryAt(base.Add(time.Duration(a)*time.Second), Other, body))
		}
		if st := s.Stats(); st.Entries != 10 || st.Bytes != 10*size || st.Evictions != 0 {
			t.Fatalf("at the bound: %+v", st)
		}
		// The 11th would exceed the bound: evict down to 90% including it, i.e. two entries.
		mustPut(t, s, keys[10], entryAt(base.Add(time.Minute), Other, body))
		st := s.Stats()
		if st.Entries != 9 || st.Bytes != 9*size || st.Evictions != 2 {
			t.Errorf("after eviction: %+v", st)
		}
		assertNotFound(t, s, "k03")
		assertNotFound(t, s, "k05")
		for _, k := range []string{"k00", "k01", "k02", "k04", "k06", "k07", "k08", "k09", "k10"} {
			if _, err := s.Get(k); err != nil {
				t.Errorf("Get(%s): %v", k, err)
			}
		}

		// Replacing an entry with one of the same size needs no room.
		mustPut(t, s, "k10", entryAt(base.Add(2*time.Minute), Other, body))
		if st := s.Stats(); st.Evictions != 2 || st.Entries != 9 {
			t.Errorf("after replacing: %+v", st)
		}
	})
}

func TestEvictionPrefersExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := time.Now()
		body := strings.Repeat("x", 1000)
		size := int64(len(encodeEntry(entryAt(base, Other, body))))
		// No sweep within the test's hour: eviction itself must find the stale entry.
		s := openTest(t, Options{MaxBytes: 4 * size, GCInterval: 2 * time.Hour})
		keys := sizedKeys(5)
		for i := range 3 {
			mustPut(t, s, keys[i], entryAt(base.Add(time.Duration(i)*time.Second), Other, body))
		}
		short := entryAt(base.Add(10*time.Second), Other, body) // the newest, but it expires first
		short.StaleUntil = base.Add(30 * time.Minute)
		mustPut(t, s, keys[3], short)
		// k03 is stale, the others are not yet, and Badger's TTL backstop (ttlMargin later) has
		// not removed k03 yet.
		time.Sleep(30*time.Minute + ttlMargin/2)
		mustPut(t, s, keys[4], entryAt(time.Now(), Other, body))
		// Down to 90% of 4 entries with the new one: two go, the stale one first, then the oldest.
		// By StoredAt alone, k00 and k01 would have gone.
		want := []string{"e/k01", "e/k02", "e/k04"}
		if keys := rawKeys(t, s, "e/"); !slices.Equal(keys, want) {
			t.Errorf("entries after eviction: %q, want %q", keys, want)
		}
		if st := s.Stats(); st.Evictions != 2 {
			t.Errorf("evictions: %d", st.Evictions)
		}
	})
}

func TestEntryLargerThanBoundIsRefused(t *testing.T) {
	s := openTest(t, Options{MaxBytes: 4096})
	mustPut(t, s, "small", entryAt(time.Now(), Other, "{}"))
	err := s.Put("big", entryAt(time.Now(), Other, strings.Repeat("x", 5000)))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("Put of a too large entry: %v", err)
	}
	assertNotFound(t, s, "big")
	if _, err := s.Get("small"); err != nil {
		t.Errorf("refusing an entry evicted another: %v", err)
	}
}

func TestMemoryLayer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		now := time.Now()
		mustPut(t, s, "k", entryAt(now, Catalog, "v1", "product:1"))

		first, err := s.Get("k")
		if err != nil {
			t.Fatal(err)
		}
		second, _ := s.Get("k")
		if first != second {
			t.Fatal("repeated Gets returned different pointers")
		}
		if st := s.Stats(); st.DiskHits != 0 || st.MemoryHits != 2 || st.MemoryEntries != 1 {
			t.Errorf("stats: %+v", st)
		}
		s.mem.clear()
		fromDisk, err := s.Get("k")
		if err != nil || fromDisk == first {
			t.Fatalf("Get after clearing the memory layer: %v, same entry %t", err, fromDisk == first)
		}
		if again, _ := s.Get("k"); again != fromDisk {
			t.Fatal("an entry read from disk was not kept in the memory layer")
		}
		if st := s.Stats(); st.DiskHits != 1 || st.MemoryHits != 3 || st.MemoryEntries != 1 {
			t.Errorf("stats: %+v", st)
		}

		mustPut(t, s, "k", entryAt(now, Catalog, "v2", "product:1"))
		third, _ := s.Get("k")
		if third == first || string(third.Body) != "v2" {
			t.Fatalf("Get after Put returned the old entry (%q)", third.Body)
		}

		invalidations := map[string]func() error{
			"Delete":     func() error { return s.Delete("k") },
			"PurgeAll":   func() error { _, err := s.PurgeAll(); return err },
			"PurgeClass": func() error { _, err := s.PurgeClass(Catalog); return err },
			"PurgeTag":   func() error { _, err := s.PurgeTag("product:1"); return err },
		}
		for name, invalidate := range invalidations {
			mustPut(t, s, "k", entryAt(now, Catalog, "v", "product:1"))
			if _, err := s.Get("k"); err != nil {
				t.Fatal(err)
			}
			if e, _ := s.Get("k"); e == nil {
				t.Fatal("not cached")
			}
			if err := invalidate(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if e, err := s.Get("k"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after %s = %v, %v", name, e, err)
			}
			if st := s.Stats(); st.MemoryEntries != 0 {
				t.Errorf("memory layer after %s: %d entries", name, st.MemoryEntries)
			}
		}
	})
}

func TestMemoryLayerDisabled(t *testing.T) {
	s := openTest(t, Options{MemoryBytes: -1})
	mustPut(t, s, "k", entryAt(time.Now(), Other, "{}"))
	a, _ := s.Get("k")
	b, _ := s.Get("k")
	if a == nil || a == b {
		t.Fatal("with the memory layer disabled, each Get should decode its own entry")
	}
	if st := s.Stats(); st.DiskHits != 2 || st.MemoryHits != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestMemLayerBoundAndRaces(t *testing.T) {
	item := int64(1000)
	cost := item + 1 + memItemOverhead // one-byte keys
	m := newMemLayer(3 * cost)
	e := map[string]*Entry{"a": {}, "b": {}, "c": {}, "d": {}}
	for _, k := range []string{"a", "b", "c"} {
		_, seq := m.get(k)
		m.add(k, e[k], item, seq)
	}
	m.get("a") // a is now the most recent; b the least
	_, seq := m.get("d")
	m.add("d", e["d"], item, seq)
	if got, _ := m.get("b"); got != nil {
		t.Error("least recently used entry not evicted")
	}
	for _, k := range []string{"a", "c", "d"} {
		if got, _ := m.get(k); got != e[k] {
			t.Errorf("%s evicted", k)
		}
	}
	if n, used := m.stats(); n != 3 || used != 3*cost {
		t.Errorf("stats: %d entries, %d bytes", n, used)
	}

	// A read that started before an invalidation must not be cached.
	_, seq = m.get("x")
	m.remove("unrelated")
	m.add("x", &Entry{}, 10, seq)
	if got, _ := m.get("x"); got != nil {
		t.Error("cached an entry read before an invalidation")
	}
	// Too large for the layer: not cached, nothing evicted.
	_, seq = m.get("huge")
	m.add("huge", &Entry{}, 4*cost, seq)
	if got, _ := m.get("huge"); got != nil {
		t.Error("cached an entry larger than the layer")
	}
	if n, _ := m.stats(); n != 3 {
		t.Errorf("entries after refusing a huge one: %d", n)
	}
}

func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		now := time.Now()
		e := entryAt(now, Availability, "{}")
		e.StaleUntil = now.Add(10 * time.Second)
		mustPut(t, s, "cached", e)
		mustPut(t, s, "ondisk", e)
		mustPut(t, s, "long", entryAt(now, Availability, "{}"))
		if _, err := s.Get("cached"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		assertNotFound(t, s, "cached") // from the memory layer
		assertNotFound(t, s, "ondisk") // from disk
		var seen []string
		if err := s.Keys(Availability, func(k string, _ *Entry) bool { seen = append(seen, k); return true }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seen, []string{"long"}) {
			t.Errorf("Keys listed %q", seen)
		}
		if n, err := s.Sweep(); err != nil || n != 2 {
			t.Fatalf("Sweep = %d, %v; want 2", n, err)
		}
		if st := s.Stats(); st.Entries != 1 || st.Expired != 2 {
			t.Errorf("stats after sweep: %+v", st)
		}
		if keys := rawKeys(t, s, "e/"); !slices.Equal(keys, []string{"e/long"}) {
			t.Errorf("entries left: %q", keys)
		}
	})
}

func TestGCLoopSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{GCInterval: time.Millisecond})
		e := entryAt(time.Now(), Other, "{}")
		e.StaleUntil = time.Now().Add(time.Second)
		mustPut(t, s, "k", e)
		time.Sleep(time.Second)
		for deadline := time.Now().Add(10 * time.Second); s.Stats().Expired != 1; {
			if time.Now().After(deadline) {
				t.Fatalf("the GC loop did not sweep: %+v", s.Stats())
			}
			time.Sleep(time.Millisecond) // polling, bounded by the deadline
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBadgerTTLIsABackstop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		e := entryAt(time.Now(), Other, "{}", "a")
		e.StaleUntil = time.Now().Add(90*time.Second + time.Millisecond) // rounds up to 91 s
		mustPut(t, s, "k", e)
		noTTL := entryAt(time.Now(), Other, "{}")
		noTTL.StaleUntil = time.Time{}
		mustPut(t, s, "forever", noTTL)

		want := uint64(time.Now().Add(91*time.Second + ttlMargin).Unix())
		err := s.db.View(func(txn *badger.Txn) error {
			for _, k := range [][]byte{entryKey("k"), indexKey("k"), tagKey("a", "k")} {
				item, err := txn.Get(k)
				if err != nil {
					return err
				}
				if got := item.ExpiresAt(); got+2 < want || got > want+2 {
					t.Errorf("%q expires at %d, want about %d", k, got, want)
				}
			}
			item, err := txn.Get(entryKey("forever"))
			if err != nil {
				return err
			}
			if item.ExpiresAt() != 0 {
				t.Errorf("entry without StaleUntil has a TTL")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		now := time.Now()
		for _, k := range []string{"c3", "c1", "c2"} {
			mustPut(t, s, k, entryAt(now, Catalog, `{"key":"`+k+`"}`))
		}
		mustPut(t, s, "a1", entryAt(now, Availability, "{}"))
		s.mem.clear() // the entries put are there
		var seen []string
		err := s.Keys(Catalog, func(k string, e *Entry) bool {
			if string(e.Body) != `{"key":"`+k+`"}` {
				t.Errorf("%s: body %q", k, e.Body)
			}
			// The callback may use the store.
			if k == "c2" {
				if err := s.Delete("c3"); err != nil {
					t.Error(err)
				}
			}
			seen = append(seen, k)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seen, []string{"c1", "c2"}) {
			t.Errorf("Keys(catalog) = %q", seen)
		}
		seen = nil
		s.Keys(Catalog, func(k string, _ *Entry) bool { seen = append(seen, k); return false })
		if len(seen) != 1 {
			t.Errorf("Keys did not stop: %q", seen)
		}
		if st := s.Stats(); st.MemoryEntries != 0 {
			t.Errorf("Keys filled the memory layer: %d entries", st.MemoryEntries)
		}
	})
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "k", entryAt(time.Now(), Other, "{}"))
	s.Get("k")
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get("k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := s.Put("k", entryAt(time.Now(), Other, "{}")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if _, err := s.PurgeAll(); !errors.Is(err, ErrClosed) {
		t.Errorf("PurgeAll after Close: %v", err)
	}
	if _, err := s.GetMeta("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("GetMeta after Close: %v", err)
	}
}

func TestOpenSameDirTwice(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Another spelling of the same directory.
	_, err = Open(Options{Dir: filepath.Join(dir, "sub", "..")})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "lock") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

// TestOpenLockedByOtherProcess holds Badger's flock directly, as another process would.
func TestOpenLockedByOtherProcess(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("Open of a locked directory: %v", err)
	}
}

func TestOpenRequiresDir(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
}

// TestConcurrentUse mixes every operation from many goroutines (run it with -race), then checks
// that no key ever served another key's body, that the memory layer holds nothing stale, and
// that the counters match the disk.
func TestConcurrentUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		body := strings.Repeat("x", 3000)
		size := int64(len(encodeEntry(entryAt(time.Now(), Other, "key00:"+body, "tag:0"))))
		s := openTest(t, Options{MaxBytes: 25 * size}) // evicts now and then
		keys := sizedKeys(40)
		var generation atomic.Uint64 // unique per Put, to recognise a stale cached entry

		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), 42))
				for i := range 300 {
					k := keys[r.IntN(len(keys))]
					switch op := r.IntN(20); {
					case op < 8:
						e := entryAt(time.Now().Add(time.Duration(i)*time.Millisecond), Class(1+r.IntN(3)),
							k+":"+body, fmt.Sprintf("tag:%d", r.IntN(5)))
						e.Generation = generation.Add(1)
						if err := s.Put(k, e); err != nil {
							t.Error(err)
							return
						}
					case op < 16:
						e, err := s.Get(k)
						if err == nil && !strings.HasPrefix(string(e.Body), k+":") {
							t.Errorf("Get(%s) returned %.10q", k, e.Body)
							return
						}
						if err != nil && !errors.Is(err, ErrNotFound) {
							t.Error(err)
							return
						}
					case op == 16:
						if err := s.Delete(k); err != nil {
							t.Error(err)
						}
					case op == 17:
						if _, err := s.PurgeTag(fmt.Sprintf("tag:%d", r.IntN(5))); err != nil {
							t.Error(err)
						}
					case op == 18:
						if _, err := s.PurgeClass(Class(1 + r.IntN(3))); err != nil {
							t.Error(err)
						}
					default:
						err := s.Keys(Class(1+r.IntN(3)), func(k string, e *Entry) bool {
							return strings.HasPrefix(string(e.Body), k+":")
						})
						if err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		wg.Wait()

		for _, k := range keys {
			fromMemory, err := s.Get(k)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			fromDisk, _, err2 := s.load(k)
			if err != nil || err2 != nil {
				t.Fatalf("%s: %v / %v", k, err, err2)
			}
			if fromMemory.Generation != fromDisk.Generation {
				t.Errorf("%s: memory layer holds a stale entry", k)
			}
		}
		st := s.Stats()
		if st.Bytes > st.MaxBytes {
			t.Errorf("over the bound: %d > %d", st.Bytes, st.MaxBytes)
		}
		if _, err := s.Sweep(); err != nil { // recomputes the counters from disk
			t.Fatal(err)
		}
		if st2 := s.Stats(); st2.Entries != st.Entries || st2.Bytes != st.Bytes {
			t.Errorf("counters drifted: %d entries, %d bytes; disk says %d, %d",
				st.Entries, st.Bytes, st2.Entries, st2.Bytes)
		}
		// Every tag index key points to an entry that carries the tag.
		for _, tk := range rawKeys(t, s, "t/") {
			tag, key, _ := strings.Cut(strings.TrimPrefix(tk, "t/"), "\x00")
			rec, ok, err := s.readIndex(key)
			if err != nil || !ok || !slices.Contains(rec.Tags, tag) {
				t.Errorf("orphan tag index key %q", tk)
			}
		}
		if n := len(rawKeys(t, s, "e/")); int64(n) != st.Entries {
			t.Errorf("%d entries on disk, %d counted", n, st.Entries)
		}
	})
}

func TestValueLogGCRuns(t *testing.T) {
	s := openTest(t, Options{})
	for i := range 5 {
		mustPut(t, s, "big", entryAt(time.Now(), Catalog, strings.Repeat(fmt.Sprint(i), 1<<20)))
	}
	s.runValueLogGC() // returns once Badger has nothing (more) to rewrite
	if _, err := s.Get("big"); err != nil {
		t.Fatal(err)
	}
}

// TestPutTooLargeForMemoryDropsTheOldEntry: an entry too large for the memory layer replaces the
// smaller one cached there, rather than leave the old one served.
func TestPutTooLargeForMemoryDropsTheOldEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{MemoryBytes: 4 << 10})
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, "small"))
		if e, err := s.Get("k"); err != nil || string(e.Body) != "small" {
			t.Fatalf("Get = %v, %v", e, err)
		}
		large := strings.Repeat("L", 8<<10)
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
		if e, err := s.Get("k"); err != nil || string(e.Body) != large {
			t.Fatalf("Get after the large Put: %v", err)
		}
		if st := s.Stats(); st.MemoryEntries != 0 || st.DiskHits != 1 {
			t.Errorf("stats: %+v", st)
		}
	})
}
