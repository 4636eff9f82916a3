package cachestore

import (
	"strings"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// badgerOptions sizes Badger for a cache of at most a few GiB on a small machine. The defaults
// are tuned for a database server (64 MiB memtables x5, a 256 MiB block cache, 1 GiB value-log
// files); here the hot entries live decoded in our own memory layer, so Badger's caches only
// need to hold indexes and the blocks of small values.
func badgerOptions(dir string, log *zap.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.Sugar()}).
		WithNumVersionsToKeep(1).
		// Two 16 MiB memtables bound write buffering at 32 MiB. A transaction may carry up to
		// 15% of a memtable (2.4 MiB), comfortably above ValueThreshold.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		// Snappy-compressed SST blocks need a block cache; 16 MiB is plenty for the small
		// values kept in the LSM tree.
		WithBlockCacheSize(16 << 20).
		// Small answers (availability) stay in the LSM tree, compressed, and their space comes
		// back through compaction. Larger ones (catalogs) go to the value log so compactions do
		// not rewrite megabytes again and again; their space comes back through value-log GC.
		WithValueThreshold(64 << 10).
		// Value-log GC rewrites one file at a time; smaller files let it give space back sooner
		// in a store bounded to about a GiB.
		WithValueLogFileSize(128 << 20).
		WithNumCompactors(2).
		// Writes are serialized by Store.mu, so conflict tracking would be pure overhead.
		WithDetectConflicts(false).
		// Badger's metrics are process-global expvars; ours are Stats.
		WithMetricsEnabled(false)
}

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
