package cachestore

import (
	"container/list"
	"sync"
)

// memItemOverhead approximates the bookkeeping around one cached entry (list element, map slot,
// Entry struct, header map), so that many small entries cannot hide behind their body sizes.
const memItemOverhead = 256

// memLayer is a byte-bounded LRU of decoded entries. A hit returns the same *Entry every time, so
// a large body is shared rather than copied per request.
//
// A plain mutex-guarded LRU is enough here: a hit is a map lookup and a list move, far cheaper
// than the HTTP work around it, and it keeps eviction exact.
type memLayer struct {
	mu    sync.Mutex
	max   int64 // <= 0: disabled
	used  int64
	seq   uint64 // bumped by every invalidation; see add
	lru   list.List
	byKey map[string]*list.Element
}

type memItem struct {
	key  string
	e    *Entry
	size int64
}

func newMemLayer(max int64) *memLayer {
	return &memLayer{max: max, byKey: make(map[string]*list.Element)}
}

// get returns the cached entry, or nil and the invalidation sequence to pass to add after
// reading the entry from disk.
func (m *memLayer) get(key string) (*Entry, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[key]; ok {
		m.lru.MoveToFront(el)
		return el.Value.(*memItem).e, m.seq
	}
	return nil, m.seq
}

// peek is get without touching recency, for bulk scans (Keys) that must not flush the hot set.
func (m *memLayer) peek(key string) *Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[key]; ok {
		return el.Value.(*memItem).e
	}
	return nil
}

// add caches e unless anything was invalidated since seq was read. Without that check a Get
// racing with a Put could read the old value from disk, lose the race to the Put's
// invalidation, and then cache the old value for good. Writes are rare (misses only), so
// skipping the insert now and then costs nothing.
func (m *memLayer) add(key string, e *Entry, size int64, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq == m.seq {
		m.addLocked(key, e, size)
	}
}

func (m *memLayer) addLocked(key string, e *Entry, size int64) {
	if el, ok := m.byKey[key]; ok {
		m.removeElement(el)
	}
	// An entry larger than the whole layer is not cached; one that fits may push everything
	// else out, which is right for the 10 MB catalog that every visitor asks for.
	size += int64(len(key)) + memItemOverhead
	if m.max <= 0 || size > m.max {
		return
	}
	m.byKey[key] = m.lru.PushFront(&memItem{key: key, e: e, size: size})
	m.used += size
	for m.used > m.max {
		m.removeElement(m.lru.Back())
	}
}

// replace invalidates key as remove does, then caches e there: the entry just stored.
func (m *memLayer) replace(key string, e *Entry, size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	m.addLocked(key, e, size)
}

func (m *memLayer) remove(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	if el, ok := m.byKey[key]; ok {
		m.removeElement(el)
	}
}

func (m *memLayer) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	m.lru.Init()
	clear(m.byKey)
	m.used = 0
}

func (m *memLayer) removeElement(el *list.Element) {
	it := m.lru.Remove(el).(*memItem)
	delete(m.byKey, it.key)
	m.used -= it.size
}

func (m *memLayer) stats() (entries, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.byKey)), m.used
}
