package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// Shared-tier timings. A value of up to inlineMax compressed bytes comes
// back in the first round trip, bounded by OpTimeout like every hot-path
// call; a larger one takes a second round trip bounded by OpTimeout plus
// its transfer at tierBytesPerSecond (a 10 MB value: 50 ms + 200 ms), so a
// big catalog is neither refused nor allowed to hang a request.
const (
	inlineMax          = 256 << 10
	tierBytesPerSecond = 10 << 20
	// slowOpTimeout bounds (with the transfer) what runs off the request's
	// critical path: storing an entry, purges and invalidations, which may
	// delete many keys in one script.
	slowOpTimeout = time.Second
	// maxTierTTL is the life of an entry that never goes stale: every key
	// has a TTL.
	maxTierTTL = 7 * 24 * time.Hour
	// maxDecoded bounds what a value may decompress to.
	maxDecoded = 512 << 20
)

var (
	zenc = sync.OnceValue(func() *zstd.Encoder {
		e, _ := zstd.NewWriter(nil) // EncodeAll runs concurrently on up to GOMAXPROCS encoders
		return e
	})
	zdec = sync.OnceValue(func() *zstd.Decoder {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecoded))
		return d
	})
)

// getScript returns the value when it is small, else its length, so that
// the common case is one round trip and a large value gets a bound fit
// for its size. KEYS[1] entry; ARGV[1] inlineMax.
var getScript = redis.NewScript(`
local n = redis.call('STRLEN', KEYS[1])
if n == 0 then return false end
if n <= tonumber(ARGV[1]) then return redis.call('GET', KEYS[1]) end
return n
`)

// dropScript deletes every entry named in the index sets KEYS[1..ARGV[2]],
// and the sets, then the ARGV[4] entries named next, and sets the
// invalidation marks (the remaining KEYS) to Redis's clock now
// (microseconds), for ARGV[3] ms: a put whose call began before is refused
// (putScript). ARGV[1] is the entries' key prefix. Returns how
// many entries it deleted.
var dropScript = redis.NewScript(`
local n, sets, ents = 0, tonumber(ARGV[2]), tonumber(ARGV[4])
for i = 1, sets do
  for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    n = n + redis.call('DEL', ARGV[1] .. m)
  end
  redis.call('DEL', KEYS[i])
end
for i = sets + 1, sets + ents do
  n = n + redis.call('DEL', KEYS[i])
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', t[2])
for i = sets + ents + 1, #KEYS do
  redis.call('SET', KEYS[i], now, 'PX', ARGV[3])
end
return n
`)

// putScript stores an entry and indexes it in its class's and tags' sets,
// unless its call may have begun before an invalidation of one of its
// sets, or a purge of its key: then it stores nothing and returns 0. The
// call's start is the mark (Mark, Redis's clock in microseconds); a mark
// older than the marks' life (ARGV[6] microseconds) cannot be judged, as
// the marks set after it may have expired, and is refused as well (so is
// mark 0, unknown). The index sets are sorted by their members' expiry, so
// that each put forgets the members expired since; each set lives at least
// as long as its newest member (NX sets a TTL on a new set, GT only
// lengthens it). KEYS[1] entry, then the n index sets, then their n marks,
// then the entry's own mark. ARGV: value, ttl ms, now ms, the sets'
// member (the key), mark, marks' life, the member's expiry ms (its score).
var putScript = redis.NewScript(`
local t = redis.call('TIME')
local mark = tonumber(ARGV[5])
if t[1] * 1000000 + t[2] - mark > tonumber(ARGV[6]) then return 0 end
local n = (#KEYS - 2) / 2
for i = n + 2, #KEYS do
  local m = redis.call('GET', KEYS[i])
  if m and tonumber(m) >= mark then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, n + 1 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[3])
  redis.call('ZADD', KEYS[i], ARGV[7], ARGV[4])
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'NX')
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'GT')
end
return 1
`)

// markLife is how long an invalidation mark lives. Only calls in flight
// need it, not the entries' lives: an entry in the tier when its tag is
// invalidated is deleted then, and the mark only judges puts of calls that
// began before. A call whose answer comes later than this after its mark
// is not shared (putScript).
const markLife = time.Hour

// transferBound is how long moving n bytes to or from Redis may take.
func (c *Cluster) transferBound(n int) time.Duration {
	return c.cfg.OpTimeout + time.Duration(n)*time.Second/tierBytesPerSecond
}

// GetEntry reads key's entry from the shared tier: cachestore.ErrNotFound
// when there is none, when it is past its StaleUntil, or when it is
// corrupt (it is then deleted).
func (c *Cluster) GetEntry(ctx context.Context, key string) (*cachestore.Entry, error) {
	k := c.key("e", key)
	octx, cancel := c.op(ctx)
	res, err := getScript.Run(octx, c.rdb, []string{k}, inlineMax).Result()
	cancel()
	if errors.Is(err, redis.Nil) {
		c.report(nil)
		return nil, cachestore.ErrNotFound
	}
	if c.reportFor(ctx, err) != nil {
		return nil, err
	}
	var val []byte
	switch r := res.(type) {
	case string:
		val = []byte(r)
	case int64:
		bctx, cancel := context.WithTimeout(ctx, c.transferBound(int(r)))
		val, err = c.bulk.Get(bctx, k).Bytes()
		cancel()
		if errors.Is(err, redis.Nil) {
			return nil, cachestore.ErrNotFound
		}
		if c.reportFor(ctx, err) != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("cluster: reading the shared tier: unexpected reply %T", res)
	}
	ent, err := decodeTierValue(val)
	if err != nil {
		c.log.Warn("cluster: dropping a corrupt shared-tier entry", zap.Error(err))
		dctx, cancel := c.op(ctx)
		c.reportFor(ctx, c.rdb.Del(dctx, k).Err())
		cancel()
		return nil, cachestore.ErrNotFound
	}
	if !ent.StaleUntil.IsZero() && !time.Now().Before(ent.StaleUntil) {
		return nil, cachestore.ErrNotFound
	}
	return ent, nil
}

