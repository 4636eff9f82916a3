package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/s360"
)

// collector exposes every open edge's counters as caddy_s360_* metrics.
// It reads the edges' own counters at scrape time, so the numbers survive
// config reloads (which bring a new registry) without double counting.
// Labels are bounded: class, outcome, scope and method (the allow-list's
// names, else "other"), never keys, users or addresses.
type collector struct{}

var (
	descRequests = prometheus.NewDesc("caddy_s360_requests_total",
		"Cacheable S-360 requests by class and outcome (hit, miss, coalesced, stale).", []string{"class", "outcome"}, nil)
	descUpstream = prometheus.NewDesc("caddy_s360_upstream_calls_total",
		"Calls made to S-360 by class and outcome.", []string{"class", "outcome"}, nil)
	descScopePauses = prometheus.NewDesc("caddy_s360_budget_scope_pauses_total",
		"Pauses started after S-360 answered 509/429, by scope (key, method, institution).", []string{"scope"}, nil)
	descMethodLimit = prometheus.NewDesc("caddy_s360_budget_method_limit",
		"Upstream calls per rate window the budget learned one method may make (after S-360 refused it); only methods with a learned limit.", []string{"method"}, nil)
	descMethodCalls = prometheus.NewDesc("caddy_s360_budget_method_calls",
		"Upstream calls of a method with a learned limit granted in the rate window ending now.", []string{"method"}, nil)

	// Cluster mode only; absent without it.
	descClusterNodes = prometheus.NewDesc("caddy_s360_cluster_nodes",
		"Live nodes of the cluster last seen (at least 1); the budget falls back to rate_limit divided by it while Redis is down.", nil, nil)
	descClusterLeader = prometheus.NewDesc("caddy_s360_cluster_leader",
		"1 on the node that runs the cluster's polls (holds the polling lease), else 0.", nil, nil)
	descClusterRedisUp = prometheus.NewDesc("caddy_s360_cluster_redis_up",
		"1 while Redis answers, 0 while the node serves alone from its local tier.", nil, nil)
	descSharedHits = prometheus.NewDesc("caddy_s360_shared_hits_total",
		"Answers read from the cluster's shared tier instead of calling S-360.", nil, nil)
	descSharedWaits = prometheus.NewDesc("caddy_s360_shared_waits_total",
		"Waits for another node's call of the same key.", nil, nil)
	descSharedErrors = prometheus.NewDesc("caddy_s360_shared_errors_total",
		"Calls of the cluster's shared state that failed (the node then acts alone).", nil, nil)

	// With a monthly quota only; absent without it.
	descQuotaLimit = prometheus.NewDesc("caddy_s360_quota_limit",
		"Calls allowed in a calendar month (quota).", nil, nil)
	descQuotaUsed = prometheus.NewDesc("caddy_s360_quota_used",
		"Calls counted in this calendar month (UTC).", nil, nil)
	descQuotaProjected = prometheus.NewDesc("caddy_s360_quota_projected",
		"Calls the month will end with at the pace of the last hour.", nil, nil)
	descQuotaRunsOut = prometheus.NewDesc("caddy_s360_quota_runs_out_timestamp_seconds",
		"When the monthly quota runs out at the pace of the last hour (Unix time); 0 when it lasts the month.", nil, nil)
	descQuotaRefusals = prometheus.NewDesc("caddy_s360_quota_refusals_total",
		"Buyers' misses and refreshes refused because the monthly quota would not last the month at this pace.", nil, nil)

	descQueueLength = prometheus.NewDesc("caddy_s360_order_queue_length",
		"Orders waiting in the order queue now.", nil, nil)
	descQueueOrders = prometheus.NewDesc("caddy_s360_order_queue_orders_total",
		"Orders of the order queue by outcome: admitted (sent in their turn), placed, failed, withdrawn (their client stopped waiting), abandoned (nobody followed their ticket), refused (queue full or the client's bound).", []string{"outcome"}, nil)
	// queueWaits is every admitted order's wait in the line, process-wide
	// (it survives reloads like the edges).
	queueWaits = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "caddy_s360_order_queue_wait_seconds",
		Help:    "How long each order admitted from the order queue waited in the line.",
		Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600}})

	descLocalTokenRefused = prometheus.NewDesc("caddy_s360_local_token_refused_total",
		"Attempts at the local token endpoint refused without a check (429), their address having sent 10 wrong credentials within a minute.", nil, nil)
)

