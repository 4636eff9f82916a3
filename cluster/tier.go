package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

// dropScript deletes every entry named in the index sets KEYS, and the
// sets. ARGV[1] is the entries' key prefix. Returns how many it deleted.
var dropScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS do
  for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    n = n + redis.call('DEL', ARGV[1] .. m)
  end
  redis.call('DEL', KEYS[i])
end
return n
`)

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

// PutEntry stores ent in the shared tier until its StaleUntil (at least
// 1 s; maxTierTTL when it never goes stale), indexed by class and tags.
func (c *Cluster) PutEntry(ctx context.Context, key string, ent *cachestore.Entry) error {
	if key == "" {
		return errors.New("cluster: storing a shared entry: empty key")
	}
	ttl := maxTierTTL
	if !ent.StaleUntil.IsZero() {
		ttl = max(time.Until(ent.StaleUntil), time.Second)
	}
	val := zenc().EncodeAll(cachestore.EncodeEntry(ent), nil)
	sets := make([]string, 0, 1+len(ent.Tags))
	sets = append(sets, c.key("c", ent.Class.String()))
	for _, t := range ent.Tags {
		sets = append(sets, c.key("t", t))
	}
	// Off the request's critical path (the answer is in hand): a longer
	// bound than a lookup's.
	octx, cancel := context.WithTimeout(ctx, slowOpTimeout+c.transferBound(len(val)))
	defer cancel()
	// One MULTI rather than a script: a script would copy a large value
	// once more, and send it twice the first time (EVALSHA, then EVAL).
	// The index sets are sorted by their members' expiry, so that each put
	// forgets the members expired since; each set lives at least as long as
	// its newest member (NX sets a TTL on a new set, GT only lengthens it).
	now := time.Now().UnixMilli()
	_, err := c.bulk.TxPipelined(octx, func(p redis.Pipeliner) error {
		p.Set(octx, c.key("e", key), val, ttl)
		for _, set := range sets {
			p.ZRemRangeByScore(octx, set, "-inf", strconv.FormatInt(now, 10))
			p.ZAdd(octx, set, redis.Z{Score: float64(now + ttl.Milliseconds()), Member: key})
			p.Do(octx, "PEXPIRE", set, ttl.Milliseconds(), "NX")
			p.Do(octx, "PEXPIRE", set, ttl.Milliseconds(), "GT")
		}
		return nil
	})
	return c.reportFor(ctx, err)
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
	return c.drop(ctx, keys)
}

// Purge drops from the shared tier what ev names: the entry at ev.Key,
// ev.Class's entries, ev.Tags' entries, or, when it names none of these,
// every entry. A soft purge drops too: the nodes keep answering from
// their local tiers, marked purged, and a refresh must not find the
// purged answer in the shared tier and take it for new.
func (c *Cluster) Purge(ctx context.Context, ev edge.Event) error {
	var sets []string
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
		octx, cancel := c.op(ctx)
		err := c.reportFor(ctx, c.rdb.Del(octx, c.key("e", ev.Key)).Err())
		cancel()
		if err != nil || len(sets) == 0 {
			return err
		}
	}
	if len(sets) == 0 {
		for _, cl := range []cachestore.Class{cachestore.Catalog, cachestore.Availability, cachestore.Other} {
			sets = append(sets, c.key("c", cl.String()))
		}
	}
	return c.drop(ctx, sets)
}

func (c *Cluster) drop(ctx context.Context, sets []string) error {
	octx, cancel := context.WithTimeout(ctx, slowOpTimeout)
	defer cancel()
	return c.reportFor(ctx, dropScript.Run(octx, c.bulk, sets, c.key("e", "")).Err())
}
