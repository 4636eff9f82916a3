package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
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
// is rate_limit / that count (see liveNodes).
func (c *Cluster) heartbeat() {
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	ttl := 3 * c.cfg.Heartbeat
	n, err := heartbeatScript.Run(ctx, c.rdb, []string{c.key("nodes")}, c.node, ttl.Milliseconds()).Int64()
	if c.report(err) != nil {
		return
	}
	n = max(n, 1)
	c.nodes.Store(n)
	c.saveNodeCount(int(n))
}

// nodeCountFile holds, in Config.Dir, the live nodes this node last saw,
// for a restart while Redis is out of reach.
const nodeCountFile = "cluster-nodes"

// unknownNodes is the count a node assumes when it knows nothing of its
// cluster's size: each takes a tenth of rate_limit, so that up to ten
// nodes started while Redis is out of reach stay within it together.
const unknownNodes = 10

// nodeCount is what a node knows of its cluster's size besides the live
// count (Cluster.nodes).
type nodeCount struct {
	deployed atomic.Int64 // Config.Nodes, or SetNodes's; 0: unknown
	saved    int          // read from Dir at Open; 0 for none
	written  int64        // last count written to Dir (heartbeat's goroutine only)
	warned   atomic.Bool  // the WARN of an unknown count was written
}

// loadNodeCount reads the count an earlier run saved in dir; anything
// unreadable counts as none.
func loadNodeCount(dir string) int {
	if dir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, nodeCountFile))
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 || n > 100_000 {
		return 0
	}
	return n
}

// saveNodeCount records n in Dir when it changed; a heartbeat a second
// costs no write while the cluster keeps its size.
func (c *Cluster) saveNodeCount(n int) {
	if c.cfg.Dir == "" || int64(n) == c.count.written {
		return
	}
	if c.count.written == 0 && n == c.count.saved {
		c.count.written = int64(n)
		return
	}
	if err := writeFileAtomic(filepath.Join(c.cfg.Dir, nodeCountFile), []byte(strconv.Itoa(n)+"\n")); err != nil {
		c.log.Warn("cluster: saving the number of live nodes; a restart while Redis is out of reach will not know it", zap.Error(err))
		return
	}
	c.count.written = int64(n)
}

// liveNodes is how many nodes share the budget while this node decides
// alone (its local share is rate_limit divided by it) and how many poll
// at once (each polls that many times less often): the live nodes last
// seen, or Config.Nodes when that is more (a node that was restarting
// when the count was taken is deployed all the same). Before Redis ever
// answered: Config.Nodes, else the count saved by an earlier run, else
// unknownNodes.
func (c *Cluster) liveNodes() int {
	n, _ := c.nodeCount()
	return n
}

// aloneNodes is liveNodes for a node that goes on alone now; the first
// time it has to assume unknownNodes, it says so at WARN.
func (c *Cluster) aloneNodes() int {
	n, known := c.nodeCount()
	if !known && !c.count.warned.Swap(true) {
		c.log.Warn("Redis has not answered since this node started, and the number of sidecars is unknown "+
			"(no nodes in the cluster block, none saved in the storage directory by an earlier run): "+
			"until Redis answers, this node calls S-360 with a tenth of rate_limit and polls ten times less often; "+
			"set nodes <n> in the cluster block to the number of sidecars deployed",
			zap.String("node", c.node), zap.Int("assumed_nodes", n))
	}
	return n
}

// SetNodes applies a reloaded config's nodes (Config.Nodes); the budget
// takes it at its next Update or fallback.
func (c *Cluster) SetNodes(n int) { c.count.deployed.Store(int64(max(n, 0))) }

func (c *Cluster) nodeCount() (n int, known bool) {
	deployed := int(c.count.deployed.Load())
	switch live := int(c.nodes.Load()); {
	case live > 0:
		return max(live, deployed), true
	case deployed > 0:
		return deployed, true
	case c.count.saved > 0:
		return c.count.saved, true
	}
	return unknownNodes, false
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
