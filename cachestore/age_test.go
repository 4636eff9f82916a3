package cachestore

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestClassAges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		if a, err := s.ClassAges(Catalog); err != nil || a != (Ages{}) {
			t.Fatalf("empty store: %+v, %v", a, err)
		}
		t0 := time.Now()
		mustPut(t, s, "c1", entryAt(t0, Catalog, `{"a":1}`))
		time.Sleep(10 * time.Minute)
		mustPut(t, s, "c2", entryAt(time.Now(), Catalog, `{"a":2}`))
		mustPut(t, s, "v1", entryAt(t0.Add(-30*time.Minute), Availability, `{}`))
		a, err := s.ClassAges(Catalog)
		if err != nil {
			t.Fatal(err)
		}
		if a.Entries != 2 || !a.Oldest.Equal(t0) || !a.Newest.Equal(t0.Add(10*time.Minute)) {
			t.Fatalf("catalog ages %+v", a)
		}
		// entryAt's entries are usable for an hour: past that they are not served, so not counted.
		time.Sleep(55 * time.Minute)
		if a, err = s.ClassAges(Catalog); err != nil || a.Entries != 1 || !a.Oldest.Equal(a.Newest) {
			t.Fatalf("after c1's StaleUntil: %+v, %v", a, err)
		}
	})
}
