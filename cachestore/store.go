package cachestore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/s360edge/s360edge/internal/wait"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxBytes    = 1 << 30
	DefaultMemoryBytes = 64 << 20
	DefaultGCInterval  = 5 * time.Minute
)

// ttlMargin is added to the Badger TTL so that the backstop never fires before our own expiry,
// whatever the rounding to whole seconds and small clock differences.
const ttlMargin = time.Minute

var (
	// ErrNotFound is returned for a missing, expired (past StaleUntil) or corrupt entry, and for
	// a missing meta value.
	ErrNotFound = errors.New("cachestore: not found")
	// ErrTooLarge is returned by Put for an entry whose encoding exceeds Options.MaxBytes.
	ErrTooLarge = errors.New("entry larger than the store's size bound")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("cachestore: store is closed")
	// ErrLocked is returned by Open when the directory is already in use, by this process or
	// another one: Badger holds an exclusive lock on its directory.
	ErrLocked = errors.New("directory is locked (Badger allows one open store per directory; share the Store)")
)

// Options configures Open.
type Options struct {
	// Dir is the Badger directory, created if missing. Required; made absolute.
	Dir string
	// MaxBytes bounds the sum of the encoded sizes of the stored entries. When a Put would
	// exceed it, the oldest entries by StoredAt are evicted until the store is under 90% of
	// it. Default 1 GiB. The directory holds at most MaxBytes + DiskOverhead.
	MaxBytes int64
	// MemoryBytes bounds the in-memory layer of decoded entries. Default 64 MiB; -1 disables
	// the layer.
	MemoryBytes int64
	// GCInterval is the period of the expiry sweep and Badger value-log GC. Default 5m.
	GCInterval time.Duration
	// Logger receives Badger's warnings and errors and the store's own. Default zap.NewNop().
	Logger *zap.Logger
}

// Stats are the store's counters. Entries and Bytes describe what is stored now; the others
// count since Open.
type Stats struct {
	Entries       int64  `json:"entries"`        // stored entries
	Bytes         int64  `json:"bytes"`          // sum of their encoded sizes
	MaxBytes      int64  `json:"max_bytes"`      // the bound on Bytes
	MemoryEntries int64  `json:"memory_entries"` // entries in the memory layer
	MemoryBytes   int64  `json:"memory_bytes"`   // approximate bytes held by the memory layer
	Corrupt       uint64 `json:"corrupt"`
	Evictions     uint64 `json:"evictions"`
	Expired       uint64 `json:"expired"` // entries removed by the expiry sweep
	MemoryHits    uint64 `json:"memory_hits"`
	DiskHits      uint64 `json:"disk_hits"`
	DiskReads     uint64 `json:"disk_reads"` // entries read from disk; concurrent Gets of one key share a read
	Misses        uint64 `json:"misses"`     // Get calls answered ErrNotFound (missing, expired or corrupt)
}

// Store is the cache. All methods are safe for concurrent use.
type Store struct {
	dir      string
	db       *badger.DB
	log      *zap.Logger
	maxBytes atomic.Int64 // SetMaxBytes changes it on a config reload
	mem      *memLayer
	// loads coalesces concurrent disk reads of one key: 100 readers arriving together for a
	// 10 MB catalog that is not in the memory layer would otherwise read and decode 100
	// copies at once.
	loads singleflight.Group

	// closeMu is held for reading by every method that touches Badger and for writing by Close,
	// so Badger is never closed under a running transaction. Never held twice by one goroutine:
	// a pending Close would deadlock the second RLock.
	closeMu   sync.RWMutex
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	gcDone    chan struct{}

	// mu serializes writes; see the package documentation.
	mu sync.Mutex

	entries, bytes               atomic.Int64
	corrupt, evictions, expired  atomic.Uint64
	memoryHits, diskHits, misses atomic.Uint64
	diskReads                    atomic.Uint64
}

// openDirs makes a second Open of a directory in this process fail fast with ErrLocked. (Badger's
// flock would refuse it too, but only after Badger has started replaying the directory.)
var openDirs struct {
	sync.Mutex
	m map[string]bool
}

