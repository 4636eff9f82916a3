// Package cluster lets several sidecars of one institution act toward
// S-360 as one, through Redis (7, or Valkey): one budget, one fetch per
// key, one poller, shared sessions. When Redis is out of reach every node
// goes on alone with a share of the budget, and rejoins when it is back.
//
// The package does not import Caddy; caddymodule opens one Cluster per
// edge when the s360 block has a cluster subdirective.
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
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
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
	Logger    *zap.Logger
}

// Status is what /s360/stats shows of the cluster.
type Status struct {
	Mode    string `json:"mode"` // "cluster", or "local" while Redis is out of reach
	Node    string `json:"node"`
	Nodes   int    `json:"nodes"`  // live nodes last seen, at least 1
	Leader  string `json:"leader"` // the polling node last seen; "" when unknown
	RedisOK bool   `json:"redis_ok"`
}

// Cluster is this node's membership of a cluster.
type Cluster struct {
	cfg  Config
	rdb  *redis.Client
	node string
	log  *zap.Logger

	redisOK atomic.Bool
	nodes   atomic.Int64 // live nodes last seen, >= 1
	leader  atomic.Value // string: the polling node last seen

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
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
	c := &Cluster{cfg: cfg, rdb: redis.NewClient(opts), node: cfg.Node, log: cfg.Logger}
	c.nodes.Store(1)
	c.leader.Store("")
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Node is this node's name.
func (c *Cluster) Node() string { return c.node }

// Status is the cluster as this node sees it now.
func (c *Cluster) Status() Status {
	s := Status{Mode: "cluster", Node: c.node, Nodes: int(c.nodes.Load()), Leader: c.leader.Load().(string), RedisOK: c.redisOK.Load()}
	if !s.RedisOK {
		s.Mode = "local"
	}
	return s
}

// Close stops the node's background work and closes the connections.
func (c *Cluster) Close() error {
	c.cancel()
	c.wg.Wait()
	return c.rdb.Close()
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
// redis.Nil (no such key) is an answer, not a failure.
func (c *Cluster) report(err error) error {
	if err != nil && !errors.Is(err, redis.Nil) {
		if c.redisOK.Swap(false) {
			c.log.Warn("Redis is out of reach: serving from the local tier, with this node's share of the budget", zap.String("node", c.node), zap.Error(redactURL(err)))
		}
		return err
	}
	if !c.redisOK.Swap(true) {
		c.log.Warn("Redis reached: cluster mode", zap.String("node", c.node))
	}
	return err
}

// redactURL keeps a Redis error from carrying the URL's credentials.
func redactURL(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "@"); i >= 0 && strings.Contains(msg[:i], "://") {
		return errors.New("redis error (details withheld: they contained credentials)")
	}
	return err
}