// scalar is a metric without labels, summed over the edges.
type scalar struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(edge.Snapshot, budget.Stats) float64
}

func counter(name, help string, v func(edge.Snapshot, budget.Stats) float64) scalar {
	return scalar{prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, v}
}

func gauge(name, help string, v func(edge.Snapshot, budget.Stats) float64) scalar {
	return scalar{prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, v}
}

type (
	snap  = edge.Snapshot
	bstat = budget.Stats
)

var scalars = []scalar{
	counter("caddy_s360_stored_total", "Answers stored in the cache.",
		func(s snap, _ bstat) float64 { return float64(s.Stored) }),
	counter("caddy_s360_upstream_pushbacks_total", "509/429 answers from S-360.",
		func(s snap, _ bstat) float64 { return float64(s.Pushbacks) }),
	counter("caddy_s360_generation_changes_total", "Catalog generation changes (getLastSetupUpdate changed).",
		func(s snap, _ bstat) float64 { return float64(s.Generations) }),
	counter("caddy_s360_setup_polls_total", "getLastSetupUpdate polls.",
		func(s snap, _ bstat) float64 { return float64(s.SetupPolls) }),
	counter("caddy_s360_updates_polls_total", "getUpdatedAvailabilities polls.",
		func(s snap, _ bstat) float64 { return float64(s.UpdatesPolls) }),
	counter("caddy_s360_poll_failures_total", "Failed watcher polls.",
		func(s snap, _ bstat) float64 { return float64(s.PollFailures) }),
	counter("caddy_s360_invalidated_total", "Availability entries purged because their product changed.",
		func(s snap, _ bstat) float64 { return float64(s.Invalidated) }),
	counter("caddy_s360_refreshes_total", "Catalog entries refreshed ahead after a setup change.",
		func(s snap, _ bstat) float64 { return float64(s.Refreshes) }),
	gauge("caddy_s360_cache_entries", "Entries in the cache store.",
		func(s snap, _ bstat) float64 { return float64(s.Store.Entries) }),
	gauge("caddy_s360_cache_bytes", "Bytes of entries in the cache store.",
		func(s snap, _ bstat) float64 { return float64(s.Store.Bytes) }),
	gauge("caddy_s360_cache_max_bytes", "Bound of the bytes of entries in the cache store (max_size).",
		func(s snap, _ bstat) float64 { return float64(s.Store.MaxBytes) }),
	gauge("caddy_s360_budget_calls", "Upstream calls granted in the rate window ending now.",
		func(_ snap, b bstat) float64 { return float64(b.Calls) }),
	gauge("caddy_s360_budget_remaining", "Upstream calls left in the current rate window.",
		func(_ snap, b bstat) float64 { return float64(b.Remaining) }),
	counter("caddy_s360_budget_waits_total", "Upstream calls that had to wait for a budget slot.",
		func(_ snap, b bstat) float64 { return float64(b.Waits) }),
	counter("caddy_s360_budget_rejections_total", "Upstream calls refused by the budget (no slot in time).",
		func(_ snap, b bstat) float64 { return float64(b.Rejections) }),
	counter("caddy_s360_budget_pauses_total", "Pauses of the whole institution's calls (but orders) after S-360 answered 509/429.",
		func(_ snap, b bstat) float64 { return float64(b.Pauses) }),
	gauge("caddy_s360_budget_limit", "Configured upstream calls per rate window (rate_limit).",
		func(_ snap, b bstat) float64 { return float64(b.Limit) }),
	gauge("caddy_s360_budget_effective_limit", "Upstream calls per rate window in force: rate_limit, or less while the adaptive limit has learned less.",
		func(_ snap, b bstat) float64 { return float64(b.EffectiveLimit) }),
	counter("caddy_s360_budget_limit_adjustments_total", "Changes of the effective limit.",
		func(_ snap, b bstat) float64 { return float64(b.Adjustments) }),
	counter("caddy_s360_budget_client_quota_refusals_total", "Upstream calls refused because their client had reached its quota or, while clients compete, its fair share.",
		func(_ snap, b bstat) float64 { return float64(b.QuotaRefusals) }),
	gauge("caddy_s360_budget_clients", "Clients that asked for an upstream call in the rate window ending now, or wait for one.",
		func(_ snap, b bstat) float64 { return float64(b.Clients) }),
	gauge("caddy_s360_budget_fair_share", "Upstream calls per rate window each active client is sure of (0: client_quota off).",
		func(_ snap, b bstat) float64 { return float64(b.FairShare) }),
}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descUpstream
	ch <- descScopePauses
	ch <- descMethodLimit
	ch <- descMethodCalls
	ch <- descClusterNodes
	ch <- descClusterLeader
	ch <- descClusterRedisUp
	ch <- descSharedHits
	ch <- descSharedWaits
	ch <- descSharedErrors
	ch <- descLocalTokenRefused
	ch <- descQueueLength
	ch <- descQueueOrders
	queueWaits.Describe(ch)
	describeLive(ch)
	for _, d := range []*prometheus.Desc{descQuotaLimit, descQuotaUsed, descQuotaProjected, descQuotaRunsOut, descQuotaRefusals} {
		ch <- d
	}
	for _, s := range scalars {
		ch <- s.desc
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	type lk struct{ class, outcome string }
	req, up := map[lk]uint64{}, map[lk]uint64{}
	sums := make([]float64, len(scalars))
	var scopes budget.ScopeCounts
	methodLimits, methodCalls := map[string]int{}, map[string]int{}
	// The cluster gauges of a process's edges (one in practice) combine
	// to what an operator asks: is any Redis down, does it lead anywhere.
	clustered, nodes, leader, redisUp := false, 0, 0, 1
	var sharedHits, sharedWaits, sharedErrors, tokenRefused uint64
	eachPooled(func(p pooledEdge) {
		e := p.Edge
		tokenRefused += p.tokenGuard.refused.Load()
		s, b := e.Stats(), budgetStats(e)
		if p.cluster != nil {
			st := p.cluster.Status()
			clustered, nodes = true, max(nodes, st.Nodes)
			if st.Leader != "" && st.Leader == st.Node {
				leader = 1
			}
			if !st.RedisOK {
				redisUp = 0
			}
			sharedHits, sharedWaits, sharedErrors = sharedHits+s.SharedHits, sharedWaits+s.SharedWaits, sharedErrors+s.SharedErrors
		}
		for _, c := range s.Requests {
			req[lk{c.Class, c.Outcome}] += c.Value
		}
		for _, c := range s.Upstream {
			up[lk{c.Class, c.Outcome}] += c.Value
		}
		for i, sc := range scalars {
			sums[i] += sc.value(s, b)
		}
		scopes.Key += b.PausesByScope.Key
		scopes.Method += b.PausesByScope.Method
		scopes.Institution += b.PausesByScope.Institution
		for _, l := range b.MethodLimits {
			m := methodLabel(l.Method)
			methodLimits[m] += l.Limit
			methodCalls[m] += l.Calls
		}
	})
	for m, v := range methodLimits {
		ch <- prometheus.MustNewConstMetric(descMethodLimit, prometheus.GaugeValue, float64(v), m)
		ch <- prometheus.MustNewConstMetric(descMethodCalls, prometheus.GaugeValue, float64(methodCalls[m]), m)
	}
	for scope, v := range map[string]uint64{"key": scopes.Key, "method": scopes.Method, "institution": scopes.Institution} {
		ch <- prometheus.MustNewConstMetric(descScopePauses, prometheus.CounterValue, float64(v), scope)
	}
	for k, v := range req {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v), k.class, k.outcome)
	}
	for k, v := range up {
		ch <- prometheus.MustNewConstMetric(descUpstream, prometheus.CounterValue, float64(v), k.class, k.outcome)
	}
	for i, sc := range scalars {
		ch <- prometheus.MustNewConstMetric(sc.desc, sc.kind, sums[i])
	}
	ch <- prometheus.MustNewConstMetric(descLocalTokenRefused, prometheus.CounterValue, float64(tokenRefused))
	collectQuota(ch)
	collectQueue(ch)
	collectLive(ch)
	if clustered {
		ch <- prometheus.MustNewConstMetric(descClusterNodes, prometheus.GaugeValue, float64(nodes))
		ch <- prometheus.MustNewConstMetric(descClusterLeader, prometheus.GaugeValue, float64(leader))
		ch <- prometheus.MustNewConstMetric(descClusterRedisUp, prometheus.GaugeValue, float64(redisUp))
		ch <- prometheus.MustNewConstMetric(descSharedHits, prometheus.CounterValue, float64(sharedHits))
		ch <- prometheus.MustNewConstMetric(descSharedWaits, prometheus.CounterValue, float64(sharedWaits))
		ch <- prometheus.MustNewConstMetric(descSharedErrors, prometheus.CounterValue, float64(sharedErrors))
	}
}