func decodeTierValue(val []byte) (*cachestore.Entry, error) {
	raw, err := zdec().DecodeAll(val, nil)
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return cachestore.DecodeEntry(raw)
}

// Mark is Redis's clock now, in microseconds: the start of an
// availability call, for PutEntry.
func (c *Cluster) Mark(ctx context.Context) (int64, error) {
	octx, cancel := c.op(ctx)
	t, err := c.rdb.Time(octx).Result()
	cancel()
	if c.reportFor(ctx, err) != nil {
		return 0, err
	}
	return t.UnixMicro(), nil
}

// PutEntry stores ent in the shared tier until its StaleUntil (at least
// 1 s; maxTierTTL when it never goes stale), indexed by class and tags. It
// is stored only if none of its tags, not its class and not its key was
// invalidated or purged since mark, the Mark taken before its call; else
// nothing is stored and PutEntry returns edge.ErrInvalidated.
//
// One script, with the value as an argument: Redis copies a large value
// (a catalog) once more, and the value is sent twice when Redis does not
// know the script yet (EVALSHA, then EVAL), that is at the first put after
// Redis started, usually a small availability answer's.
func (c *Cluster) PutEntry(ctx context.Context, key string, ent *cachestore.Entry, mark int64) error {
	if key == "" {
		return errors.New("cluster: storing a shared entry: empty key")
	}
	ttl := maxTierTTL
	if !ent.StaleUntil.IsZero() {
		ttl = max(time.Until(ent.StaleUntil), time.Second)
	}
	val := zenc().EncodeAll(cachestore.EncodeEntry(ent), nil)
	sets := []string{c.key("c", ent.Class.String())}
	for _, t := range ent.Tags {
		sets = append(sets, c.key("t", t))
	}
	// Off the request's critical path (the answer is in hand): a longer
	// bound than a lookup's.
	octx, cancel := context.WithTimeout(ctx, slowOpTimeout+c.transferBound(len(val)))
	defer cancel()
	now := time.Now().UnixMilli()
	keys := append([]string{c.key("e", key)}, sets...)
	keys = append(keys, c.marks(sets)...)
	keys = append(keys, c.key("i", "e", key))
	stored, err := putScript.Run(octx, c.bulk, keys, val, ttl.Milliseconds(), now, key, mark, markLife.Microseconds(), now+ttl.Milliseconds()).Int()
	if c.reportFor(ctx, err) != nil {
		return err
	}
	if stored == 0 {
		return edge.ErrInvalidated
	}
	return nil
}

// marks are the invalidation marks of index sets and entries: i:c:<class>,
// i:t:<tag>, i:e:<key>.
func (c *Cluster) marks(sets []string) []string {
	marks := make([]string, len(sets))
	for i, s := range sets {
		marks[i] = c.key("i", strings.TrimPrefix(s, c.cfg.Prefix+":"))
	}
	return marks
}

// Invalidate drops from the shared tier every entry carrying one of tags.
func (c *Cluster) Invalidate(ctx context.Context, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	keys := make([]string, len(tags))
	for i, t := range tags {
		keys[i] = c.key("t", t)
	}
	return c.drop(ctx, keys, nil, c.marks(keys))
}

// Purge drops from the shared tier what ev names: the entry at ev.Key,
// ev.Class's entries, ev.Tags' entries, or, when it names none of these,
// every entry. A soft purge drops too: the nodes keep answering from
// their local tiers, marked purged, and a refresh must not find the
// purged answer in the shared tier and take it for new.
func (c *Cluster) Purge(ctx context.Context, ev edge.Event) error {
	// What is dropped is marked too, so that a call begun before the purge
	// does not refill it: the class, the tags, the key (whatever its
	// class, which the tier cannot tell while the call is out), or every
	// class.
	var sets, entries []string
	if ev.Class != "" {
		cl, err := cachestore.ParseClass(ev.Class)
		if err != nil {
			return fmt.Errorf("cluster: purging the shared tier: %w", err)
		}
		sets = append(sets, c.key("c", cl.String()))
	}
	for _, t := range ev.Tags {
		sets = append(sets, c.key("t", t))
	}
	if ev.Key != "" {
		entries = append(entries, c.key("e", ev.Key))
	}
	if len(sets) == 0 && len(entries) == 0 {
		for _, cl := range []cachestore.Class{cachestore.Catalog, cachestore.Availability, cachestore.Other} {
			sets = append(sets, c.key("c", cl.String()))
		}
	}
	return c.drop(ctx, sets, entries, c.marks(slices.Concat(sets, entries)))
}

// drop deletes the entries of sets, the sets and entries, and marks marks.
func (c *Cluster) drop(ctx context.Context, sets, entries, marks []string) error {
	octx, cancel := context.WithTimeout(ctx, slowOpTimeout)
	defer cancel()
	keys := slices.Concat(sets, entries, marks)
	return c.reportFor(ctx, dropScript.Run(octx, c.bulk, keys, c.key("e", ""), len(sets), markLife.Milliseconds(), len(entries)).Err())
}
