package cachestore

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// PutMetaTTL stores a small value under name that Badger forgets after ttl
// (rounded up to whole seconds by Badger): floors, session revocations and
// other state that must survive a restart but not outlive its purpose.
// Like PutMeta, it is never evicted or purged by the cache's own rules.
func (s *Store) PutMetaTTL(name string, v []byte, ttl time.Duration) error {
	if name == "" {
		return errors.New("storing meta: empty name")
	}
	if ttl <= 0 {
		return fmt.Errorf("storing meta %q: ttl must be positive", name)
	}
	done, err := s.open()
	if err != nil {
		return err
	}
	defer done()
	err = s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(metaKey(name), slices.Clone(v)).WithTTL(ttl))
	})
	if err != nil {
		return fmt.Errorf("storing meta %q: %w", name, err)
	}
	return nil
}

// DeleteMeta removes the meta value name; a missing one is not an error.
func (s *Store) DeleteMeta(name string) error {
	done, err := s.open()
	if err != nil {
		return err
	}
	defer done()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(metaKey(name)) }); err != nil {
		return fmt.Errorf("deleting meta %q: %w", name, err)
	}
	return nil
}

// ScanMeta calls fn with each live meta value whose name starts with
// prefix, in name order, until fn returns false. The value is a copy.
func (s *Store) ScanMeta(prefix string, fn func(name string, v []byte) bool) error {
	done, err := s.open()
	if err != nil {
		return err
	}
	defer done()
	p := metaKey(prefix)
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: false})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("reading meta %q: %w", item.Key(), err)
			}
			if !fn(string(item.Key()[len(prefixMeta):]), v) {
				return nil
			}
		}
		return nil
	})
}
