package cachestore

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestSoftPurges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		purge  func(s *Store) (int, error)
		marked []string
		mark   string // PurgedTag unless said
	}{
		{"all", (*Store).SoftPurgeAll, []string{"cat", "av1", "av2"}, ""},
		{"class", func(s *Store) (int, error) { return s.SoftPurgeClass(Availability) }, []string{"av1", "av2"}, ""},
		{"tag", func(s *Store) (int, error) { return s.SoftPurgeTag("product:1") }, []string{"av1"}, ""},
		{"key", func(s *Store) (int, error) { return s.SoftPurgeKey("cat") }, []string{"cat"}, ""},
		{"missing key", func(s *Store) (int, error) { return s.SoftPurgeKey("nope") }, nil, ""},
		{"invalidated tag", func(s *Store) (int, error) { return s.InvalidateTag("product:1") }, []string{"av1"}, InvalidatedTag},
	} {
		if tc.mark == "" {
			tc.mark = PurgedTag
		}
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := openTest(t, Options{})
				now := time.Now()
				mustPut(t, s, "cat", entryAt(now, Catalog, "c"))
				mustPut(t, s, "av1", entryAt(now, Availability, "a1", "product:1"))
				mustPut(t, s, "av2", entryAt(now, Availability, "a2", "product:2"))
				n, err := tc.purge(s)
				if err != nil || n != len(tc.marked) {
					t.Fatalf("purged %d, %v; want %d", n, err, len(tc.marked))
				}
				for _, k := range []string{"cat", "av1", "av2"} {
					e, err := s.Get(k)
					if err != nil {
						t.Fatalf("%s has no answer after a soft purge: %v", k, err)
					}
					purged := slices.Contains(e.Tags, tc.mark) && Marked(e.Tags) == tc.mark
					if want := slices.Contains(tc.marked, k); purged != want || (purged && e.FreshUntil.After(now)) {
						t.Fatalf("%s: purged %v (want %v), fresh until %s", k, purged, want, e.FreshUntil)
					}
					if purged && (!e.StoredAt.Equal(now) || len(e.Body) == 0) {
						t.Fatalf("%s lost its age or body: %+v", k, e)
					}
				}
				if n, err := tc.purge(s); err != nil || n != 0 {
					t.Fatalf("purging again marked %d (%v), want 0", n, err)
				}
				if len(tc.marked) > 0 {
					// The mark is a tag: a hard purge of it finds the entries.
					if n, err := s.PurgeTag(tc.mark); err != nil || n != len(tc.marked) {
						t.Fatalf("hard purge of the mark: %d, %v", n, err)
					}
				}
			})
		})
	}
}

// An entry purged then invalidated carries both marks; Marked says
// invalidated, the stronger: S-360 said the answer is outdated.
func TestInvalidatingAPurgedEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		mustPut(t, s, "av1", entryAt(time.Now(), Availability, "a1", "product:1"))
		if n, err := s.SoftPurgeKey("av1"); n != 1 || err != nil {
			t.Fatalf("SoftPurgeKey = %d, %v", n, err)
		}
		if n, err := s.InvalidateTag("product:1"); n != 1 || err != nil {
			t.Fatalf("InvalidateTag = %d, %v", n, err)
		}
		e, err := s.Get("av1")
		if err != nil || !slices.Contains(e.Tags, PurgedTag) || Marked(e.Tags) != InvalidatedTag {
			t.Fatalf("tags %v (err %v); want both marks, invalidated first", e.Tags, err)
		}
		if m := Marked([]string{"product:1"}); m != "" {
			t.Fatalf("Marked of an unmarked entry = %q", m)
		}
		if _, err := s.InvalidateTag(""); err == nil {
			t.Fatal("InvalidateTag of an empty tag: no error")
		}
	})
}
