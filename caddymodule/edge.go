package caddymodule

import (
	"errors"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
)

// edges holds one edge per storage directory. Caddy provisions a new config
// before it cleans up the old one, so a reload finds the edge still open and
// shares it instead of fighting over Badger's directory lock.
var edges = caddy.NewUsagePool()

// pooledEdge adapts an edge to caddy.Destructor: the edge is closed when
// the last handler using it is cleaned up, and then its cluster (nil
// without one), which the edge uses until it is closed. The local token
// endpoint's counts of wrong credentials live with it too.
type pooledEdge struct {
	*edge.Edge
	cluster    *cluster.Cluster
	clusterID  string // Cluster.id of the config that opened it
	tokenGuard *tokenGuard
	queue      orderQueue
}

func (p pooledEdge) Destruct() error {
	inForce.Lock()
	delete(inForce.m, p.Edge)
	inForce.Unlock()
	p.queue.Close() // its calls under way end before the edge that makes them
	err := p.Close()
	if p.cluster != nil {
		err = errors.Join(err, p.cluster.Close())
	}
	return err
}

// eachEdge calls fn for every open edge (admin API, metrics).
func eachEdge(fn func(*edge.Edge)) {
	eachPooled(func(p pooledEdge) { fn(p.Edge) })
}

// eachPooled calls fn for every open edge with its cluster.
func eachPooled(fn func(pooledEdge)) {
	edges.Range(func(_, v any) bool {
		fn(v.(pooledEdge))
		return true
	})
}
