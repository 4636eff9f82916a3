package cachestore

import (
	"strings"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// badgerOptions sizes Badger for what it holds here: entries under bodyFileMin, index records,
// tag keys and meta values. Large entries are in body files (bodyfile.go) and hot ones decoded
// in our memory layer, so Badger needs neither large buffers nor large caches. The defaults are
// tuned for a database server (64 MiB memtables x5, a 256 MiB block cache, 1 GiB value-log
// files) and cost both memory and disk that a cache bounded to max_size must not spend.
//
// Badger's files besides the LSM tables, counted by file size (the .mem and .vlog files are
// preallocated sparse files, so they occupy less on disk):
//
//	.mem      2 x memTableSize each, at most numMemtables + 1 of them  = 24 MiB
//	.vlog     2 x valueLogFileSize for the one being written, plus
//	          meta values of bodyFileMin or more (none in practice)  =  2 MiB
//	DISCARD   1 MiB
//
// See DiskOverhead for the bound this gives the whole directory.
func badgerOptions(dir string, log *zap.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.Sugar()}).
		WithNumVersionsToKeep(1).
		// A transaction may carry up to 15% of a memtable (600 KiB): an entry under
		// bodyFileMin with its index record and tag keys.
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		// Level 0 holds flushed memtables with all their garbage until compacted; the stall
		// bounds it at numLevelZeroStall tables of about memTableSize.
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(numLevelZeroStall).
		// Snappy-compressed SST blocks are read through the block cache; the LSM tree holds only
		// small values, and hot entries are served from our memory layer.
		WithBlockCacheSize(4 << 20).
		// Below bodyFileMin everything stays in the LSM tree, where compaction reclaims its
		// space; above it, entries are files of their own. The value log is then unused but
		// for large meta values, so it gets Badger's smallest file size.
		WithValueThreshold(bodyFileMin).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(2).
		// Writes are serialized by Store.mu, so conflict tracking would be pure overhead.
		WithDetectConflicts(false).
		// Badger's metrics are process-global expvars; ours are Stats.
		WithMetricsEnabled(false)
}

// DiskOverhead is what the store's directory may hold beyond Options.MaxBytes, which bounds
// the entries themselves (body files and the values in the LSM tree):
//
//	(numMemtables+1) x 2 x memTableSize    .mem files, counted at their preallocated size
//	2 x valueLogFileSize + 1 MiB           the .vlog being written and DISCARD
//	numLevelZeroStall x memTableSize       level-0 tables, with the garbage of small entries
//	                                       replaced or deleted since they were flushed
//	8 MiB                                  garbage in deeper LSM levels, MANIFEST, KEYREGISTRY
//
// that is 8 x 3 + 2 + 1 + 16 + 8 = 51 MiB. A replaced entry's old body file lives on until
// the replacement is committed, so a Put may exceed the bound by the size of the entry it
// replaces for that moment.
const DiskOverhead = (numMemtables+1)*2*memTableSize + 2*valueLogFileSize + 1<<20 +
	numLevelZeroStall*memTableSize + 8<<20

const (
	memTableSize      = 4 << 20
	numMemtables      = 2
	numLevelZeroStall = 4
	valueLogFileSize  = 1 << 20 // Badger's minimum
)

// badgerLogger routes Badger's warnings and errors to zap and drops its chatty INFO and DEBUG
// lines (table flushes, compactions, replay progress).
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, args ...any) {
	b.l.Errorf("badger: "+strings.TrimSpace(f), args...)
}

func (b badgerLogger) Warningf(f string, args ...any) {
	b.l.Warnf("badger: "+strings.TrimSpace(f), args...)
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

var _ badger.Logger = badgerLogger{}