// knownMethods are the method label's values: the methods of s360.Methods
// (the built-in allow-list) and the token call.
var knownMethods = func() map[string]bool {
	m := map[string]bool{"auth": true}
	for name := range s360.Methods {
		m[name] = true
	}
	return m
}()

// methodLabel keeps the method label bounded: a method outside the
// built-in allow-list (opened by allow, perhaps with a wildcard) is
// "other".
func methodLabel(method string) string {
	if knownMethods[method] {
		return method
	}
	return "other"
}

// collectQuota exports the monthly quotas, when an edge has one. The
// quotas of a process's edges (one in practice) add up; the earliest
// run-out date is the one to act on.
func collectQuota(ch chan<- prometheus.Metric) {
	var quotas []*edge.QuotaStats
	eachEdge(func(e *edge.Edge) {
		if q := e.Quota(); q != nil {
			quotas = append(quotas, q)
		}
	})
	if len(quotas) == 0 {
		return
	}
	var limit, used, projected, runsOut float64
	var refusals uint64
	for _, q := range quotas {
		limit, used, projected, refusals = limit+float64(q.Quota), used+float64(q.Used), projected+float64(q.Projected), refusals+q.Refusals
		if at := float64(q.RunsOut.Unix()); !q.RunsOut.IsZero() && (runsOut == 0 || at < runsOut) {
			runsOut = at
		}
	}
	ch <- prometheus.MustNewConstMetric(descQuotaLimit, prometheus.GaugeValue, limit)
	ch <- prometheus.MustNewConstMetric(descQuotaUsed, prometheus.GaugeValue, used)
	ch <- prometheus.MustNewConstMetric(descQuotaProjected, prometheus.GaugeValue, projected)
	ch <- prometheus.MustNewConstMetric(descQuotaRunsOut, prometheus.GaugeValue, runsOut)
	ch <- prometheus.MustNewConstMetric(descQuotaRefusals, prometheus.CounterValue, float64(refusals))
}

// collectQueue exports the order queues of the process's edges.
func collectQueue(ch chan<- prometheus.Metric) {
	var length int
	outcomes := map[string]uint64{}
	eachPooled(func(p pooledEdge) {
		st := p.queue.Stats()
		length += st.Length
		for k, v := range map[string]uint64{"admitted": st.Admitted, "placed": st.Placed, "failed": st.Failed,
			"withdrawn": st.Withdrawn, "abandoned": st.Abandoned, "refused": st.Refused} {
			outcomes[k] += v
		}
	})
	ch <- prometheus.MustNewConstMetric(descQueueLength, prometheus.GaugeValue, float64(length))
	for k, v := range outcomes {
		ch <- prometheus.MustNewConstMetric(descQueueOrders, prometheus.CounterValue, float64(v), k)
	}
	queueWaits.Collect(ch)
}

// registerMetrics adds the collector to a config's registry once.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(collector{})
	if errors.As(err, &prometheus.AlreadyRegisteredError{}) {
		return nil
	}
	return err
}