// Open opens or creates the store in opts.Dir and starts its GC goroutine, which Close stops.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("opening cache store: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("opening cache store: resolving %s: %w", opts.Dir, err)
	}
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("opening cache store at %s: negative MaxBytes %d", dir, opts.MaxBytes)
	}
	opts.MaxBytes = cmp.Or(opts.MaxBytes, DefaultMaxBytes)
	opts.MemoryBytes = cmp.Or(opts.MemoryBytes, DefaultMemoryBytes)
	if opts.GCInterval <= 0 {
		opts.GCInterval = DefaultGCInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	log := opts.Logger.With(zap.String("dir", dir))

	if err := os.MkdirAll(filepath.Join(dir, bodiesDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating cache directory %s: %w", dir, err)
	}
	if !claimDir(dir) {
		return nil, fmt.Errorf("opening badger at %s: %w: already open in this process", dir, ErrLocked)
	}
	db, err := badger.Open(badgerOptions(dir, log))
	if err != nil {
		releaseDir(dir)
		// Badger does not wrap the flock error, so its text is all there is to go by.
		if strings.Contains(err.Error(), "directory lock") {
			return nil, fmt.Errorf("opening badger at %s: %w: held by another process: %v", dir, ErrLocked, err)
		}
		return nil, fmt.Errorf("opening badger at %s: %w", dir, err)
	}
	s := &Store{
		dir:    dir,
		db:     db,
		log:    log,
		mem:    newMemLayer(opts.MemoryBytes),
		stop:   make(chan struct{}),
		gcDone: make(chan struct{}),
	}
	s.maxBytes.Store(opts.MaxBytes)
	// Restore Entries and Bytes, and drop what expired while we were down.
	s.mu.Lock()
	_, err = s.sweepLocked()
	if err == nil {
		err = s.upgradeLayoutLocked()
	}
	if err == nil {
		err = s.removeOrphanBodiesLocked()
	}
	s.mu.Unlock()
	if err != nil {
		db.Close()
		releaseDir(dir)
		return nil, fmt.Errorf("opening cache store at %s: %w", dir, err)
	}
	go s.gcLoop(opts.GCInterval)
	return s, nil
}

func claimDir(dir string) bool {
	openDirs.Lock()
	defer openDirs.Unlock()
	if openDirs.m[dir] {
		return false
	}
	if openDirs.m == nil {
		openDirs.m = make(map[string]bool)
	}
	openDirs.m[dir] = true
	return true
}

func releaseDir(dir string) {
	openDirs.Lock()
	defer openDirs.Unlock()
	delete(openDirs.m, dir)
}

// Dir returns the absolute directory of the store.
func (s *Store) Dir() string { return s.dir }

// Close stops the GC goroutine and closes Badger. It waits for running operations, and is
// idempotent: later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.gcDone
		s.closeMu.Lock()
		s.closed.Store(true)
		err := s.db.Close()
		s.closeMu.Unlock()
		s.mem.clear()
		releaseDir(s.dir)
		if err != nil {
			s.closeErr = fmt.Errorf("closing badger at %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// lock opens the store for one operation (open) and takes its lock; the
// func it returns undoes both.
func (s *Store) lock() (unlock func(), err error) {
	done, err := s.open()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	return func() {
		s.mu.Unlock()
		done()
	}, nil
}

// open takes the read side of closeMu; the caller must call the returned function.
func (s *Store) open() (func(), error) {
	s.closeMu.RLock()
	if s.closed.Load() {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return s.closeMu.RUnlock, nil
}

func entryKey(key string) []byte { return []byte(prefixEntry + key) }
func indexKey(key string) []byte { return []byte(prefixIndex + key) }
func metaKey(name string) []byte { return []byte(prefixMeta + name) }

func tagKey(tag, key string) []byte { return []byte(prefixTag + tag + "\x00" + key) }

const (
	prefixEntry = "e/"
	prefixIndex = "i/"
	prefixTag   = "t/"
	prefixMeta  = "m/"
)

// isStale reports whether an entry with this StaleUntil is useless at now.
func isStale(staleUntil, now time.Time) bool {
	return !staleUntil.IsZero() && !now.Before(staleUntil)
}

// Get returns the entry at key, or ErrNotFound if it is missing, past its StaleUntil, or corrupt
// (a corrupt entry is deleted and counted in Stats.Corrupt).
//
// The returned Entry is shared with other callers and with the memory layer: it MUST NOT be
// modified.
func (s *Store) Get(key string) (*Entry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	e, seq := s.mem.get(key)
	if e != nil {
		if isStale(e.StaleUntil, time.Now()) {
			s.misses.Add(1)
			return nil, ErrNotFound
		}
		s.memoryHits.Add(1)
		return e, nil
	}
	// Keyed by the invalidation sequence too: a Get that starts after a Put, Delete or purge
	// must not join a read that started before it and may return what was replaced.
	flight := strconv.FormatUint(seq, 36) + "/" + key
	v, err, _ := s.loads.Do(flight, func() (any, error) {
		if e := s.mem.peek(key); e != nil { // added by a flight that ended since our look-up
			return e, nil
		}
		e, size, err := s.load(key)
		if err != nil {
			return nil, err
		}
		if !isStale(e.StaleUntil, time.Now()) {
			s.mem.add(key, e, size, seq)
		}
		return e, nil
	})
	if err == nil {
		e = v.(*Entry)
		if isStale(e.StaleUntil, time.Now()) {
			err = ErrNotFound
		}
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			s.misses.Add(1)
		}
		return nil, err
	}
	s.diskHits.Add(1)
	return e, nil
}

// load reads and decodes the entry at key from Badger, without touching the memory layer or the
// hit counters. It returns the encoded size with the entry.
func (s *Store) load(key string) (*Entry, int64, error) {
	s.diskReads.Add(1) // before open, so that tests can see a read waiting on Close's lock
	done, err := s.open()
	if err != nil {
		return nil, 0, err
	}
	defer done()
	var val []byte
	var version uint64
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(entryKey(key))
		if err != nil {
			return err
		}
		version = item.Version()
		// A copy, not item.Value: the entry outlives the transaction (it is shared from the
		// memory layer), and its Body aliases this buffer rather than copying it again.
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err == nil && isBodyRef(val) {
		val, err = s.readBody(key)
	}
	if errors.Is(err, ErrNotFound) {
		return nil, 0, err
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading entry: %w", err)
	}
	e, err := decodeEntry(val)
	if err != nil {
		s.corrupt.Add(1)
		s.log.Warn("deleting corrupt cache entry", zap.String("key", logKey(key)),
			zap.Int("bytes", len(val)), zap.Error(err))
		if err := s.dropCorrupt(key, version); err != nil {
			s.log.Error("deleting corrupt cache entry", zap.String("key", logKey(key)), zap.Error(err))
		}
		return nil, 0, ErrNotFound
	}
	return e, int64(len(val)), nil
}

// logKey shortens a key for logs: canonical keys embed request bodies.
func logKey(key string) string {
	const max = 200
	if len(key) <= max {
		return key
	}
	return key[:max] + "..."
}

// dropCorrupt deletes the entry at key if it is still the version that failed to decode; a Put
// may have replaced it with a good one since.
func (s *Store) dropCorrupt(key string, version uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	same := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(entryKey(key))
		if err == nil {
			same = item.Version() == version
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err != nil || !same {
		return err
	}
	_, err = s.removeLocked([]string{key})
	return err
}

// Put stores e at key, replacing any entry there. The store keeps e itself, and serves it from its
// memory layer to the next readers: neither e nor its slices (Body above all) may be modified
// after the call. A zero StoredAt is stored as the current time. An entry whose encoding is larger than MaxBytes is
// refused with ErrTooLarge; otherwise older entries are evicted as needed.
func (s *Store) Put(key string, e *Entry) error {
	if err := checkEntry(key, e); err != nil {
		return fmt.Errorf("storing entry: %w", err)
	}
	now := time.Now()
	if e.StoredAt.IsZero() {
		withTime := *e
		withTime.StoredAt = now
		e = &withTime
	}
	if isStale(e.StaleUntil, now) {
		return fmt.Errorf("storing entry: StaleUntil %s is not after now (%s)",
			e.StaleUntil.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	// Encoded in parts: a large body goes to its file and the memory layer as it is, not copied.
	enc := encodeParts(e, 0)
	size := enc.size(e)
	if size > s.maxBytes.Load() {
		return fmt.Errorf("storing entry of %d bytes: %w of %d bytes", size, ErrTooLarge, s.maxBytes.Load())
	}
	rec := indexRecord{Class: e.Class, Size: size, StoredAt: e.StoredAt, StaleUntil: e.StaleUntil,
		Tags: uniqueTags(e.Tags)}
	ttl := badgerTTL(e.StaleUntil, now)

	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()

	old, hadOld, err := s.readIndex(key)
	if err != nil {
		return fmt.Errorf("storing entry: %w", err)
	}
	if s.bytes.Load()-old.Size+size > s.maxBytes.Load() {
		if err := s.evictLocked(key, size); err != nil {
			return fmt.Errorf("storing entry: %w", err)
		}
	}
	inline := bodyRef
	if size >= bodyFileMin {
		// Replaces the old file, if any: from here until the commit, a reader of the old
		// entry may read the new body, which is just as good.
		if err := s.writeBody(key, enc, e.Body); err != nil {
			return fmt.Errorf("storing entry of %d bytes: %w", size, err)
		}
	} else {
		inline = binary.BigEndian.AppendUint32(append(enc.head, e.Body...), enc.sum)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, t := range old.Tags {
			if !slices.Contains(rec.Tags, t) {
				if err := txn.Delete(tagKey(t, key)); err != nil {
					return err
				}
			}
		}
		set := func(k, v []byte) error {
			be := badger.NewEntry(k, v)
			if ttl > 0 {
				be = be.WithTTL(ttl)
			}
			return txn.SetEntry(be)
		}
		if err := set(entryKey(key), inline); err != nil {
			return err
		}
		if err := set(indexKey(key), encodeIndex(rec)); err != nil {
			return err
		}
		for _, t := range rec.Tags {
			if err := set(tagKey(t, key), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if size >= bodyFileMin {
			// The file may now hold this body under the old entry's index record; drop the
			// entry rather than leave them disagreeing.
			if _, derr := s.removeLocked([]string{key}); derr != nil {
				s.log.Error("dropping entry after a failed write", zap.String("key", logKey(key)), zap.Error(derr))
			}
		}
		return fmt.Errorf("storing entry of %d bytes: %w", size, err)
	}
	if size < bodyFileMin {
		s.removeBody(key) // the old entry's, if it had one
	}
	if !hadOld {
		s.entries.Add(1)
	}
	s.bytes.Add(size - old.Size)
	// The next reader is served this very entry rather than a copy read back from disk: a
	// 10 MB catalog is held once, by every reader, from its miss on.
	s.mem.replace(key, e, size)
	return nil
}

func checkEntry(key string, e *Entry) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case e == nil:
		return errors.New("nil entry")
	case !e.Class.valid():
		return fmt.Errorf("invalid class %d", uint8(e.Class))
	case e.Status < 0 || e.Status > 999:
		return fmt.Errorf("invalid status %d", e.Status)
	}
	for _, t := range e.Tags {
		if t == "" || strings.IndexByte(t, 0) >= 0 {
			return fmt.Errorf("invalid tag %q: empty or containing NUL", t)
		}
	}
	return nil
}

func uniqueTags(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	u := slices.Clone(tags)
	slices.Sort(u)
	return slices.Compact(u)
}

// badgerTTL is the backstop TTL: StaleUntil relative to now, rounded up to whole seconds, plus
// ttlMargin. Zero means none.
func badgerTTL(staleUntil, now time.Time) time.Duration {
	const forever = 10 * 365 * 24 * time.Hour // and avoids overflow for "never" dates
	if staleUntil.IsZero() {
		return 0
	}
	d := staleUntil.Sub(now)
	if d > forever {
		return 0
	}
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return d + ttlMargin
}

// readIndex returns the index record at key; a corrupt record reads as missing (the entry will
// be rewritten, or removed by the next sweep).
func (s *Store) readIndex(key string) (indexRecord, bool, error) {
	var rec indexRecord
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(indexKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			r, derr := decodeIndex(v)
			rec, found = r, derr == nil
			return nil
		})
	})
	if err != nil {
		return indexRecord{}, false, fmt.Errorf("reading index record: %w", err)
	}
	return rec, found, nil
}

// Delete removes the entry at key, if any.
func (s *Store) Delete(key string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.removeLocked([]string{key}); err != nil {
		return fmt.Errorf("deleting entry: %w", err)
	}
	return nil
}

// Keys calls fn for each entry of class c that is not past its StaleUntil, in key order, until fn
// returns false. Entries written during the iteration may or may not be seen. fn may call other
// methods of the store. The entries are shared and MUST NOT be modified; entries not already in
// the memory layer are read from disk without being added to it, so a scan does not flush the
// hot set.
func (s *Store) Keys(c Class, fn func(key string, e *Entry) bool) error {
	var keys []string
	done, err := s.open()
	if err != nil {
		return err
	}
	_, err = s.scanIndex(func(key string, r indexRecord) {
		if r.Class == c {
			keys = append(keys, key)
		}
	})
	done() // not held while calling fn, which may call back into the store
	if err != nil {
		return fmt.Errorf("listing %s entries: %w", c, err)
	}
	for _, k := range keys {
		e := s.mem.peek(k)
		if e == nil {
			e, _, err = s.load(k)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since the scan
			}
			if err != nil {
				return fmt.Errorf("listing %s entries: %w", c, err)
			}
		}
		if e.Class != c || isStale(e.StaleUntil, time.Now()) {
			continue
		}
		if !fn(k, e) {
			return nil
		}
	}
	return nil
}

// GetMeta returns a copy of the meta value name, or ErrNotFound.
func (s *Store) GetMeta(name string) ([]byte, error) {
	done, err := s.open()
	if err != nil {
		return nil, err
	}
	defer done()
	var v []byte
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(name))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading meta %q: %w", name, err)
	}
	return v, nil
}

