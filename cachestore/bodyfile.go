package cachestore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// Large entries live in files of their own, one per key, under <dir>/bodies/, and Badger keeps
// only bodyRef under their e/ key. Deleting the entry deletes the file, so their disk space comes
// back at once. In Badger's value log it came back only through value-log GC, which rewrites
// files that compactions have marked as garbage; with a small LSM tree compactions hardly ever
// run, and a store bounded to 8 MiB grew to 1.9 GiB of value-log files.
const (
	// bodyFileMin is the encoded size from which an entry goes to a file. Below it, entries stay
	// in Badger's LSM tree (the value threshold is the same), where compaction reclaims them.
	bodyFileMin = 64 << 10
	bodiesDir   = "bodies"
	tmpSuffix   = ".tmp"
)

// bodyRef is the e/ value of an entry kept in a file. Its leading 0 is never an entry format
// version, so it cannot be mistaken for an inline entry.
var bodyRef = []byte("\x00file")

func isBodyRef(v []byte) bool { return bytes.Equal(v, bodyRef) }

// bodyPath names the file of key: a hash, since keys are long and may hold any byte.
func (s *Store) bodyPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(s.dir, bodiesDir, hex.EncodeToString(sum[:]))
}

// writeBody writes the encoded entry (enc's head, body, enc's checksum) as the file of key
// through a temporary file and a rename, so that a reader sees the old file or the new one, never
// a partial one. A crash can still leave a torn file after a power loss (no fsync, as Badger's
// writes); its checksum then fails and it is deleted as corrupt.
func (s *Store) writeBody(key string, enc encoded, body []byte) error {
	path := s.bodyPath(key)
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		bufs := net.Buffers{enc.head, body, binary.BigEndian.AppendUint32(nil, enc.sum)}
		_, err = bufs.WriteTo(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing body file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing body file: %w", err)
	}
	return nil
}

// readBody reads the file of key. A missing file means the entry was deleted or replaced by a
// small one since its e/ value was read: ErrNotFound.
func (s *Store) readBody(key string) ([]byte, error) {
	val, err := os.ReadFile(s.bodyPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading body file: %w", err)
	}
	return val, nil
}

// removeBody deletes the file of key, if any; called after the entry's deletion or its
// replacement by an inline one is committed.
func (s *Store) removeBody(key string) {
	err := os.Remove(s.bodyPath(key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("deleting body file", zap.String("key", logKey(key)), zap.Error(err))
	}
}

// removeOrphanBodiesLocked deletes the body files that no index record names: left by a crash
// between a file write and its commit, or by an entry that Badger's TTL backstop removed before
// our sweep did. s.mu must be held, so no Put is between its file write and its commit.
func (s *Store) removeOrphanBodiesLocked() error {
	dir := filepath.Join(s.dir, bodiesDir)
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing body files: %w", err)
	}
	if len(des) == 0 {
		return nil
	}
	live := make(map[string]bool)
	if _, err := s.scanIndex(func(key string, _ indexRecord) {
		live[filepath.Base(s.bodyPath(key))] = true
	}); err != nil {
		return err
	}
	for _, de := range des {
		name := de.Name()
		if live[name] && !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("deleting orphan body file: %w", err)
		}
	}
	return nil
}

// removeVictimBody deletes the file of a deleted entry, if it may have one: an entry without a
// readable index record might.
func (s *Store) removeVictimBody(v victim) {
	if !v.indexed || v.rec.Size >= bodyFileMin {
		s.removeBody(v.key)
	}
}

// layoutMeta marks a directory whose large entries are body files. A directory without it that
// holds entries was written by an earlier version, with large entries in Badger's value log.
const (
	layoutMeta  = "cachestore/layout"
	layoutFiles = "bodyfiles-1"
)

// upgradeLayoutLocked drops the entries of a directory written by an earlier version, once:
// their value-log files never shrank (see the package documentation), and deleting the
// entries one by one would not reclaim them either, since value-log GC only rewrites files that
// compactions have marked as garbage. DropPrefix compacts the entries away and records that
// garbage, so GC can then delete the files. Meta values (floors, revocations) are kept; the
// cache refills from upstream. s.mu must be held.
func (s *Store) upgradeLayoutLocked() error {
	if v, err := s.GetMeta(layoutMeta); err == nil && string(v) == layoutFiles {
		return nil
	}
	if s.entries.Load() > 0 {
		s.log.Warn("dropping the cache entries of an earlier on-disk layout, once, to reclaim its value-log files",
			zap.Int64("entries", s.entries.Load()), zap.Int64("bytes", s.bytes.Load()))
		if err := s.db.DropPrefix([]byte(prefixEntry), []byte(prefixIndex), []byte(prefixTag)); err != nil {
			return fmt.Errorf("dropping entries of the earlier layout: %w", err)
		}
		s.entries.Store(0)
		s.bytes.Store(0)
		s.runValueLogGC()
	}
	return s.PutMeta(layoutMeta, []byte(layoutFiles))
}
