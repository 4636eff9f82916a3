package cachestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"slices"
	"time"
)

// Class is the kind of S-360 answer an entry holds. It decides how the edge refreshes and
// invalidates the entry; the store only uses it for PurgeClass and Keys.
type Class uint8

const (
	Catalog      Class = 1
	Availability Class = 2
	Other        Class = 3
)

// String returns the lower-case name used in configs, metrics labels and the admin API.
func (c Class) String() string {
	switch c {
	case Catalog:
		return "catalog"
	case Availability:
		return "availability"
	case Other:
		return "other"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// ParseClass is the inverse of Class.String.
func ParseClass(s string) (Class, error) {
	switch s {
	case "catalog":
		return Catalog, nil
	case "availability":
		return Availability, nil
	case "other":
		return Other, nil
	}
	return 0, fmt.Errorf("parsing class %q: want catalog, availability or other", s)
}

func (c Class) valid() bool { return c >= Catalog && c <= Other }

// Entry is one stored answer.
//
// An *Entry returned by Get or passed to a Keys callback is shared by every caller that reads the
// same key (that is how a 10 MB body is served without a copy per request): it MUST be treated
// as read-only, including its Header map, Body and Tags. Put copies what it is given, so the
// caller may reuse its own Entry afterwards.
type Entry struct {
	Status     int
	Header     http.Header // only the selected headers the caller passes (Content-Type etc.)
	Body       []byte
	StoredAt   time.Time // zero means "now" at Put; eviction removes the oldest first
	FreshUntil time.Time
	StaleUntil time.Time // after this the entry is useless (Get reports ErrNotFound); zero = never
	Class      Class
	Generation uint64   // catalog generation the entry was fetched in
	Tags       []string // e.g. "product:10228231108335", for PurgeTag
	// Canonical is the canonical request body the answer is for. Keys
	// hold only its hash, so a reader compares it to its own body: a
	// hash collision is then a miss, never another request's answer.
	// Entries of format version 1 have none, and so never match.
	Canonical []byte
}

// errCodec is wrapped by every decoding failure; the store treats it as corruption.
var errCodec = errors.New("corrupt encoding")

// castagnoli is hardware-accelerated on amd64 and arm64, so checking a 10 MB body on a disk read
// costs about a millisecond and nothing on memory hits.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	entryVersion = 2
	indexVersion = 1
	checksumLen  = 4
)

// encodeEntry writes the entry format, version 2:
//
//	version    byte (2; version 1 is the same without canonical)
//	status     varint
//	storedAt   time (varint Unix seconds, uvarint nanoseconds)
//	freshUntil time
//	staleUntil time
//	class      byte
//	generation uvarint
//	tags       uvarint count, then each as uvarint length + bytes
//	canonical  uvarint length + bytes (version 2 only)
//	header     uvarint count of names, then each: name (length + bytes),
//	           uvarint count of values, each value (length + bytes); names sorted
//	body       uvarint length + bytes
//	checksum   4 bytes, big-endian CRC-32C of everything before it
//
// Times are seconds+nanoseconds rather than UnixNano so that any time.Time, including the zero
// time and far-future "never" values, round-trips exactly (location aside).
func encodeEntry(e *Entry) []byte {
	enc := encodeParts(e, len(e.Body)+checksumLen)
	return binary.BigEndian.AppendUint32(append(enc.head, e.Body...), enc.sum)
}

// encoded is an entry's encoding in parts, so that a large body is written where it goes
// without being copied: head, then the entry's Body, then sum as 4 big-endian bytes.
type encoded struct {
	head []byte
	sum  uint32
}

func (enc encoded) size(e *Entry) int64 { return int64(len(enc.head) + len(e.Body) + checksumLen) }

// encodeParts encodes everything before the body into head, with room for extra bytes more, and
// the checksum of head and body.
func encodeParts(e *Entry, extra int) encoded {
	n := 64 + len(e.Canonical) + extra
	for _, t := range e.Tags {
		n += len(t) + 2
	}
	for k, vs := range e.Header {
		n += len(k) + 4
		for _, v := range vs {
			n += len(v) + 2
		}
	}
	b := make([]byte, 0, n)
	b = append(b, entryVersion)
	b = binary.AppendVarint(b, int64(e.Status))
	b = appendTime(b, e.StoredAt)
	b = appendTime(b, e.FreshUntil)
	b = appendTime(b, e.StaleUntil)
	b = append(b, byte(e.Class))
	b = binary.AppendUvarint(b, e.Generation)
	b = appendStrings(b, e.Tags)
	b = binary.AppendUvarint(b, uint64(len(e.Canonical)))
	b = append(b, e.Canonical...)
	names := make([]string, 0, len(e.Header))
	for k := range e.Header {
		names = append(names, k)
	}
	slices.Sort(names) // deterministic bytes for equal entries
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = appendString(b, k)
		b = appendStrings(b, e.Header[k])
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	return encoded{head: b, sum: crc32.Update(crc32.Checksum(b, castagnoli), castagnoli, e.Body)}
}

// decodeEntry checks the checksum, then parses. It never panics, and never allocates more than
// the input can justify, whatever the bytes. The returned Body aliases b, so b must not be
// reused by the caller (Get passes a fresh ValueCopy).
func decodeEntry(b []byte) (*Entry, error) {
	p, err := verifyChecksum(b)
	if err != nil {
		return nil, err
	}
	return decodeEntryPayload(p)
}

func decodeEntryPayload(p []byte) (*Entry, error) {
	d := decoder{b: p}
	v := d.byte()
	if d.err == nil && v != 1 && v != entryVersion {
		return nil, fmt.Errorf("decoding entry: unknown version %d: %w", v, errCodec)
	}
	e := &Entry{}
	status := d.varint()
	if status < 0 || status > 999 {
		d.fail()
	}
	e.Status = int(status)
	e.StoredAt = d.time()
	e.FreshUntil = d.time()
	e.StaleUntil = d.time()
	e.Class = Class(d.byte())
	if d.err == nil && !e.Class.valid() {
		d.fail()
	}
	e.Generation = d.uvarint()
	e.Tags = d.strings()
	if v >= 2 {
		e.Canonical = d.bytes()
	}
	if n := d.count(); n > 0 {
		e.Header = make(http.Header, n)
		for range n {
			k := d.string()
			vs := d.strings()
			if d.err != nil {
				break
			}
			e.Header[k] = append(e.Header[k], vs...)
		}
	}
	e.Body = d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.fail() // trailing bytes: not something encodeEntry wrote
	}
	if d.err != nil {
		return nil, fmt.Errorf("decoding entry: %w", d.err)
	}
	return e, nil
}

