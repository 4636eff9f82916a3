package cachestore

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var benchSizes = []struct {
	name string
	size int
}{
	{"2KB", 2 << 10},
	{"1MB", 1 << 20},
}

func benchEntry(size int) *Entry {
	now := time.Now()
	return &Entry{
		Status:     200,
		Header:     map[string][]string{"Content-Type": {"application/json"}},
		Body:       []byte(`{"data":"` + strings.Repeat("x", size-11) + `"}`),
		StoredAt:   now,
		FreshUntil: now.Add(time.Hour),
		StaleUntil: now.Add(24 * time.Hour),
		Class:      Catalog,
		Tags:       []string{"product:10228231108335"},
	}
}

// BenchmarkGetMemory is the hot path: a hit in the memory layer, no copy of the body.
func BenchmarkGetMemory(b *testing.B) {
	for _, bs := range benchSizes {
		b.Run(bs.name, func(b *testing.B) {
			s := openTest(b, Options{})
			mustPut(b, s, "k", benchEntry(bs.size))
			if _, err := s.Get("k"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Get("k"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGetMemoryParallel shows the cost of the memory layer's lock under contention.
func BenchmarkGetMemoryParallel(b *testing.B) {
	s := openTest(b, Options{})
	mustPut(b, s, "k", benchEntry(2<<10))
	if _, err := s.Get("k"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Get("k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetDisk reads, copies, checks and decodes from Badger on every call.
func BenchmarkGetDisk(b *testing.B) {
	for _, bs := range benchSizes {
		b.Run(bs.name, func(b *testing.B) {
			s := openTest(b, Options{MemoryBytes: -1})
			mustPut(b, s, "k", benchEntry(bs.size))
			b.SetBytes(int64(bs.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Get("k"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPut overwrites a rotating set of keys, so the store stays at a steady size.
func BenchmarkPut(b *testing.B) {
	for _, bs := range benchSizes {
		b.Run(bs.name, func(b *testing.B) {
			s := openTest(b, Options{})
			e := benchEntry(bs.size)
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("key-%d", i)
			}
			b.SetBytes(int64(bs.size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := s.Put(keys[i%len(keys)], e); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
