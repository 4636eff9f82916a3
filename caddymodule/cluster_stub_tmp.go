package caddymodule

// TEMPORARY: stands in for package cluster's budget, shared tier and
// revocations until they land on main; deleted before the final commit.

import (
	"errors"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/oidcrp"
)

func openCluster(cc *Cluster, dir string, b budget.Config, poll time.Duration) (*cluster.Cluster, error) {
	return cluster.Open(cluster.Config{URL: cc.URL, Prefix: cc.Prefix, Budget: b, Logger: caddy.Log().Named("s360.cluster")})
}

func clusterGate(_ *cluster.Cluster, b budget.Config) edge.Gate { return budget.New(b) }

func clusterShared(*cluster.Cluster) edge.Shared { return nil }

func clusterRevocations(*cluster.Cluster) oidcrp.Revocations { return stubRevocations{} }

type stubRevocations struct{}

func (stubRevocations) Revoke(string, time.Time) error {
	return errors.New("cluster revocations not merged yet")
}
func (stubRevocations) Revoked(string) (bool, error) {
	return false, errors.New("cluster revocations not merged yet")
}
