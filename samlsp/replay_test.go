package samlsp

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/oidcrp"
)

// memShared is a cluster's record of accepted assertions, in memory; down
// makes it out of reach.
type memShared struct {
	mu   sync.Mutex
	ids  map[string]time.Time
	down bool
}

func (m *memShared) ConsumeAssertion(id string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return false, errors.New("redis: connection refused")
	}
	if _, ok := m.ids[id]; ok {
		return true, nil
	}
	m.ids[id] = until
	return false, nil
}

// otherNode is a second SP configured as f's (same keys, IdP and cookie
// secret, its own sessions and process record), with shared as the
// cluster's record; f's SP gets shared too.
func otherNode(t *testing.T, f *fixture, shared SharedReplays) *SP {
	t.Helper()
	f.sp.cfg.Shared = shared
	rp, err := oidcrp.New(oidcrp.Config{NoProvider: true, CookieSecret: strings.Repeat("k", 32)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.sp.cfg
	cfg.Sessions, cfg.Replays, cfg.Logger = rp, nil, zap.NewNop()
	sp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// on runs fn with sp as f's SP.
func (f *fixture) on(sp *SP, fn func()) {
	prev := f.sp
	f.sp = sp
	defer func() { f.sp = prev }()
	fn()
}

// An assertion accepted on one node is refused on another that shares the
// cluster's record, even with a copy of the browser's state cookie.
func TestReplayOnAnotherNodeRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, true)
		b := otherNode(t, f, &memShared{ids: map[string]time.Time{}})
		state, loc := f.login()
		resp := f.answer(f.idp, loc)
		if rec := f.post(site, state, resp); rec.Code != http.StatusSeeOther {
			t.Fatalf("first post, on node A: %d %s", rec.Code, rec.Body)
		}
		f.logs.TakeAll()
		f.on(b, func() {
			rec := f.post(site, state, resp)
			if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"error":"invalid_response"`) {
				t.Fatalf("the same answer on node B: %d %s, want 401", rec.Code, rec.Body)
			}
		})
		// Node B's log is its own; A's logs nothing of B's refusal.
		if n := len(f.logs.FilterMessageSnippet("refused").All()); n != 0 {
			t.Fatalf("node A logged %d refusals for node B's", n)
		}
		// A fresh login goes through on B.
		state, loc = f.login()
		f.on(b, func() {
			if rec := f.post(site, state, f.answer(f.idp, loc)); rec.Code != http.StatusSeeOther {
				t.Fatalf("a new login on node B: %d %s", rec.Code, rec.Body)
			}
		})
	})
}

// With the cluster's record out of reach, the assertion is refused with
// 503 (fail closed, as sessions are when revocations cannot be read), and
// no session starts.
func TestReplayRecordOutOfReachFailsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, true)
		shared := &memShared{ids: map[string]time.Time{}, down: true}
		f.sp.cfg.Shared = shared
		state, loc := f.login()
		rec := f.post(site, state, f.answer(f.idp, loc))
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"error":"login_unavailable"`) {
			t.Fatalf("with the record out of reach: %d %q %s, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
		if id := f.identify(rec); id != nil {
			t.Fatalf("a session started for %q", id.Subject)
		}
		if w := f.logs.FilterMessageSnippet("out of reach").All(); len(w) != 1 {
			t.Fatalf("%d log lines about the record out of reach, want 1: %v", len(w), f.logs.All())
		}
	})
}

// A process's record given to a new SP (a config reload) keeps refusing
// what the old SP accepted.
func TestReplaysOutliveTheSP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, true)
		record := NewLocalReplays()
		f.sp.cfg.Replays = record
		state, loc := f.login()
		resp := f.answer(f.idp, loc)
		if rec := f.post(site, state, resp); rec.Code != http.StatusSeeOther {
			t.Fatalf("first post: %d %s", rec.Code, rec.Body)
		}
		cfg := f.sp.cfg
		reloaded, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.on(reloaded, func() {
			if rec := f.post(site, state, resp); rec.Code != http.StatusUnauthorized {
				t.Fatalf("the same answer after a reload: %d %s, want 401", rec.Code, rec.Body)
			}
		})
	})
}
