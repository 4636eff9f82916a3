package s360

import (
	"bytes"
	"sync"
)

var requestIDField = []byte(`"requestId"`)

// CanonicalMemo remembers the canonical form of request bodies seen
// recently. A website's scripts send the same bytes again and again, and
// decoding and re-encoding JSON is most of the cost of a cache hit; the
// mapping from raw body to canonical body never changes, so it is safe to
// remember. Only small bodies are kept, and the memo is emptied when full:
// cheaper than tracking recency, and a full memo refills within seconds.
type CanonicalMemo struct {
	mu sync.RWMutex
	m  map[string][]byte
}

const (
	memoMaxBody    = 4 << 10
	memoMaxEntries = 4096
)

// Canonical is s360.Canonical, memoized. The returned slice is shared:
// callers must not modify it.
func (c *CanonicalMemo) Canonical(body []byte) ([]byte, error) {
	// A body with a requestId is, by S-360's design, different on every
	// call: remembering it would only churn the memo.
	if len(body) > memoMaxBody || bytes.Contains(body, requestIDField) {
		return Canonical(body)
	}
	c.mu.RLock()
	out, ok := c.m[string(body)]
	c.mu.RUnlock()
	if ok {
		return out, nil
	}
	out, err := Canonical(body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= memoMaxEntries {
		c.m = make(map[string][]byte, memoMaxEntries)
	}
	c.m[string(body)] = out
	c.mu.Unlock()
	return out, nil
}
