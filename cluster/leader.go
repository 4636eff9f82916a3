package cluster

import (
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// leadScript takes the polling lease when it is free, renews it when this
// node holds it (the compare makes a node whose lease expired unable to
// renew a successor's), and otherwise only reports the holder. The token
// comes from a counter that never goes back, so the value of every lease
// ever granted is unique: a node's old value never matches a new lease.
// KEYS[1] lease, KEYS[2] token counter; ARGV[1] the value this node holds
// ("" if none), ARGV[2] node, ARGV[3] ttl ms. Returns {held, value}.
var leadScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, v}
end
if not v then
  local nv = ARGV[2] .. '/' .. redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], nv, 'PX', ARGV[3])
  return {1, nv}
end
return {0, v}
`)

// releaseScript deletes KEYS[1] if it still holds ARGV[1], and then, when
// a channel KEYS[2] is given, publishes ARGV[2] on it. Returns 1 if it
// deleted.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if #KEYS > 1 then redis.call('PUBLISH', KEYS[2], ARGV[2]) end
  return 1
end
return 0
`)

// leaderState is this node's polling lease as far as it knows.
type leaderState struct {
	mu    sync.Mutex
	val   string    // node/token of the lease this node holds; "" when none
	until time.Time // the lease is surely expired after this
}

func (l *leaderState) set(v string, until time.Time) {
	l.mu.Lock()
	l.val, l.until = v, until
	l.mu.Unlock()
}

func (l *leaderState) value() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.val
}

// holding: this node holds a lease that cannot have expired yet.
func (l *leaderState) holding(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.val != "" && now.Before(l.until)
}

// leaseTTL is the polling lease's life: clamp(Poll, 1 s, 10 s).
func (c *Cluster) leaseTTL() time.Duration {
	if c.cfg.Poll <= 0 {
		return 10 * time.Second
	}
	return min(max(c.cfg.Poll, time.Second), 10*time.Second)
}

// Poller says whether this node runs the watchers' polls, and at which
// multiple of their intervals: (true, 1) while it holds the polling lease,
// (false, 0) while it does not, and (true, liveNodes) while Redis is out
// of reach, so that the nodes together poll no more often than one would.
func (c *Cluster) Poller() (bool, int) {
	if !c.redisOK.Load() {
		return true, c.aloneNodes()
	}
	if c.lead.holding(time.Now()) {
		return true, 1
	}
	return false, 0
}

// leadOnce takes or renews the polling lease, or notes who holds it.
// When Redis does not answer, the lease this node may hold runs out by
// its local deadline: a node never believes it polls alone longer than
// Redis would grant it.
func (c *Cluster) leadOnce() {
	ttl := c.leaseTTL()
	start := time.Now()
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	res, err := leadScript.Run(ctx, c.rdb, []string{c.key("leader"), c.key("leader", "token")}, c.lead.value(), c.node, ttl.Milliseconds()).Slice()
	if c.report(err) != nil {
		return
	}
	held, _ := res[0].(int64)
	v, _ := res[1].(string)
	if held == 1 {
		c.lead.set(v, start.Add(ttl))
	} else {
		c.lead.set("", time.Time{})
	}
	c.leader.Store(leaseNode(v))
}

// leaseNode is the node part of a lease value node/token.
func leaseNode(v string) string {
	if i := strings.LastIndexByte(v, '/'); i >= 0 {
		return v[:i]
	}
	return v
}
