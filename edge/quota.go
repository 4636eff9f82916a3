package edge

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/internal/wait"
)

// The monthly quota (budget.Month): with Settings.Quota set, the edge
// counts every call its budget grants, keeps the count in the store (and
// in a cluster in the shared count, every node's calls), stretches the
// watchers' intervals to the plan, and refuses buyers' misses and
// refreshes while the plan holds (Serve answers them stale when it can).

// metaQuota holds the month's count (budget.MonthState), so that a
// restart keeps it.
const metaQuota = "quota.month"

// quotaSync is how often the count is persisted and, in a cluster, sent
// to the shared count: a crash loses at most this much of the count.
const quotaSync = time.Second

// QuotaCounter is a Shared that keeps the month's count of calls of every
// node (cluster.Cluster).
type QuotaCounter interface {
	// AddCalls adds n calls to the shared count of month
	// (budget.MonthLayout) and returns it, after raising it to floor if it
	// is below: floor is a count this node read before, which the shared
	// count can only be below if it lost its data.
	AddCalls(ctx context.Context, month string, n, floor int64) (int64, error)
}

type quotaState struct {
	month *budget.Month
	// running is set once the sync loop runs (guarded by Edge.mu); saved
	// is the month's change number last persisted (the loop's own).
	running bool
	saved   uint64
	// updatesCalls is the calls of the last updates poll (its batches).
	updatesCalls atomic.Int64
}

// setQuota applies Settings.Quota: the first time one is set, the month's
// persisted count is restored and the sync loop starts.
func (e *Edge) setQuota(calls int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if calls > 0 && !e.quota.running {
		e.quota.running = true
		e.restoreQuota()
		e.bg.Add(1)
		go e.quotaLoop()
	}
	e.quota.month.SetQuota(calls)
}

func (e *Edge) restoreQuota() {
	var s budget.MonthState
	switch b, err := e.store.GetMeta(metaQuota); {
	case err == nil && json.Unmarshal(b, &s) == nil:
		e.quota.month.Restore(s, e.opts.Now())
	case err != nil && !errors.Is(err, cachestore.ErrNotFound):
		e.opts.Logger.Warn("reading the month's count of S-360 calls failed; counting from 0", zap.Error(err))
	}
}

// quotaLoop syncs the count every quotaSync, and once more when the edge
// closes (before its store does).
func (e *Edge) quotaLoop() {
	defer e.bg.Done()
	wait.Every(e.ctx.Done(), quotaSync, func() bool {
		e.syncQuota(e.ctx)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e.syncQuota(ctx)
}

// syncQuota sends the calls counted here to the shared count (in a
// cluster), reading the other nodes' with it, and persists the count when
// it changed. What cannot be sent is kept, and sent when the shared count
// answers again.
func (e *Edge) syncQuota(ctx context.Context) {
	m := e.quota.month
	if qc, ok := e.opts.Shared.(QuotaCounter); ok {
		for _, u := range m.Unsent(e.opts.Now()) {
			total, err := qc.AddCalls(ctx, u.Month, u.Calls, u.Seen)
			if err != nil {
				e.sharedFailed("counting the month's calls", err)
				break
			}
			e.sharedDown.Store(0)
			m.Sent(u, total)
		}
	}
	s, changes := m.State()
	if changes == e.quota.saved {
		return
	}
	b, _ := json.Marshal(s)
	if err := e.store.PutMeta(metaQuota, b); err != nil {
		e.opts.Logger.Warn("storing the month's count of S-360 calls failed", zap.Error(err))
		return
	}
	e.quota.saved = changes
}

// countGrant is the budget's OnGrant hook's part for the quota.
func (e *Edge) countGrant(at time.Time, n int) {
	if e.quota.month != nil {
		e.quota.month.Add(at, n)
	}
}

// quotaRefusal is the plan's refusal of a call of priority p now: only
// buyers' misses and background work are refused.
func (e *Edge) quotaRefusal(p Priority) error {
	if e.quota.month == nil || (p != PriorityForeground && p != PriorityBackground) {
		return nil
	}
	if refused, retry := e.quota.month.Refuse(e.opts.Now()); refused {
		return &budget.WaitError{Reason: budget.ErrMonthQuota, RetryIn: retry}
	}
	return nil
}

// pollInterval is the interval of a watcher configured to poll every
// `every`, whose polls cost cost calls: every, or longer as the quota's
// plan says.
func (e *Edge) pollInterval(every time.Duration, cost int) time.Duration {
	if e.quota.month == nil {
		return every
	}
	w := e.watchConfig()
	watchers := 0
	for _, d := range []time.Duration{w.SetupPoll, w.UpdatesPoll} {
		if d > 0 {
			watchers++
		}
	}
	return e.quota.month.Interval(e.opts.Now(), every, cost, watchers)
}

// updatesCost is the calls one updates poll costs: its batches last time.
func (e *Edge) updatesCost() int { return max(int(e.quota.updatesCalls.Load()), 1) }

// QuotaStats is the monthly quota's plan now, with the intervals it gives
// the watchers.
type QuotaStats struct {
	budget.MonthPlan
	SetupInterval   time.Duration `json:"setup_interval"`   // of getLastSetupUpdate; 0 when off
	UpdatesInterval time.Duration `json:"updates_interval"` // of getUpdatedAvailabilities; 0 when off
}

// Quota is the monthly quota's plan now; nil without a quota.
func (e *Edge) Quota() *QuotaStats {
	if e.quota.month == nil || e.quota.month.Quota() == 0 {
		return nil
	}
	w := e.watchConfig()
	return &QuotaStats{MonthPlan: e.quota.month.Plan(e.opts.Now()),
		SetupInterval: e.pollInterval(w.SetupPoll, 1), UpdatesInterval: e.pollInterval(w.UpdatesPoll, e.updatesCost())}
}