// PutMeta stores a small value under name (last setup body, catalog generation, reference
// dates). Meta values have no TTL and are never evicted or purged.
func (s *Store) PutMeta(name string, v []byte) error {
	if name == "" {
		return errors.New("storing meta: empty name")
	}
	done, err := s.open()
	if err != nil {
		return err
	}
	defer done()
	err = s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey(name), slices.Clone(v)) // Badger keeps the slice until commit
	})
	if err != nil {
		return fmt.Errorf("storing meta %q: %w", name, err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	memEntries, memBytes := s.mem.stats()
	return Stats{
		Entries:       s.entries.Load(),
		Bytes:         s.bytes.Load(),
		MaxBytes:      s.maxBytes.Load(),
		MemoryEntries: memEntries,
		MemoryBytes:   memBytes,
		Corrupt:       s.corrupt.Load(),
		Evictions:     s.evictions.Load(),
		Expired:       s.expired.Load(),
		MemoryHits:    s.memoryHits.Load(),
		DiskHits:      s.diskHits.Load(),
		DiskReads:     s.diskReads.Load(),
		Misses:        s.misses.Load(),
	}
}

// gcLoop runs the expiry sweep and value-log GC every interval until Close.
func (s *Store) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	wait.Every(s.stop, every, func() bool {
		// Sweep first: the deletions it makes are what value-log GC can reclaim.
		if _, err := s.Sweep(); err != nil {
			s.log.Warn("sweeping expired cache entries", zap.Error(err))
		}
		if err := s.removeOrphanBodies(); err != nil {
			s.log.Warn("deleting orphan body files", zap.Error(err))
		}
		s.runValueLogGC()
		return true
	})
}

func (s *Store) removeOrphanBodies() error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.removeOrphanBodiesLocked()
}

// runValueLogGC rewrites value-log files while at least half of one is garbage, as Badger
// recommends: one RunValueLogGC call rewrites at most one file.
func (s *Store) runValueLogGC() {
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		err := s.db.RunValueLogGC(0.5)
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			s.log.Warn("running badger value-log GC", zap.Error(err))
		}
		return
	}
}
