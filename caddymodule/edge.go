package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
)

// edges holds one edge per storage directory. Caddy provisions a new config
// before it cleans up the old one, so a reload finds the edge still open and
// shares it instead of fighting over Badger's directory lock.
var edges = caddy.NewUsagePool()

// edge is the long-lived state of one institution: it outlives config
// reloads and is destroyed when the last handler using it is cleaned up.
type edge struct {
	dir string
}

func newEdge(dir string) (*edge, error) {
	return &edge{dir: dir}, nil
}

// Destruct implements caddy.Destructor.
func (e *edge) Destruct() error { return nil }
