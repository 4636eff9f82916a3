package cluster

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/s360edge/s360edge/internal/redistest"
)

// redisProc is the test's real redis-server (see internal/redistest),
// which a test may Kill, Restart on the same address and Pause.
type redisProc struct{ *redistest.Server }

// startRedisB starts a redis-server that the test's cleanup kills.
func startRedisB(t testing.TB) *redisProc {
	t.Helper()
	return &redisProc{redistest.Start(t, "")}
}

// client is a plain client, for a test to look at or tamper with the keys.
func (r *redisProc) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: time.Second})
}

// redisURL is the URL of the redis-server at addr.
func redisURL(addr string) string { return "redis://" + addr + "/0" }

// redisClient is a plain client of the redis-server at addr.
func redisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}
