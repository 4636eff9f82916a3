package cachestore

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// dirBytes sums the sizes of the files under dir: Badger's preallocated sparse files count in
// full, so this is at least what they occupy on disk.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func bodyFiles(t *testing.T, s *Store) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(s.Dir(), bodiesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestDiskStaysWithinBound churns distinct large and small entries through a small store and
// checks that the directory stays within MaxBytes + DiskOverhead after GC, and across reopens.
// On main's settings, 3 minutes of such churn grew an 8 MiB store to 1.9 GiB.
func TestDiskStaysWithinBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxBytes = 4 << 20
		dir := t.TempDir()
		large := strings.Repeat("x", 300<<10)
		small := strings.Repeat("y", 2<<10)
		next := 0
		for round := range 3 {
			s, err := Open(Options{Dir: dir, MaxBytes: maxBytes, MemoryBytes: -1})
			if err != nil {
				t.Fatal(err)
			}
			if got := dirBytes(t, dir); got > maxBytes+DiskOverhead {
				t.Errorf("round %d, after reopening: directory holds %d bytes, over %d + %d", round, got, maxBytes, DiskOverhead)
			}
			// 20 MiB of large entries (five times the bound) and 400 small ones per round.
			for range 70 {
				next++
				mustPut(t, s, fmt.Sprintf("catalog/%d", next), entryAt(time.Now(), Catalog, large))
				for j := range 6 {
					mustPut(t, s, fmt.Sprintf("avail/%d/%d", next, j), entryAt(time.Now(), Availability, small))
				}
				time.Sleep(time.Second)
			}
			// What the GC loop does, called directly.
			if _, err := s.Sweep(); err != nil {
				t.Fatal(err)
			}
			if err := s.removeOrphanBodies(); err != nil {
				t.Fatal(err)
			}
			s.runValueLogGC()

			st := s.Stats()
			if st.Bytes > maxBytes || st.Evictions == 0 {
				t.Errorf("round %d: stats %+v: want Bytes <= %d and evictions", round, st, maxBytes)
			}
			if got := dirBytes(t, dir); got > maxBytes+DiskOverhead {
				t.Errorf("round %d, after churn: directory holds %d bytes, over %d + %d", round, got, maxBytes, DiskOverhead)
			}
			// One body file per large entry still stored, none left behind by evictions.
			n := 0
			if err := s.Keys(Catalog, func(string, *Entry) bool { n++; return true }); err != nil {
				t.Fatal(err)
			}
			if files := bodyFiles(t, s); len(files) != n || n == 0 {
				t.Errorf("round %d: %d body files for %d large entries", round, len(files), n)
			}
			if e, err := s.Get(fmt.Sprintf("catalog/%d", next)); err != nil || string(e.Body) != large {
				t.Errorf("round %d: newest large entry: %v", round, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestLargeEntriesLiveInTheirOwnFiles(t *testing.T) {
	s := openTest(t, Options{MemoryBytes: -1})
	large := strings.Repeat("L", bodyFileMin)
	mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
	path := s.bodyPath("k")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("large entry has no body file: %v", err)
	}
	if e, err := s.Get("k"); err != nil || string(e.Body) != large {
		t.Fatalf("Get: %v", err)
	}

	t.Run("replaced by a small entry", func(t *testing.T) {
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, "{}"))
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("body file left after replacement by a small entry: %v", err)
		}
		if e, err := s.Get("k"); err != nil || string(e.Body) != "{}" {
			t.Errorf("Get: %v", err)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
		if err := s.Delete("k"); err != nil {
			t.Fatal(err)
		}
		if files := bodyFiles(t, s); len(files) != 0 {
			t.Errorf("body files left after Delete: %q", files)
		}
		assertNotFound(t, s, "k")
	})
	t.Run("purged", func(t *testing.T) {
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
		if _, err := s.PurgeAll(); err != nil {
			t.Fatal(err)
		}
		if files := bodyFiles(t, s); len(files) != 0 {
			t.Errorf("body files left after PurgeAll: %q", files)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		before := s.Stats().Corrupt
		assertNotFound(t, s, "k")
		if got := s.Stats().Corrupt; got != before+1 {
			t.Errorf("Corrupt = %d, want %d", got, before+1)
		}
		if files := bodyFiles(t, s); len(files) != 0 {
			t.Errorf("corrupt body file left: %q", files)
		}
	})
	t.Run("file missing", func(t *testing.T) {
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, large))
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		assertNotFound(t, s, "k")
	})
}

func TestOrphanBodyFilesAreRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		large := strings.Repeat("L", bodyFileMin)
		mustPut(t, s, "kept", entryAt(time.Now(), Catalog, large))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// What a crash between a file write and its commit leaves, or Badger's TTL backstop.
		bodies := filepath.Join(dir, bodiesDir)
		for _, name := range []string{"0123abcd", "0123abcd" + tmpSuffix} {
			if err := os.WriteFile(filepath.Join(bodies, name), []byte(large), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s = openTest(t, Options{Dir: dir})
		if files := bodyFiles(t, s); len(files) != 1 || files[0] != filepath.Base(s.bodyPath("kept")) {
			t.Errorf("body files after reopening: %q, want only the kept entry's", files)
		}
		if e, err := s.Get("kept"); err != nil || string(e.Body) != large {
			t.Errorf("kept entry: %v", err)
		}
	})
}

