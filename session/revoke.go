package session

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Revocations remembers the sessions that logged out, until their cookies
// would have expired anyway. It is an interface so that the edge can keep
// the list in its store (surviving restarts) and a cluster in shared
// storage.
type Revocations interface {
	// Revoke marks session id as logged out until until.
	Revoke(id string, until time.Time) error
	// Revoked reports whether id was revoked. An error means the answer is
	// unknown; Identify then treats the session as unusable (fail closed).
	Revoked(id string) (bool, error)
}

// ErrRevocationUnavailable: the revocation list could not be read, so a
// session cookie can be neither trusted nor refused (answer 503).
var ErrRevocationUnavailable = errors.New("session revocation list unavailable")

// memRevocations is the default Revocations: one process, lost on restart.
type memRevocations struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

func newMemRevocations() *memRevocations {
	return &memRevocations{ids: map[string]time.Time{}}
}

func (m *memRevocations) Revoke(id string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for k, u := range m.ids {
		if !now.Before(u) {
			delete(m.ids, k)
		}
	}
	m.ids[id] = until
	return nil
}

func (m *memRevocations) Revoked(id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	until, ok := m.ids[id]
	return ok && time.Now().Before(until), nil
}

// crossSite reports whether r comes from another site, so that a page
// elsewhere cannot log the buyer out (logout CSRF). Fetch Metadata decides
// when the browser sends it: only same-origin and none (typed URL,
// bookmark) pass; same-site is refused too, since a sibling subdomain is
// another party. Otherwise an Origin or Referer naming another host is
// refused. A request with none of these headers (old browsers, curl) is
// allowed: a browser that sends no Fetch Metadata still sends Origin on a
// cross-site POST.
func (m *Manager) crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		// Still check Origin below: it must agree.
	case "":
	default:
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		return !m.ownOrigin(r, o)
	}
	if ref := r.Referer(); ref != "" && r.Header.Get("Sec-Fetch-Site") == "" {
		return !m.ownOrigin(r, ref)
	}
	return false
}

// ownOrigin: raw is a URL on this site's host (the request's Host, or the
// configured SiteURL's). The scheme is not compared: behind a TLS
// proxy the sidecar may not know it.
func (m *Manager) ownOrigin(r *http.Request, raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // includes "Origin: null" from sandboxed or opaque contexts
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if ru, err := url.Parse(m.cfg.SiteURL); err == nil && ru.Host != "" {
		return strings.EqualFold(u.Host, ru.Host)
	}
	return false
}
