package edge

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
)

// An invalid answer is never stored and never replaces an entry: the old
// entry is served as stale-if-error, and the next good answer is stored.
func TestInvalidAnswerNeverReplacesTheEntry(t *testing.T) {
	for name, bad := range map[string]string{
		"cut body":   `{"statusCode":"success","code":"TRUNC`,
		"HTML":       `<html><body>"statusCode":"success"</body></html>`,
		"array":      `[{"statusCode":"success"}]`,
		"no status":  `{"catalogData":{}}`,
		"two values": `{"statusCode":"success"} {"statusCode":"success"}`,
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v := newEnvPolicy(t, nil, "", minuteAvail)
				expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; fwd=miss; stored", `"echo"`)
				time.Sleep(3 * time.Minute) // past max_age and stale_while_revalidate
				v.f.set(200, bad)
				r := v.serve(t, avail, `{"performanceIds":[1]}`)
				expect(t, r, "s360edge; hit; ttl=-120; detail=stale-if-error", `"echo"`)
				ent, err := v.e.Store().Get(s360.Key("mosa", avail, []byte(`{"performanceIds":[1]}`)))
				if err != nil || string(ent.Body) == bad {
					t.Fatalf("stored entry replaced: %v %q", err, ent.Body)
				}
				// Without an entry to fall back on, the failure shows.
				r = v.serve(t, avail, `{"performanceIds":[2]}`)
				if r.Err == nil || r.Entry != nil || r.Resp != nil {
					t.Fatalf("invalid answer passed on: %+v", r)
				}
				if _, err := v.e.Store().Get(s360.Key("mosa", avail, []byte(`{"performanceIds":[2]}`))); err == nil {
					t.Fatal("invalid answer stored")
				}
			})
		})
	}
}

// Keys hold a hash of the canonical body; the body itself is in the entry,
// and an entry whose body differs (a collision, or an entry from before the
// hash) is a miss, never another request's answer.
func TestKeyCollisionIsAMiss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		body := []byte(`{"performanceIds":[1]}`)
		key := s360.Key("mosa", avail, body)
		now := time.Now()
		err := v.e.Store().Put(key, &cachestore.Entry{Status: 200, Body: []byte(`{"statusCode":"success","other":true}`),
			FreshUntil: now.Add(time.Hour), StaleUntil: now.Add(2 * time.Hour), Class: cachestore.Availability,
			Canonical: []byte(`{"performanceIds":[999]}`)})
		if err != nil {
			t.Fatal(err)
		}
		expect(t, v.serve(t, avail, string(body)), "s360edge; fwd=miss; stored", `"echo":{"performanceIds":[1]}`)
		if n := v.f.calls.Load(); n != 1 {
			t.Fatalf("%d upstream calls, want 1: the colliding entry was served", n)
		}
		expect(t, v.serve(t, avail, string(body)), "s360edge; hit; ttl=3600", `"echo":{"performanceIds":[1]}`)
	})
}

// Any body up to max_body_size caches: the key stays small.
func TestHugeBodyCaches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newEnv(t, nil, "")
		ids := `{"note":"` + strings.Repeat("x", 900<<10) + `"}` // far over Badger's 65,000-byte key limit
		expect(t, v.serve(t, catalog, ids), "s360edge; fwd=miss; stored", `"echo"`)
		expect(t, v.serve(t, catalog, ids), "s360edge; hit; ttl=86400", `"echo"`)
		if n := v.f.calls.Load(); n != 1 {
			t.Fatalf("%d upstream calls, want 1", n)
		}
	})
}
