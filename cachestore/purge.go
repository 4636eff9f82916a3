package cachestore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// victim is an entry about to be deleted. indexed is false when its index record is missing or
// corrupt: the entry is then not part of the counters, and only the tags listed are unindexed.
type victim struct {
	key     string
	rec     indexRecord
	indexed bool
}

// PurgeAll deletes every entry (not the meta values) and returns how many there were.
func (s *Store) PurgeAll() (int, error) {
	n, err := s.purge(func(string, indexRecord) bool { return true })
	if err != nil {
		return n, fmt.Errorf("purging all entries: %w", err)
	}
	return n, nil
}

// PurgeClass deletes every entry of class c and returns how many there were.
func (s *Store) PurgeClass(c Class) (int, error) {
	n, err := s.purge(func(_ string, r indexRecord) bool { return r.Class == c })
	if err != nil {
		return n, fmt.Errorf("purging %s entries: %w", c, err)
	}
	return n, nil
}

func (s *Store) purge(match func(string, indexRecord) bool) (int, error) {
	unlock, err := s.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	var vs []victim
	bad, err := s.scanIndex(func(key string, r indexRecord) {
		if match(key, r) {
			vs = append(vs, victim{key: key, rec: r, indexed: true})
		}
	})
	if err != nil {
		return 0, err
	}
	s.corrupt.Add(uint64(len(bad)))
	for _, k := range bad {
		vs = append(vs, victim{key: k}) // unknown class: purged by any purge
	}
	return s.deleteLocked(vs, nil)
}

