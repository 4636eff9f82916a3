package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// collector exposes every open edge's counters as caddy_s360_* metrics.
// It reads the edges' own counters at scrape time, so the numbers survive
// config reloads (which bring a new registry) without double counting.
// Labels are bounded: class and outcome, never keys, users or addresses.
type collector struct{}

var (
	descRequests = prometheus.NewDesc("caddy_s360_requests_total",
		"Cacheable S-360 requests by class and outcome (hit, miss, coalesced, stale).", []string{"class", "outcome"}, nil)
	descUpstream = prometheus.NewDesc("caddy_s360_upstream_calls_total",
		"Calls made to S-360 by class and outcome.", []string{"class", "outcome"}, nil)
	descStored = prometheus.NewDesc("caddy_s360_stored_total",
		"Answers stored in the cache.", nil, nil)
	descPushbacks = prometheus.NewDesc("caddy_s360_upstream_pushbacks_total",
		"509/429 answers from S-360, each pausing the institution's calls.", nil, nil)
	descGenerations = prometheus.NewDesc("caddy_s360_generation_changes_total",
		"Catalog generation changes (getLastSetupUpdate changed).", nil, nil)
	descEntries = prometheus.NewDesc("caddy_s360_cache_entries",
		"Entries in the cache store.", nil, nil)
	descBytes = prometheus.NewDesc("caddy_s360_cache_bytes",
		"Bytes of entries in the cache store.", nil, nil)
	descBudgetRemaining = prometheus.NewDesc("caddy_s360_budget_remaining",
		"Upstream calls left in the current rate window.", nil, nil)
	descBudgetWaits = prometheus.NewDesc("caddy_s360_budget_waits_total",
		"Upstream calls that had to wait for a budget slot.", nil, nil)
	descBudgetRejections = prometheus.NewDesc("caddy_s360_budget_rejections_total",
		"Upstream calls refused by the budget (no slot in time).", nil, nil)
	descBudgetPauses = prometheus.NewDesc("caddy_s360_budget_pauses_total",
		"Pauses of all upstream calls after S-360 answered 509/429.", nil, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descUpstream, descStored, descPushbacks, descGenerations, descEntries, descBytes,
		descBudgetRemaining, descBudgetWaits, descBudgetRejections, descBudgetPauses} {
		ch <- d
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	type lk struct{ class, outcome string }
	req, up := map[lk]uint64{}, map[lk]uint64{}
	var stored, pushbacks, gens uint64
	var entries, bytes int64
	var budgets budget.Stats
	eachEdge(func(e *edge.Edge) {
		b := budgetStats(e)
		budgets.Remaining += b.Remaining
		budgets.Waits += b.Waits
		budgets.Rejections += b.Rejections
		budgets.Pauses += b.Pauses
		s := e.Stats()
		for _, c := range s.Requests {
			req[lk{c.Class, c.Outcome}] += c.Value
		}
		for _, c := range s.Upstream {
			up[lk{c.Class, c.Outcome}] += c.Value
		}
		stored += s.Stored
		pushbacks += s.Pushbacks
		gens += s.Generations
		st := s.Store.(cachestore.Stats)
		entries += st.Entries
		bytes += st.Bytes
	})
	for k, v := range req {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v), k.class, k.outcome)
	}
	for k, v := range up {
		ch <- prometheus.MustNewConstMetric(descUpstream, prometheus.CounterValue, float64(v), k.class, k.outcome)
	}
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.CounterValue, float64(stored))
	ch <- prometheus.MustNewConstMetric(descPushbacks, prometheus.CounterValue, float64(pushbacks))
	ch <- prometheus.MustNewConstMetric(descGenerations, prometheus.CounterValue, float64(gens))
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(entries))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descBudgetRemaining, prometheus.GaugeValue, float64(budgets.Remaining))
	ch <- prometheus.MustNewConstMetric(descBudgetWaits, prometheus.CounterValue, float64(budgets.Waits))
	ch <- prometheus.MustNewConstMetric(descBudgetRejections, prometheus.CounterValue, float64(budgets.Rejections))
	ch <- prometheus.MustNewConstMetric(descBudgetPauses, prometheus.CounterValue, float64(budgets.Pauses))
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
