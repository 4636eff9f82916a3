// Package cluster lets several sidecars of one institution act toward
// S-360 as one, through Redis (7, or Valkey): one budget, one fetch per
// key, one poller, shared sessions. When Redis is out of reach every node
// goes on alone with a share of the budget, and rejoins when it is back.
//
// The package does not import Caddy; caddymodule opens one Cluster per
// edge when the s360 block has a cluster subdirective.
//
// Keys of the shared state, each under the prefix and with a TTL unless
// said otherwise:
//
//	nodes            zset of live nodes, scored by last heartbeat (Redis's clock)
//	leader           the polling lease, node/token
//	leader:token     the counter of lease tokens (polling and fetch leases; no TTL)
//	events           the event stream, trimmed to about 10000 events (no TTL)
//	gen, setup       the cluster's catalog generation and setup value (no TTL)
//	e:<key>          a shared-tier entry: zstd of the store's encoding, until its StaleUntil
//	c:<class>, t:<tag> index sets of the entries by class and tag
//	i:c:<class>, i:t:<tag>, i:e:<key> when a class, a tag or a key was
//	                 last invalidated or purged (Redis's clock,
//	                 microseconds), for an hour
//	l:<key>          a fetch lease, node/token
//	revoked:<id>     a logged-out session, until its cookie expires
//	saml:<id>        a SAML assertion id accepted by a node, until the assertion expires
//	quota:<month>    the calls of every node in a calendar month (quota, "2026-05"),
//	                 kept 62 days after its last change
//	q:*              the order queue (orderqueue.go): the line and its records,
//	                 q:o:<ticket> kept Keep after its outcome, the rest a day
//	                 after its last change
//
// and the pub/sub channel released, where a fetch lease's release names
// its key.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/internal/wait"
)

// DefaultPrefix is the default prefix of every Redis key.
const DefaultPrefix = "s360edge"

// Defaults of Config's timings.
const (
	DefaultOpTimeout = 50 * time.Millisecond
	DefaultHeartbeat = time.Second
)

// Config is one node's view of its cluster.
type Config struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	URL string
	// Prefix starts every key; default DefaultPrefix. Institutions
	// sharing one Redis need different prefixes.
	Prefix string
	// Node names this node; default <hostname>-<pid>-<random>.
	Node string
	// Budget is the institution's budget (rate_limit, reserves, quotas,
	// floors), the same on every node.
	Budget budget.Config
	// OpTimeout bounds each hot-path Redis call. Default 50 ms.
	OpTimeout time.Duration
	// Heartbeat is the membership heartbeat. Default 1 s; a node unseen
	// for 3 heartbeats is no longer counted.
	Heartbeat time.Duration
	// Dir is the edge's storage directory; the node keeps there the id of
	// the last stream event it applied, so that a restart catches up.
	// "" keeps it in memory only.
	Dir string
	// Nodes is the number of sidecars deployed (the cluster block's
	// nodes); 0, the default, means unknown. While Redis is out of reach a
	// node divides rate_limit by the nodes it last saw live, or by Nodes
	// when that is more; before it has ever reached Redis, by Nodes, else
	// by the count it saved in Dir in an earlier run, else by 10.
	Nodes int
	// Poll is the setup poll interval (setup_poll). The polling lease
	// lasts clamp(Poll, 1 s, 10 s), so a dead poller is replaced within
	// two polls. 0 means 10 s.
	Poll   time.Duration
	Logger *zap.Logger
}

// Status is what /s360/stats shows of the cluster.
type Status struct {
	Mode    string `json:"mode"` // "cluster", or "local" while Redis is out of reach
	Node    string `json:"node"`
	Nodes   int    `json:"nodes"`  // live nodes last seen, at least 1
	Leader  string `json:"leader"` // the polling node last seen; "" when unknown
	RedisOK bool   `json:"redis_ok"`
	// Error says why this node does not use Redis although it answers
	// (a Redis Cluster endpoint); "" otherwise.
	Error string `json:"error,omitempty"`
}

