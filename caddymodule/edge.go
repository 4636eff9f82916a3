package caddymodule

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/edge"
)

// edges holds one edge per storage directory. Caddy provisions a new config
// before it cleans up the old one, so a reload finds the edge still open and
// shares it instead of fighting over Badger's directory lock.
var edges = caddy.NewUsagePool()

// pooledEdge adapts an edge to caddy.Destructor: the edge is closed when
// the last handler using it is cleaned up.
type pooledEdge struct{ *edge.Edge }

func (p pooledEdge) Destruct() error {
	inForce.Lock()
	delete(inForce.m, p.Edge)
	inForce.Unlock()
	return p.Close()
}

// eachEdge calls fn for every open edge (admin API, metrics).
func eachEdge(fn func(*edge.Edge)) {
	edges.Range(func(_, v any) bool {
		fn(v.(pooledEdge).Edge)
		return true
	})
}
