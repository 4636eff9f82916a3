package cachestore

import (
	"encoding/binary"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func fullEntry() *Entry {
	return &Entry{
		Status: 200,
		Header: http.Header{
			"Content-Type": {"application/json; charset=utf-8"},
			"X-Multi":      {"a", "", "c"},
		},
		Body:       []byte(`{"statusCode":"success","products":[1,2,3]}`),
		StoredAt:   time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC),
		FreshUntil: time.Date(2026, 3, 1, 11, 0, 0, 1, time.UTC),
		StaleUntil: time.Date(2026, 3, 2, 10, 0, 0, 0, time.FixedZone("CET", 3600)),
		Class:      Availability,
		Generation: 1<<63 + 5,
		Tags:       []string{"product:10228231108335", "product:1"},
		Canonical:  []byte(`{"performanceIds":[1],"pointOfSalesId":7}`),
	}
}

// assertSameEntry compares entries field by field; times by instant, since locations are not
// stored.
func assertSameEntry(t testing.TB, want, got *Entry) {
	t.Helper()
	if got == nil {
		t.Fatal("got nil entry")
	}
	if got.Status != want.Status || got.Class != want.Class || got.Generation != want.Generation {
		t.Errorf("scalars: got %d/%v/%d, want %d/%v/%d", got.Status, got.Class, got.Generation,
			want.Status, want.Class, want.Generation)
	}
	if string(got.Body) != string(want.Body) {
		t.Errorf("body: got %d bytes %.40q, want %d bytes %.40q", len(got.Body), got.Body, len(want.Body), want.Body)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Errorf("header: got %v, want %v", got.Header, want.Header)
	}
	if string(got.Canonical) != string(want.Canonical) {
		t.Errorf("canonical: got %q, want %q", got.Canonical, want.Canonical)
	}
	if !slices.Equal(got.Tags, want.Tags) {
		t.Errorf("tags: got %v, want %v", got.Tags, want.Tags)
	}
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"StoredAt", got.StoredAt, want.StoredAt},
		{"FreshUntil", got.FreshUntil, want.FreshUntil},
		{"StaleUntil", got.StaleUntil, want.StaleUntil},
	} {
		if !tt.got.Equal(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for name, e := range map[string]*Entry{
		"full":  fullEntry(),
		"empty": {Class: Other},
		"far future": {Class: Catalog, StaleUntil: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
			StoredAt: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(name, func(t *testing.T) {
			b := encodeEntry(e)
			got, err := decodeEntry(b)
			if err != nil {
				t.Fatal(err)
			}
			assertSameEntry(t, e, got)
			if !slices.Equal(encodeEntry(got), b) {
				t.Error("re-encoding the decoded entry gives other bytes")
			}
		})
	}
}

func TestCodecRejectsEveryCorruption(t *testing.T) {
	b := encodeEntry(fullEntry())
	for i := range b {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			c := slices.Clone(b)
			c[i] ^= mask
			if _, err := decodeEntry(c); !errors.Is(err, errCodec) {
				t.Fatalf("byte %d ^ %#x: got %v, want a codec error", i, mask, err)
			}
		}
	}
	for n := range len(b) {
		if _, err := decodeEntry(b[:n]); !errors.Is(err, errCodec) {
			t.Fatalf("truncated to %d: got %v, want a codec error", n, err)
		}
	}
}

func TestCodecRejectsUnknownVersion(t *testing.T) {
	p := encodeEntry(fullEntry())
	p = p[:len(p)-checksumLen]
	p[0] = 3
	_, err := decodeEntry(appendChecksum(p))
	if !errors.Is(err, errCodec) || !strings.Contains(err.Error(), "version 3") {
		t.Fatalf("got %v, want an unknown-version error", err)
	}
}

// An entry written before keys held a hash (format version 1: no canonical
// body) still decodes, with no Canonical, so no reader's body matches it.
func TestCodecDecodesVersion1WithoutCanonical(t *testing.T) {
	want := fullEntry()
	want.Canonical = nil
	want.Header = http.Header{"Content-Type": {"application/json"}}
	b := []byte{1}
	b = binary.AppendVarint(b, int64(want.Status))
	for _, tm := range []time.Time{want.StoredAt, want.FreshUntil, want.StaleUntil} {
		b = appendTime(b, tm)
	}
	b = append(b, byte(want.Class))
	b = binary.AppendUvarint(b, want.Generation)
	b = appendStrings(b, want.Tags)
	b = binary.AppendUvarint(b, 1)
	b = appendString(b, "Content-Type")
	b = appendStrings(b, []string{"application/json"})
	b = appendString(b, string(want.Body))
	got, err := decodeEntry(appendChecksum(b))
	if err != nil {
		t.Fatal(err)
	}
	assertSameEntry(t, want, got)
	if got.Canonical != nil {
		t.Errorf("version 1 entry got canonical %q", got.Canonical)
	}
}

func TestIndexRoundTrip(t *testing.T) {
	r := indexRecord{Class: Catalog, Size: 10 << 20, StoredAt: time.Unix(1700000000, 5),
		StaleUntil: time.Unix(1800000000, 0), Tags: []string{"a", "b"}}
	got, err := decodeIndex(encodeIndex(r))
	if err != nil {
		t.Fatal(err)
	}
	if got.Class != r.Class || got.Size != r.Size || !got.StoredAt.Equal(r.StoredAt) ||
		!got.StaleUntil.Equal(r.StaleUntil) || !slices.Equal(got.Tags, r.Tags) {
		t.Fatalf("got %+v, want %+v", got, r)
	}
}

func TestClassNames(t *testing.T) {
	for _, c := range []Class{Catalog, Availability, Other} {
		got, err := ParseClass(c.String())
		if err != nil || got != c {
			t.Errorf("ParseClass(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseClass("orders"); err == nil {
		t.Error("ParseClass(orders) succeeded")
	}
}

// FuzzDecode checks that decoding never panics, that failures are codec errors, and that what
// decodes re-encodes to something that decodes to the same entry.
func FuzzDecode(f *testing.F) {
	for _, e := range []*Entry{fullEntry(), {Class: Other}, {Class: Catalog, Body: make([]byte, 300)}} {
		b := encodeEntry(e)
		f.Add(b)
		// Also the payload without its checksum: the fuzz function appends a valid one, so
		// mutations of it reach the parser instead of stopping at the checksum.
		f.Add(b[:len(b)-checksumLen])
	}
	idx := encodeIndex(indexRecord{Class: Other, Size: 42, Tags: []string{"product:1"}})
	f.Add(idx)
	f.Add(idx[:len(idx)-checksumLen])
	f.Add([]byte{})
	f.Add([]byte{entryVersion})
	f.Add([]byte{entryVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})

	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		checkDecode(t, appendChecksum(slices.Clone(b)))
	})
}

func checkDecode(t *testing.T, b []byte) {
	e, err := decodeEntry(b)
	switch {
	case err != nil && !errors.Is(err, errCodec):
		t.Fatalf("decodeEntry: error %v is not a codec error", err)
	case err == nil:
		again, err := decodeEntry(encodeEntry(e))
		if err != nil {
			t.Fatalf("decoding a re-encoded entry: %v", err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("re-encoding changed the entry:\n%+v\n%+v", e, again)
		}
	}
	r, err := decodeIndex(b)
	switch {
	case err != nil && !errors.Is(err, errCodec):
		t.Fatalf("decodeIndex: error %v is not a codec error", err)
	case err == nil:
		again, err := decodeIndex(encodeIndex(r))
		if err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoding changed the index record: %v\n%+v\n%+v", err, r, again)
		}
	}
}
