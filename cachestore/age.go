package cachestore

import "time"

// Ages is when the live entries of one class were stored.
type Ages struct {
	Entries int       `json:"entries"`
	Oldest  time.Time `json:"oldest,omitzero"`
	Newest  time.Time `json:"newest,omitzero"`
}

// ClassAges reads only the index records, so it costs no entry reads
// however large the answers: the status page calls it on every refresh.
func (s *Store) ClassAges(c Class) (Ages, error) {
	done, err := s.open()
	if err != nil {
		return Ages{}, err
	}
	defer done()
	now := time.Now()
	var a Ages
	_, err = s.scanIndex(func(_ string, r indexRecord) {
		if r.Class != c || isStale(r.StaleUntil, now) {
			return
		}
		a.Entries++
		if a.Oldest.IsZero() || r.StoredAt.Before(a.Oldest) {
			a.Oldest = r.StoredAt
		}
		if r.StoredAt.After(a.Newest) {
			a.Newest = r.StoredAt
		}
	})
	return a, err
}
