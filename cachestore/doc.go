// Package cachestore is the on-disk cache of s360edge: S-360 JSON answers (2 KB to 10 MB) stored
// in Badger under canonical keys built by the caller, with a bounded in-memory layer of decoded
// entries in front. One Store per directory; it is long-lived and safe for concurrent use.
//
// # Key layout
//
//	e/<key>             the entry, in the versioned, checksummed format of encodeEntry
//	i/<key>             its index record: class, encoded size, StoredAt, StaleUntil, tags
//	t/<tag>\x00<key>    empty value; tag index for PurgeTag (tags may not contain NUL)
//	m/<name>            meta values (Get/PutMeta); never evicted, purged or expired
//
// An entry whose encoding is bodyFileMin (64 KiB) or more is stored in the file
// bodies/<sha256 of key>, and its e/ value is only a marker; the file is deleted with the entry,
// so the directory stays within MaxBytes + DiskOverhead (see bodyfile.go). The meta value
// cachestore/layout marks that layout; a directory without it that holds entries drops them once
// at Open (upgradeLayoutLocked).
//
// e/, i/ and t/ keys of one entry are written and deleted in one transaction and carry the same
// Badger TTL, so they appear and disappear together.
//
// # Trade-offs
//
// The index record duplicates a few fields of the entry so that everything that looks at many
// entries (restoring the size accounting at Open, eviction, PurgeClass, Keys, the expiry sweep)
// reads small, contiguous i/ records instead of megabytes of bodies. The store keeps no
// per-entry state in memory besides the memory layer: eviction sorts a scan of the index records
// when the bound is crossed, which is rare because each eviction frees a tenth of the bound.
//
// Writes (Put, Delete, purges, eviction, sweeps, deleting a corrupt entry) are serialized by one
// mutex. They follow upstream calls, which the edge's rate limit keeps to a few per second, and
// serializing them keeps the byte accounting exact without transaction retries. Reads never take
// that mutex.
//
// Expiry is ours: an entry past StaleUntil is reported as not found and removed
// by the periodic sweep. Badger's TTL (whole seconds, plus a minute) is only a backstop for
// entries the sweep never saw, for example because the process was down.
//
// Every stored value ends with a CRC-32C. A value that fails to decode is never served: it is
// deleted and counted in Stats.Corrupt, and the caller sees ErrNotFound, that is, a miss.
package cachestore
