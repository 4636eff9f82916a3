package cachestore

// SetMaxBytes changes the bound on the stored entries' size (a reloaded
// max_size); 0 is DefaultMaxBytes. A lower bound takes effect at the next
// Put, which evicts down to it.
func (s *Store) SetMaxBytes(n int64) {
	if n <= 0 {
		n = DefaultMaxBytes
	}
	s.maxBytes.Store(n)
}
