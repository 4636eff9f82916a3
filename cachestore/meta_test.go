package cachestore

import (
	"errors"
	"testing"
	"time"
)

func TestMetaTTLAndScan(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.PutMetaTTL("floor/a", []byte("1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMetaTTL("floor/b", []byte("2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMetaTTL("floor/c", []byte("3"), 0); err == nil {
		t.Fatal("a zero ttl was accepted")
	}
	var got []string
	if err := s.ScanMeta("floor/", func(name string, v []byte) bool {
		got = append(got, name+"="+string(v))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "floor/a=1" || got[1] != "floor/b=2" {
		t.Fatalf("scan = %v, want [floor/a=1 floor/b=2]", got)
	}
	if err := s.DeleteMeta("floor/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta("floor/a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v, want ErrNotFound", err)
	}
}