// TestConcurrentGetsShareOneDiskRead: readers arriving together for a large entry that is not
// in the memory layer read it from disk once, not once each (100 readers of a 10 MB catalog
// held 100 copies).
func TestConcurrentGetsShareOneDiskRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s := openTest(t, Options{Dir: dir})
		large := strings.Repeat("C", 1<<20)
		mustPut(t, s, "catalog", entryAt(time.Now(), Catalog, large))
		s.Close() // reopened, so that the entry is on disk only
		s = openTest(t, Options{Dir: dir})
		const readers = 50
		// Hold Close's side of closeMu so that the first disk read blocks until every reader is
		// waiting.
		s.closeMu.Lock()
		base := runtime.NumGoroutine()
		errs := make(chan error, readers)
		for range readers {
			go func() {
				e, err := s.Get("catalog")
				if err == nil && len(e.Body) != len(large) {
					err = fmt.Errorf("body of %d bytes", len(e.Body))
				}
				errs <- err
			}()
		}
		// Counted in turns, not time: the bubble's clock stands still while readers wait on a
		// mutex.
		for turns := 0; runtime.NumGoroutine() < base+readers; turns++ {
			if turns == 10_000_000 {
				s.closeMu.Unlock()
				t.Fatalf("readers did not start: %d goroutines, want %d", runtime.NumGoroutine(), base+readers)
			}
			runtime.Gosched()
		}
		s.closeMu.Unlock()
		for range readers {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if st := s.Stats(); st.DiskReads != 1 || st.DiskHits+st.MemoryHits != readers {
			t.Errorf("stats %+v: want 1 disk read for %d hits", st, readers)
		}
	})
}

// TestEarlierLayoutIsReclaimedOnce: a directory written by an earlier version, with large
// entries in Badger's value log, is cleared of its entries at the first Open (meta values kept),
// which gives the value-log files back; later Opens keep the entries.
func TestEarlierLayoutIsReclaimedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutMeta("revoked/abc", []byte("1")); err != nil {
			t.Fatal(err)
		}
		// The earlier layout: entries written inline, so that the large ones land in the value log.
		large := strings.Repeat("v", 512<<10) // Badger refuses values over its value-log file size
		for i := range 60 {
			e := entryAt(time.Now(), Catalog, large)
			key := fmt.Sprint("old/", i%5) // replaced again and again: value-log garbage
			rec := indexRecord{Class: e.Class, Size: int64(len(encodeEntry(e))), StoredAt: e.StoredAt, StaleUntil: e.StaleUntil}
			err := s.db.Update(func(txn *badger.Txn) error {
				if err := txn.Set(entryKey(key), encodeEntry(e)); err != nil {
					return err
				}
				return txn.Set(indexKey(key), encodeIndex(rec))
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteMeta(layoutMeta); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dirBytes(t, dir); got < 30<<20 {
			t.Fatalf("the earlier layout holds only %d bytes: the test does not build it", got)
		}

		s, err = Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		// A fresh store's files: a memtable file of 2 x memTableSize, the value log and DISCARD.
		if got, fresh := dirBytes(t, dir), int64(2*memTableSize+2*valueLogFileSize+1<<20); got > fresh+4<<20 {
			t.Errorf("after the upgrade the directory holds %d bytes; a fresh one %d", got, fresh)
		}
		if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
			t.Errorf("entries of the earlier layout left: %+v", st)
		}
		if v, err := s.GetMeta("revoked/abc"); err != nil || string(v) != "1" {
			t.Errorf("meta value lost in the upgrade: %q, %v", v, err)
		}
		mustPut(t, s, "new", entryAt(time.Now(), Catalog, large))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openTest(t, Options{Dir: dir})
		if _, err := s.Get("new"); err != nil {
			t.Errorf("entry dropped by a second Open: %v", err)
		}
	})
}

// waitDiskReads polls until n disk reads have started, and fails after many turns (not at a
// time: in a bubble, the clock stands still while the reads wait on a mutex).
func waitDiskReads(t *testing.T, s *Store, n uint64) {
	t.Helper()
	for turns := 0; s.Stats().DiskReads < n; turns++ {
		if turns == 10_000_000 {
			t.Fatalf("%d disk reads started, want %d", s.Stats().DiskReads, n)
		}
		runtime.Gosched()
	}
}

// TestGetAfterInvalidationDoesNotJoinOlderRead: a Get that starts after an invalidation (a Put,
// Delete or purge) reads again rather than share a read that started before it, which could
// return what was replaced.
func TestGetAfterInvalidationDoesNotJoinOlderRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Options{})
		mustPut(t, s, "k", entryAt(time.Now(), Catalog, strings.Repeat("C", bodyFileMin)))
		s.mem.remove("k") // on disk only
		s.closeMu.Lock()  // the reads wait on it
		locked := true
		defer func() {
			if locked {
				s.closeMu.Unlock()
			}
		}()
		errs := make(chan error, 2)
		get := func() {
			_, err := s.Get("k")
			errs <- err
		}
		go get()
		waitDiskReads(t, s, 1)
		s.mem.remove("k") // what a Put or Delete does once committed
		go get()
		waitDiskReads(t, s, 2)
		s.closeMu.Unlock()
		locked = false
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})
}