// PurgeTag deletes every entry carrying tag and returns how many there were. It reads only the
// tag's index keys and the index records of the entries they name.
func (s *Store) PurgeTag(tag string) (int, error) {
	if tag == "" || strings.IndexByte(tag, 0) >= 0 {
		return 0, fmt.Errorf("purging tag %q: empty or containing NUL", tag)
	}
	unlock, err := s.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()

	prefix := tagKey(tag, "")
	var keys []string
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, string(it.Item().Key()[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging tag %q: listing: %w", tag, err)
	}
	vs, err := s.readVictims(keys)
	if err != nil {
		return 0, fmt.Errorf("purging tag %q: %w", tag, err)
	}
	var purge []victim
	var orphans [][]byte
	for _, v := range vs {
		switch {
		case !v.indexed:
			// Unknown tags: delete the entry and at least this tag key.
			v.rec.Tags = []string{tag}
			purge = append(purge, v)
		case slices.Contains(v.rec.Tags, tag):
			purge = append(purge, v)
		default:
			// The entry no longer carries the tag (Put removes such keys; be lenient anyway).
			orphans = append(orphans, tagKey(tag, v.key))
		}
	}
	n, err := s.deleteLocked(purge, orphans)
	if err != nil {
		return n, fmt.Errorf("purging tag %q: %w", tag, err)
	}
	return n, nil
}

// Sweep deletes the entries past their StaleUntil and recomputes Entries and Bytes from the
// index records. The GC goroutine runs it every GCInterval; it is exported for the admin API and
// tests.
func (s *Store) Sweep() (int, error) {
	unlock, err := s.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	n, err := s.sweepLocked()
	if err != nil {
		return n, fmt.Errorf("sweeping expired entries: %w", err)
	}
	return n, nil
}

func (s *Store) sweepLocked() (int, error) {
	now := time.Now()
	var entries, total int64
	var vs []victim
	bad, err := s.scanIndex(func(key string, r indexRecord) {
		// Count everything; deleteLocked subtracts what it removes.
		entries++
		total += r.Size
		if isStale(r.StaleUntil, now) {
			vs = append(vs, victim{key: key, rec: r, indexed: true})
		}
	})
	if err != nil {
		return 0, err
	}
	s.entries.Store(entries)
	s.bytes.Store(total)
	s.corrupt.Add(uint64(len(bad)))
	for _, k := range bad {
		vs = append(vs, victim{key: k})
	}
	n, err := s.deleteLocked(vs, nil)
	s.expired.Add(uint64(n))
	return n, err
}

// evictLocked makes room for an entry of incoming bytes about to be written at key: it removes
// entries past their StaleUntil first, then the oldest by StoredAt, until the store without the
// entry at key, plus incoming, is within 90% of MaxBytes (so that the next Puts do not evict
// again right away).
//
// It sorts a scan of the index records instead of maintaining a heap: evictions are rare, the
// records are small and contiguous, and no per-entry memory is held between evictions. The scan
// also resets the counters, correcting any drift from Badger's TTL backstop.
func (s *Store) evictLocked(key string, incoming int64) error {
	now := time.Now()
	var entries, total, replaced int64
	var cands []victim
	bad, err := s.scanIndex(func(k string, r indexRecord) {
		entries++
		total += r.Size
		if k == key {
			replaced = r.Size
			return
		}
		cands = append(cands, victim{key: k, rec: r, indexed: true})
	})
	if err != nil {
		return fmt.Errorf("evicting: %w", err)
	}
	s.entries.Store(entries)
	s.bytes.Store(total)
	slices.SortFunc(cands, func(a, b victim) int {
		as, bs := isStale(a.rec.StaleUntil, now), isStale(b.rec.StaleUntil, now)
		switch {
		case as && !bs:
			return -1
		case bs && !as:
			return 1
		}
		if c := a.rec.StoredAt.Compare(b.rec.StoredAt); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	goal := s.maxBytes.Load() / 10 * 9
	size := total - replaced + incoming
	var vs []victim
	for _, c := range cands {
		if size <= goal {
			break
		}
		vs = append(vs, c)
		size -= c.rec.Size
	}
	s.corrupt.Add(uint64(len(bad)))
	for _, k := range bad {
		vs = append(vs, victim{key: k})
	}
	n, err := s.deleteLocked(vs, nil)
	s.evictions.Add(uint64(n))
	if err != nil {
		return fmt.Errorf("evicting: %w", err)
	}
	return nil
}

// scanIndex calls fn for each index record, in key order, and returns the keys whose record does
// not decode.
func (s *Store) scanIndex(fn func(key string, r indexRecord)) (bad []string, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixIndex)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[len(prefixIndex):])
			var r indexRecord
			err := item.Value(func(v []byte) error {
				var err error
				r, err = decodeIndex(v) // copies what it keeps
				return err
			})
			if errors.Is(err, errCodec) {
				bad = append(bad, key)
				continue
			}
			if err != nil {
				return err
			}
			fn(key, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning index records: %w", err)
	}
	return bad, nil
}

// readVictims reads the index records of keys.
func (s *Store) readVictims(keys []string) ([]victim, error) {
	vs := make([]victim, 0, len(keys))
	err := s.db.View(func(txn *badger.Txn) error {
		for _, k := range keys {
			v := victim{key: k}
			item, err := txn.Get(indexKey(k))
			if err == nil {
				err = item.Value(func(b []byte) error {
					r, derr := decodeIndex(b)
					v.rec, v.indexed = r, derr == nil
					return nil
				})
			}
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			vs = append(vs, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading index records: %w", err)
	}
	return vs, nil
}

// removeLocked deletes the entries at keys and returns how many existed.
func (s *Store) removeLocked(keys []string) (int, error) {
	vs, err := s.readVictims(keys)
	if err != nil {
		return 0, err
	}
	return s.deleteLocked(vs, nil)
}

// deleteLocked deletes the victims' entries, index records and tag keys, plus the raw keys in
// extra, takes the indexed victims out of the counters and all of them out of the memory layer,
// and returns the number of indexed victims. s.mu must be held.
func (s *Store) deleteLocked(vs []victim, extra [][]byte) (int, error) {
	if len(vs) == 0 && len(extra) == 0 {
		return 0, nil
	}
	// A WriteBatch splits itself into as many transactions as needed, so a purge of the whole
	// store cannot fail with ErrTxnTooBig. The deletions are therefore not atomic as a whole,
	// but each entry's keys are independent: a crash part-way leaves whole entries or orphans
	// that the next purge or sweep handles.
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	del := func(k []byte) error { return wb.Delete(k) }
	for _, v := range vs {
		if err := del(entryKey(v.key)); err != nil {
			return 0, err
		}
		if err := del(indexKey(v.key)); err != nil {
			return 0, err
		}
		for _, t := range v.rec.Tags {
			if err := del(tagKey(t, v.key)); err != nil {
				return 0, err
			}
		}
	}
	for _, k := range extra {
		if err := del(k); err != nil {
			return 0, err
		}
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("deleting %d entries: %w", len(vs), err)
	}
	// Invalidate only once the deletion is visible in Badger, so that a concurrent Get cannot
	// re-cache what was just deleted (see memLayer.add).
	n := 0
	for _, v := range vs {
		s.mem.remove(v.key)
		s.removeVictimBody(v)
		if v.indexed {
			n++
			s.entries.Add(-1)
			s.bytes.Add(-v.rec.Size)
		}
	}
	return n, nil
}

// PurgedTag marks an entry that a soft purge made stale. The entry is still
// served (the edge says detail=purged) until a refresh replaces it, whose
// tags no longer carry the mark.
const PurgedTag = "s360edge:purged"

// InvalidatedTag marks an entry that S-360 reported changed (the edge's
// availability watcher). Like PurgedTag, the entry is still served (the
// edge says detail=invalidated) until a refresh replaces it.
const InvalidatedTag = "s360edge:invalidated"

// Marked is the mark an entry's tags carry, InvalidatedTag before
// PurgedTag; "" when none.
func Marked(tags []string) string {
	for _, m := range [...]string{InvalidatedTag, PurgedTag} {
		if slices.Contains(tags, m) {
			return m
		}
	}
	return ""
}

// SoftPurgeAll marks every entry stale and purged, and returns how many.
func (s *Store) SoftPurgeAll() (int, error) {
	return s.softPurgeMatching("all entries", PurgedTag, func(string, indexRecord) bool { return true })
}

// SoftPurgeClass marks every entry of class c stale and purged.
func (s *Store) SoftPurgeClass(c Class) (int, error) {
	return s.softPurgeMatching(c.String()+" entries", PurgedTag, func(_ string, r indexRecord) bool { return r.Class == c })
}

// SoftPurgeTag marks every entry carrying tag stale and purged.
func (s *Store) SoftPurgeTag(tag string) (int, error) {
	return s.markTag(tag, PurgedTag)
}

// InvalidateTag marks every entry carrying tag stale and invalidated, and
// returns how many: what S-360 reported changed keeps an answer until it
// is refreshed.
func (s *Store) InvalidateTag(tag string) (int, error) {
	return s.markTag(tag, InvalidatedTag)
}

func (s *Store) markTag(tag, mark string) (int, error) {
	if tag == "" || strings.IndexByte(tag, 0) >= 0 {
		return 0, fmt.Errorf("purging tag %q: empty or containing NUL", tag)
	}
	return s.softPurgeMatching("tag "+tag, mark, func(_ string, r indexRecord) bool { return slices.Contains(r.Tags, tag) })
}

// SoftPurgeKey marks the entry at key stale and purged; 0 when there is none.
func (s *Store) SoftPurgeKey(key string) (int, error) {
	n, err := s.markPurged([]string{key}, PurgedTag)
	if err != nil {
		return n, fmt.Errorf("purging key: %w", err)
	}
	return n, nil
}

func (s *Store) softPurgeMatching(what, mark string, match func(string, indexRecord) bool) (int, error) {
	done, err := s.open()
	if err != nil {
		return 0, err
	}
	var keys []string
	_, err = s.scanIndex(func(key string, r indexRecord) {
		if match(key, r) {
			keys = append(keys, key)
		}
	})
	done()
	if err == nil {
		var n int
		n, err = s.markPurged(keys, mark)
		if err == nil {
			return n, nil
		}
		return n, fmt.Errorf("purging %s: %w", what, err)
	}
	return 0, fmt.Errorf("purging %s: %w", what, err)
}

// markPurged rewrites the entries at keys stale (FreshUntil now at the
// latest) with mark (PurgedTag or InvalidatedTag), keeping their body and
// StaleUntil, so that every key keeps an answer. Entries gone or already
// carrying mark are skipped; corrupt ones are dropped by Get. A refresh
// stored between the read and the rewrite is marked too: it is refetched
// once more, never lost unanswered.
func (s *Store) markPurged(keys []string, mark string) (int, error) {
	now := time.Now()
	n := 0
	for _, k := range keys {
		e, err := s.Get(k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		if slices.Contains(e.Tags, mark) {
			continue
		}
		p := *e
		if p.FreshUntil.After(now) {
			p.FreshUntil = now
		}
		p.Tags = append(slices.Clip(e.Tags), mark)
		if err := s.Put(k, &p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
