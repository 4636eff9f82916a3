package session

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestMemRevocationsExpire(t *testing.T) {
	// revoked revokes "a" for an hour and "b" for two, at the bubble's start.
	revoked := func(t *testing.T) *memRevocations {
		m := newMemRevocations()
		if err := m.Revoke("a", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := m.Revoke("b", time.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		after time.Duration
		id    string
		want  bool
	}{
		{"revoked", 0, "a", true},
		{"never revoked", 0, "c", false},
		{"just before the end", time.Hour - time.Second, "a", true},
		{"at the end", time.Hour, "a", false},
		{"a longer one stays", time.Hour, "b", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := revoked(t)
				time.Sleep(tc.after)
				if got, err := m.Revoked(tc.id); err != nil || got != tc.want {
					t.Fatalf("Revoked(%q) = %v, %v, want %v", tc.id, got, err, tc.want)
				}
			})
		})
	}
	t.Run("expired ones are forgotten", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			m := revoked(t)
			time.Sleep(time.Hour)
			_ = m.Revoke("c", time.Now().Add(time.Minute))
			if _, kept := m.ids["a"]; kept {
				t.Error("an expired revocation is kept in memory forever")
			}
		})
	})
}
