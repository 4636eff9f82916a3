package cluster

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// quotaKeep is how long a month's count is kept after its last change:
// a node that was down for weeks still adds its calls to the right month.
const quotaKeep = 62 * 24 * time.Hour

// addCallsScript adds ARGV[1] calls to the month's count KEYS[1], first
// raising it to ARGV[2] (a count a node read before: lower only if Redis
// lost it), and keeps it ARGV[3] ms. Returns the count.
var addCallsScript = redis.NewScript(`
local n = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[2]))
n = n + tonumber(ARGV[1])
redis.call('SET', KEYS[1], n, 'PX', ARGV[3])
return n
`)

// AddCalls adds n calls to the count of month (budget.MonthLayout) that
// every node shares (key quota:<month>), after raising it to floor, and
// returns the count: see edge.QuotaCounter.
func (c *Cluster) AddCalls(ctx context.Context, month string, n, floor int64) (int64, error) {
	octx, cancel := c.op(ctx)
	defer cancel()
	total, err := addCallsScript.Run(octx, c.rdb, []string{c.key("quota", month)}, n, floor, quotaKeep.Milliseconds()).Int64()
	if c.reportFor(ctx, err) != nil {
		return 0, err
	}
	return total, nil
}
