package integration

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/s360edge/s360edge/internal/redistest"
)

// redisClient is a go-redis client on r for the test's own checks.
func redisClient(t *testing.T, r *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.Password})
	t.Cleanup(func() { c.Close() })
	return c
}