// indexRecord is what the store needs to know about an entry without reading its body: enough to
// restore the size accounting at Open, choose eviction victims, purge by class, sweep expired
// entries and find the tag index keys to delete with the entry.
type indexRecord struct {
	Class      Class
	Size       int64 // length of the encoded entry
	StoredAt   time.Time
	StaleUntil time.Time
	Tags       []string
}

// encodeIndex: version byte (1), class byte, size uvarint, storedAt, staleUntil, tags (as in the
// entry format), CRC-32C.
func encodeIndex(r indexRecord) []byte {
	b := make([]byte, 0, 48+len(r.Tags)*24)
	b = append(b, indexVersion, byte(r.Class))
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = appendTime(b, r.StoredAt)
	b = appendTime(b, r.StaleUntil)
	b = appendStrings(b, r.Tags)
	return appendChecksum(b)
}

func decodeIndex(b []byte) (indexRecord, error) {
	var r indexRecord
	p, err := verifyChecksum(b)
	if err != nil {
		return r, err
	}
	d := decoder{b: p}
	if v := d.byte(); d.err == nil && v != indexVersion {
		return r, fmt.Errorf("decoding index record: unknown version %d: %w", v, errCodec)
	}
	r.Class = Class(d.byte())
	size := d.uvarint()
	if size > 1<<40 {
		d.fail()
	}
	r.Size = int64(size)
	r.StoredAt = d.time()
	r.StaleUntil = d.time()
	r.Tags = d.strings()
	if d.err == nil && (len(d.b) != 0 || !r.Class.valid()) {
		d.fail()
	}
	if d.err != nil {
		return indexRecord{}, fmt.Errorf("decoding index record: %w", d.err)
	}
	return r, nil
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendChecksum(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// verifyChecksum returns the payload of b without its trailing checksum.
func verifyChecksum(b []byte) ([]byte, error) {
	if len(b) < 1+checksumLen {
		return nil, fmt.Errorf("checking checksum: %d bytes is too short: %w", len(b), errCodec)
	}
	p, sum := b[:len(b)-checksumLen], binary.BigEndian.Uint32(b[len(b)-checksumLen:])
	if crc32.Checksum(p, castagnoli) != sum {
		return nil, fmt.Errorf("checking checksum: mismatch: %w", errCodec)
	}
	return p, nil
}

// decoder reads the primitives of both formats. The first failure sticks, and every later read
// returns a zero value, so parsing code reads straight through and checks d.err once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCodec
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 { return readVarint(d, binary.Uvarint) }

func (d *decoder) varint() int64 { return readVarint(d, binary.Varint) }

// readVarint reads one number with read, binary.Uvarint or binary.Varint.
func readVarint[T uint64 | int64](d *decoder, read func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := read(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil || nsec >= uint64(time.Second) {
		d.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// count reads a number of items that follow. Every item takes at least one byte, so a count
// larger than what is left is corrupt; this bounds allocations by the input's length.
func (d *decoder) count() int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	v := d.b[:n:n] // capped, so an append by a careless reader cannot scribble on what follows
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) strings() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, 0, n)
	for range n {
		s := d.string()
		if d.err != nil {
			return nil
		}
		ss = append(ss, s)
	}
	return ss
}

// EncodeEntry is the store's own encoding of an entry, checksum included,
// for another tier (the cluster's shared one) to hold.
func EncodeEntry(e *Entry) []byte { return encodeEntry(e) }

// DecodeEntry parses what EncodeEntry wrote, checking the checksum; it
// never panics, whatever the bytes. The entry's Body aliases b.
func DecodeEntry(b []byte) (*Entry, error) { return decodeEntry(b) }
