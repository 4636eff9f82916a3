package caddymodule

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
)

// Cluster makes the sidecars of one institution act toward S-360 as one,
// through Redis 7 or Valkey: one budget, one fetch per key, one poller and
// shared logouts (see the README, "Running several sidecars"). Without it
// the sidecar never needs Redis.
//
// The cluster is part of the cache it serves: a reload that changes URL or
// Prefix of a running cache fails, and a restart is needed to apply it.
type Cluster struct {
	// URL is the Redis server: redis://[user:password@]host:port/db, or
	// rediss:// for TLS. Required; no default. Use a placeholder such as
	// {env.REDIS_URL} so that the password stays out of the config.
	URL string `json:"url"`
	// Prefix starts every Redis key of this institution; institutions
	// sharing one Redis need different prefixes. Default: s360edge.
	Prefix string `json:"prefix,omitempty"`
	// Nodes is the number of sidecars deployed. A node that has never
	// reached Redis since it started takes rate_limit / Nodes (and one
	// that lost Redis, rate_limit over the larger of Nodes and the live
	// nodes it last saw). Default 0, unknown: such a node takes
	// rate_limit over the count it saved in its storage directory in an
	// earlier run, or a tenth of rate_limit when it has none. A reload
	// applies it.
	Nodes int `json:"nodes,omitempty"`
}

// nodes is c's Nodes; 0 without a cluster.
func (c *Cluster) nodes() int {
	if c == nil {
		return 0
	}
	return c.Nodes
}

// parseCluster reads `cluster <url> [{ prefix <p>; nodes <n> }]`.
func parseCluster(d *caddyfile.Dispenser) (*Cluster, error) {
	c := &Cluster{}
	if err := oneArg(d, "", &c.URL); err != nil {
		return nil, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "prefix":
			if c.Prefix != "" {
				return nil, twiceErr(d, "cluster")
			}
			if err := oneArg(d, "cluster", &c.Prefix); err != nil {
				return nil, err
			}
		case "nodes":
			if c.Nodes != 0 {
				return nil, twiceErr(d, "cluster")
			}
			var v string
			if err := oneArg(d, "cluster", &v); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, parseErr(d, "cluster", "nodes", "want the number of sidecars deployed, a positive integer, got %q", v)
			}
			c.Nodes = n
		default:
			return nil, unknownErr(d, "cluster")
		}
	}
	return c, nil
}

// check runs after placeholders are replaced. Its errors never carry the
// URL's password: a URL that does not parse is not echoed at all.
func (c *Cluster) check() error {
	const want = "write redis://[user:password@]host:port/db, or rediss:// for TLS, e.g. cluster {env.REDIS_URL}"
	if c.URL == "" {
		return errors.New("cluster: the Redis URL is missing (is its environment variable set?); " + want)
	}
	if c.Nodes < 0 {
		return fmt.Errorf("cluster: nodes: %d is negative; write the number of sidecars deployed, e.g. nodes 3", c.Nodes)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return errors.New("cluster: the Redis URL does not parse; " + want)
	}
	if (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		u.RawQuery, u.Fragment = "", ""
		return fmt.Errorf("cluster: %q is not a Redis URL; %s", u.Redacted(), want)
	}
	return nil
}

// id is what must stay the same for a reload to keep the running cluster.
func (c *Cluster) id() string {
	if c == nil {
		return ""
	}
	p := c.Prefix
	if p == "" {
		p = cluster.DefaultPrefix
	}
	return p + " " + c.URL
}

// errClusterChanged: the running cache's cluster is part of its state (its
// budget, its shared tier and its place in the event stream), so it is not
// swapped under the requests in flight.
func errClusterChanged(dir string) error {
	return fmt.Errorf("cluster: its URL or prefix, or whether there is one, differ from those of the running cache in %s: "+
		"they apply at a restart of the process, not at a reload; restart, or keep the running cluster settings", dir)
}

var _ orderQueue = (*cluster.OrderQueue)(nil)

// openEdge opens the edge of dir, with its cluster when cc is set: the
// cluster's budget is the edge's gate, and the cluster its shared state.
func openEdge(dir string, s edge.Settings, cc *Cluster) (pooledEdge, error) {
	opts := edge.Options{
		Dir:         dir,
		Institution: s.Institution,
		Policy:      s.Policy,
		Waits:       s.Waits,
		MaxBytes:    s.MaxBytes,
		Timeout:     s.Timeout,
		// The edge outlives this config: it gets the process-wide
		// logger, never this config's context.
		Logger: caddy.Log().Named("s360.edge"),
	}
	var cl *cluster.Cluster
	if cc != nil {
		var err error
		cl, err = cluster.Open(cluster.Config{URL: cc.URL, Prefix: cc.Prefix, Nodes: cc.Nodes, Budget: *s.Budget, Dir: dir,
			Poll: s.Watch.SetupPoll, Logger: caddy.Log().Named("s360.cluster")})
		if err != nil {
			// cluster's errors start "cluster: ".
			return pooledEdge{}, fmt.Errorf("%w; want a URL redis://[user:password@]host:port/db (rediss:// for TLS) and a prefix without spaces or braces, e.g. prefix myinstit", err)
		}
		opts.Gate, opts.Shared = cluster.NewBudget(cl, *s.Budget), cl
	} else {
		opts.Gate = budget.New(*s.Budget)
	}
	e, err := edge.Open(opts)
	if err != nil {
		if cl != nil {
			cl.Close()
		}
		return pooledEdge{}, fmt.Errorf("storage: opening the cache in %s: %w", dir, err)
	}
	qlog := caddy.Log().Named("s360.orderq")
	lq, err := openQueue(e, qlog)
	var q orderQueue = lq
	if err == nil && cl != nil {
		// The institution's line is in Redis; lq is this node's while
		// Redis is out of reach.
		if q, err = cluster.NewOrderQueue(cl, lq, queueConfig(e, qlog)); err != nil {
			lq.Close()
		}
	}
	if err != nil {
		e.Close()
		if cl != nil {
			cl.Close()
		}
		return pooledEdge{}, fmt.Errorf("storage: opening the order queue in %s: %w", dir, err)
	}
	return pooledEdge{Edge: e, cluster: cl, clusterID: cc.id(), queue: q,
		tokenGuard: newTokenGuard(time.Now, caddy.Log().Named("s360.local_token"))}, nil
}
