package cluster

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// heartbeatScript records this node as seen now (Redis's clock, the same
// for every node), forgets the nodes unseen for KEYS-ttl, and returns the
// live count. KEYS[1] nodes zset; ARGV[1] node, ARGV[2] ttl in ms.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
`)

// heartbeat refreshes this node's membership and c.nodes. While Redis is
// out of reach c.nodes keeps the last count seen: the local budget share
// is rate_limit / that count.
func (c *Cluster) heartbeat() {
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	ttl := 3 * c.cfg.Heartbeat
	n, err := heartbeatScript.Run(ctx, c.rdb, []string{c.key("nodes")}, c.node, ttl.Milliseconds()).Int64()
	if c.report(err) != nil {
		return
	}
	c.nodes.Store(max(n, 1))
}

// leave removes this node from the membership and gives up the polling
// lease if it holds it, so that the others need not wait for them to
// expire. Best effort: a node that dies without it is forgotten anyway.
func (c *Cluster) leave() {
	ctx, cancel := c.op(context.Background())
	defer cancel()
	if v := c.lead.value(); v != "" {
		c.report(releaseScript.Run(ctx, c.rdb, []string{c.key("leader")}, v).Err())
		c.lead.set("", time.Time{})
	}
	c.report(c.rdb.ZRem(ctx, c.key("nodes"), c.node).Err())
}
