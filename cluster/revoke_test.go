package cluster

import (
	"context"
	"errors"
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

// An assertion accepted on one node is refused on every other, until it
// expires; with Redis out of reach the answer is an error (fail closed).
func TestAssertionsAcrossNodes(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	until := time.Now().Add(300 * time.Millisecond)
	if err := a.ConsumeAssertion("id-1", until); err != nil {
		t.Fatalf("first use: %v", err)
	}
	for name, c := range map[string]*Cluster{"the other node": b, "the same node": a} {
		if err := c.ConsumeAssertion("id-1", until); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay on %s: %v, want ErrReplayed", name, err)
		}
	}
	if err := b.ConsumeAssertion("id-2", until); err != nil {
		t.Fatalf("another assertion: %v", err)
	}
	rdb := r.client()
	defer rdb.Close()
	if ttl := rdb.PTTL(context.Background(), "t:saml:id-1").Val(); ttl <= 0 || ttl > 1300*time.Millisecond {
		t.Fatalf("the record's TTL is %v; want the assertion's remaining life and a second", ttl)
	}
	r.Kill()
	if err := b.ConsumeAssertion("id-3", time.Now().Add(time.Minute)); err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("with Redis down: %v, want an error other than ErrReplayed", err)
	}
}
