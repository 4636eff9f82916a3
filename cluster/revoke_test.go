package cluster

import (
	"context"
	"testing"
	"time"
)

func TestRevocationsAcrossNodes(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	rdb := r.client()
	defer rdb.Close()
	if err := a.Revoke("sess-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"sess-1", true},
		{"sess-2", false},
		{"", false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			got, err := b.Revoked(tc.id)
			if err != nil || got != tc.want {
				t.Fatalf("Revoked(%q) on the other node = %v, %v; want %v", tc.id, got, err, tc.want)
			}
		})
	}
	if ttl := rdb.PTTL(context.Background(), "t:revoked:sess-1").Val(); ttl < time.Hour-5*time.Second || ttl > time.Hour {
		t.Fatalf("revocation TTL %v; want the session's remaining life, 1 h", ttl)
	}
	// Past its cookie's life, a revocation is forgotten.
	if err := a.Revoke("sess-3", time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Revoked("sess-3"); !got {
		t.Fatal("sess-3 not revoked")
	}
	waitFor(t, 2*time.Second, "the revocation expires with the session", func() bool {
		got, err := b.Revoked("sess-3")
		return err == nil && !got
	})
	if err := a.Revoke("sess-4", time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("Revoke of an expired session: %v", err)
	}
	if n := rdb.Exists(context.Background(), "t:revoked:sess-4").Val(); n != 0 {
		t.Fatal("an expired session's revocation was stored")
	}
	if err := a.Revoke("", time.Now().Add(time.Hour)); err == nil {
		t.Fatal("Revoke of an empty id: no error")
	}
}