// Cluster is this node's membership of a cluster.
type Cluster struct {
	cfg  Config
	rdb  *redis.Client
	node string
	log  *zap.Logger

	// bulk carries what the 50 ms socket timeouts of rdb cannot: large
	// shared-tier values, purges, the stream's blocking reads and the
	// pub/sub connection. Its calls are bounded by their contexts only.
	bulk *redis.Client

	downs atomic.Uint64 // transitions to "Redis out of reach", for the stream reader's rejoin

	// WaitEntry's polling backoff (waitPollFirst, waitPollMax; tests
	// change them to tell a pub/sub wake-up from a poll).
	pollFirst, pollMax time.Duration

	// syncEvery is the reconcile's period: the heartbeat (tests that
	// count events set it long before Subscribe).
	syncEvery time.Duration

	lead     leaderState
	stream   streamState
	released releasedHub

	redisOK atomic.Bool
	nodes   atomic.Int64 // live nodes last seen; 0 until Redis first answers
	count   nodeCount
	refusal atomic.Pointer[string] // why Redis is not used although it answers (refuse.go); nil when it is
	leader  atomic.Value           // string: the polling node last seen

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open checks cfg and starts the node's background work. It does not
// need Redis to be up: a node started while Redis is down serves alone
// and joins when Redis answers.
func Open(cfg Config) (*Cluster, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		// ParseURL's errors do not contain the password.
		return nil, fmt.Errorf("cluster: reading the Redis URL: %w", err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(cfg.Prefix, " {}") {
		return nil, fmt.Errorf("cluster: prefix %q: spaces and braces are not allowed", cfg.Prefix)
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.Nodes < 0 {
		return nil, fmt.Errorf("cluster: nodes %d: want the number of sidecars deployed, or 0 for unknown", cfg.Nodes)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Node == "" {
		host, _ := os.Hostname()
		cfg.Node = fmt.Sprintf("%s-%d-%x", host, os.Getpid(), time.Now().UnixNano()&0xffffff)
	}
	// Hot-path calls are bounded by OpTimeout through their contexts;
	// no retries: a failed call falls back at once.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout = 200 * time.Millisecond
	opts.ReadTimeout = cfg.OpTimeout
	opts.WriteTimeout = cfg.OpTimeout
	opts.PoolTimeout = cfg.OpTimeout
	opts.ContextTimeoutEnabled = true
	c := &Cluster{cfg: cfg, node: cfg.Node, log: cfg.Logger}
	// Every new connection, pub/sub ones included, is checked first.
	opts.OnConnect = c.checkServer
	// go-redis would write a line to stderr for every failed dial while
	// Redis is down; report writes one line per transition instead.
	redis.SetLogger(&logging.VoidLogger{})
	bulkOpts := *opts
	bulkOpts.ReadTimeout = -1 // no socket deadline: each call's context bounds it
	bulkOpts.WriteTimeout = -1
	bulkOpts.PoolTimeout = time.Second
	c.rdb, c.bulk = redis.NewClient(opts), redis.NewClient(&bulkOpts)
	c.pollFirst, c.pollMax = waitPollFirst, waitPollMax
	c.syncEvery = cfg.Heartbeat
	c.count.saved = loadNodeCount(cfg.Dir)
	c.SetNodes(cfg.Nodes)
	c.leader.Store("")
	c.released.waiters = map[string]map[chan struct{}]struct{}{}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// One round of membership and polling lease before returning, so that
	// a node that can reach Redis starts in cluster mode rather than
	// polling alone for its first second. Each call is bounded by
	// OpTimeout: an unreachable Redis delays Open by that much only.
	c.heartbeat()
	c.leadOnce()
	c.wg.Add(3)
	go c.every(c.cfg.Heartbeat, c.heartbeat)
	go c.every(c.leaseTTL()/3, c.leadOnce)
	go c.releasedLoop()
	return c, nil
}

// every runs fn every d until the cluster closes.
func (c *Cluster) every(d time.Duration, fn func()) {
	defer c.wg.Done()
	wait.Every(c.ctx.Done(), d, func() bool { fn(); return true })
}

// Node is this node's name.
func (c *Cluster) Node() string { return c.node }

// Status is the cluster as this node sees it now.
func (c *Cluster) Status() Status {
	s := Status{Mode: "cluster", Node: c.node, Nodes: max(int(c.nodes.Load()), 1), Leader: c.leader.Load().(string), RedisOK: c.redisOK.Load()}
	if !s.RedisOK {
		s.Mode = "local"
	}
	if why := c.refusal.Load(); why != nil {
		s.Error = *why
	}
	return s
}

// Close stops the node's background work, gives up the polling lease and
// its membership (so that another node takes the polling over at once),
// and closes the connections.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		// Blocking reads (stream, pub/sub) end when their connections close.
		c.released.close()
		err := c.bulk.Close()
		c.wg.Wait()
		c.leave()
		c.closeErr = errors.Join(err, c.rdb.Close())
	})
	return c.closeErr
}

// key is a Redis key under the prefix.
func (c *Cluster) key(parts ...string) string {
	return c.cfg.Prefix + ":" + strings.Join(parts, ":")
}

// op bounds one hot-path Redis call.
func (c *Cluster) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.OpTimeout)
}

// report records the outcome of a Redis call: the first failure after
// success, and the first success after failure, write one line each.
// redis.Nil (no such key) and the server's error replies (a script's
// refusal, say) are answers, not failures, except the replies of a server
// that cannot serve yet (loading its data, a replica without its master)
// or is stuck in a long script.
func (c *Cluster) report(err error) error {
	var reply redis.Error
	answered := errors.As(err, &reply) && !redis.HasErrorPrefix(err, "LOADING") &&
		!redis.HasErrorPrefix(err, "MASTERDOWN") && !redis.HasErrorPrefix(err, "BUSY")
	if err != nil && !errors.Is(err, redis.Nil) && !answered {
		if c.redisOK.Swap(false) {
			c.downs.Add(1)
			c.log.Warn("Redis is out of reach: serving from the local tier, with this node's share of the budget", zap.String("node", c.node), zap.Error(redactURL(err)))
		}
		return err
	}
	if !c.redisOK.Swap(true) {
		c.log.Warn("Redis reached: cluster mode", zap.String("node", c.node))
	}
	return err
}

// reportFor is report for a call bounded by the caller's ctx as well:
// when ctx ended first, the failure is the caller's, and says nothing
// about Redis.
func (c *Cluster) reportFor(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return err
	}
	return c.report(err)
}

// redactURL keeps a Redis error from carrying the URL's credentials.
func redactURL(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "@"); i >= 0 && strings.Contains(msg[:i], "://") {
		return errors.New("redis error (details withheld: they contained credentials)")
	}
	return err
}
