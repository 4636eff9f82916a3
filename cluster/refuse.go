package cluster

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// ErrRedisCluster is the failure of every Redis call of a node whose Redis
// URL leads to a Redis Cluster (sharded): the scripts read and write many
// keys of one institution in one step (the budget's window, pauses and
// quotas; the shared tier and its indexes; the stream with the lease), and
// a Redis Cluster refuses keys of different slots in one script. The node
// goes on alone, as when Redis is out of reach.
var ErrRedisCluster = errors.New("the Redis URL leads to a Redis Cluster (cluster_enabled:1), which s360edge does not support: " +
	"point the cluster subdirective at a standalone Redis 7 or Valkey (a primary, with replicas and Sentinel if needed); " +
	"this node serves alone with its share of rate_limit until then")

// checkServer is every new connection's OnConnect: a connection to a Redis
// Cluster fails with ErrRedisCluster. The check runs when a connection is
// first made, in the background or on the first call, never in Provision.
// A server that will not say (INFO denied to the ACL user) is taken as
// standalone: a sharded one then fails the scripts with CROSSSLOT.
func (c *Cluster) checkServer(ctx context.Context, cn *redis.Conn) error {
	info, err := cn.Info(ctx, "cluster").Result()
	var reply redis.Error
	if err != nil && !errors.As(err, &reply) {
		return err // the connection failed: the call fails as out of reach
	}
	if err == nil && strings.Contains(info, "cluster_enabled:1") {
		why := ErrRedisCluster.Error()
		if c.refusal.Swap(&why) == nil {
			c.log.Error("not using Redis: "+why, zap.String("node", c.node))
		}
		return ErrRedisCluster
	}
	if c.refusal.Swap(nil) != nil {
		c.log.Warn("the Redis URL leads to a standalone Redis now: using it", zap.String("node", c.node))
	}
	return nil
}
