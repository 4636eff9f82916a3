package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// Backoff of WaitEntry's polling of a lease, the fallback when the
// release's message is lost (pub/sub connection down, holder died).
const (
	waitPollFirst = 10 * time.Millisecond
	waitPollMax   = 200 * time.Millisecond
)

// leaseScript takes a key's fetch lease if it is free. The value carries a
// token from the counter of the polling lease, so that every lease ever
// granted has its own value and only its holder can release it.
// KEYS[1] lease, KEYS[2] token counter; ARGV[1] node, ARGV[2] ttl ms.
var leaseScript = redis.NewScript(`
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[2]) then return v end
return false
`)

// renewScript extends KEYS[1] by ARGV[2] ms if it still holds ARGV[1]:
// a holder whose lease expired (and may be another node's now) cannot
// extend it. Returns 1 if it did.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// Lease takes, for ttl, the cluster-wide right to call S-360 for key. ok
// is false when another node holds it. The holder renews it (Renew) while
// it waits and calls, and releases it when done.
func (c *Cluster) Lease(ctx context.Context, key string, ttl time.Duration) (edge.KeyLease, bool, error) {
	if ttl < time.Millisecond {
		return nil, false, errors.New("cluster: taking a lease: ttl under 1 ms")
	}
	lk := c.key("l", key)
	octx, cancel := c.op(ctx)
	v, err := leaseScript.Run(octx, c.rdb, []string{lk, c.key("leader", "token")}, c.node, ttl.Milliseconds()).Text()
	cancel()
	if errors.Is(err, redis.Nil) {
		c.report(nil)
		return nil, false, nil
	}
	if c.reportFor(ctx, err) != nil {
		return nil, false, err
	}
	return &keyLease{c: c, key: key, lk: lk, v: v, ttl: ttl}, true, nil
}

// keyLease is a fetch lease this node took.
type keyLease struct {
	c       *Cluster
	key, lk string
	v       string // node/token: this lease's own value
	ttl     time.Duration
	once    sync.Once
}

// Renew extends the lease by its ttl if it is still this one (fenced by
// its value): held is false when it expired, and may be another node's.
func (l *keyLease) Renew(ctx context.Context) (bool, error) {
	octx, cancel := l.c.op(ctx)
	defer cancel()
	n, err := renewScript.Run(octx, l.c.rdb, []string{l.lk}, l.v, l.ttl.Milliseconds()).Int()
	if l.c.reportFor(ctx, err) != nil {
		return false, err
	}
	return n == 1, nil
}

// Release gives the lease up, if it is still this one, and wakes the
// waiters of every node. Only its first call does anything.
func (l *keyLease) Release() {
	l.once.Do(func() {
		// Not the caller's context: a lease must be given up even when
		// the request that took it has ended.
		rctx, cancel := l.c.op(context.Background())
		defer cancel()
		l.c.report(releaseScript.Run(rctx, l.c.rdb, []string{l.lk, l.c.key("released")}, l.v, l.key).Err())
	})
}

// WaitEntry waits until key's lease is gone (released, or expired with its
// holder) or ctx ends, then reads key's entry from the shared tier. A
// release wakes it through pub/sub; it also polls the lease, from 10 ms
// doubling to 200 ms, in case the message is lost.
func (c *Cluster) WaitEntry(ctx context.Context, key string) (*cachestore.Entry, error) {
	wake := c.released.add(key)
	defer c.released.remove(key, wake)
	lk := c.key("l", key)
	delay, failures := c.pollFirst, 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		case <-t.C:
		}
		octx, cancel := c.op(ctx)
		n, err := c.rdb.Exists(octx, lk).Result()
		cancel()
		if c.reportFor(ctx, err) != nil {
			// One slow answer is no outage: give up after a few in a row.
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if failures++; failures >= 3 {
				return nil, err
			}
			t.Reset(delay)
			continue
		}
		failures = 0
		if n == 0 {
			return c.GetEntry(ctx, key)
		}
		t.Reset(delay)
		delay = min(2*delay, c.pollMax)
	}
}

// releasedHub fans the one pub/sub connection's release messages out to
// the waiters of this node.
type releasedHub struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
	ps      *redis.PubSub
	closed  bool
}

func (h *releasedHub) add(key string) chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[key] == nil {
		h.waiters[key] = map[chan struct{}]struct{}{}
	}
	h.waiters[key][ch] = struct{}{}
	return ch
}

func (h *releasedHub) remove(key string, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[key], ch)
	if len(h.waiters[key]) == 0 {
		delete(h.waiters, key)
	}
}

func (h *releasedHub) wake(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// use makes ps the current connection, unless the hub is closed.
func (h *releasedHub) use(ps *redis.PubSub) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.ps = ps
	return true
}

// close ends the hub, interrupting the connection's blocking read.
func (h *releasedHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.ps != nil {
		h.ps.Close()
	}
}

// releasedLoop keeps one subscription to the release channel, and
// resubscribes after Redis was out of reach.
func (c *Cluster) releasedLoop() {
	defer c.wg.Done()
	for c.ctx.Err() == nil {
		ps := c.bulk.Subscribe(c.ctx, c.key("released"))
		if !c.released.use(ps) {
			ps.Close()
			return
		}
		for {
			msg, err := ps.Receive(c.ctx)
			if err != nil {
				break
			}
			if m, ok := msg.(*redis.Message); ok {
				c.released.wake(m.Payload)
			}
		}
		ps.Close()
		c.pause(c.cfg.Heartbeat)
	}
}
