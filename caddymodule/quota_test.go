package caddymodule

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
)

func TestQuotaConfig(t *testing.T) {
	got, back := caddyfileJSON(t, "quota 10000 month")
	if got != `{"quota":{"calls":10000,"per":"month"}}` || back.Quota.calls() != 10000 {
		t.Fatalf("JSON %s", got)
	}
	var h Handler
	if err := json.Unmarshal([]byte(`{"quota":{"calls":500,"per":"week"}}`), &h); err != nil {
		t.Fatal(err)
	}
	if err := h.checkQuota(); err == nil || !strings.Contains(err.Error(), `quota: 500 calls per "week"; write a positive number of calls per month, e.g. quota 10000 month`) {
		t.Fatalf("check: %v", err)
	}
	if (*Quota)(nil).calls() != 0 {
		t.Fatal("no quota is not 0 calls")
	}
}

// A miss the plan refuses, with no stored answer, is 429 quota with a
// Retry-After; the metrics show the month.
func TestQuotaRefusalIs429AndMetrics(t *testing.T) {
	f := &fakeUpstream{}
	h := newBudgetHandler(t, f, budget.Config{Calls: 100, Window: time.Minute})
	// The month's quota is spent already (a count restored from the store).
	month := time.Now().UTC().Format(budget.MonthLayout)
	if err := h.edge.Store().PutMeta("quota.month", []byte(`{"month":"`+month+`","used":3}`)); err != nil {
		t.Fatal(err)
	}
	h.edge.Reconfigure(edge.Settings{Institution: "x", Quota: 3})
	w, _ := serve(h, "POST", availPath, `{"performanceIds":[1]}`, nil)
	var e apiError
	json.Unmarshal(w.Body.Bytes(), &e)
	retry, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	start, _ := time.Parse(budget.MonthLayout, month)
	if left := time.Until(start.AddDate(0, 1, 0)); w.Code != 429 || e.Code != "quota" || retry < 1 || time.Duration(retry)*time.Second > left+time.Second {
		t.Fatalf("%d %s, Retry-After %q; want 429 quota until the month's end, in %v", w.Code, w.Body, w.Header().Get("Retry-After"), left)
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("%d calls reached S-360", n)
	}

	key := t.Name()
	if _, _, err := edges.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledEdge{Edge: h.edge, tokenGuard: h.tokenGuard, queue: h.queue}, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edges.Delete(key) })
	// 3 restored and the token call, which the plan never refuses.
	text := `# HELP caddy_s360_quota_limit Calls allowed in a calendar month (quota).
# TYPE caddy_s360_quota_limit gauge
caddy_s360_quota_limit 3
# HELP caddy_s360_quota_refusals_total Buyers' misses and refreshes refused because the monthly quota would not last the month at this pace.
# TYPE caddy_s360_quota_refusals_total counter
caddy_s360_quota_refusals_total 1
# HELP caddy_s360_quota_used Calls counted in this calendar month (UTC).
# TYPE caddy_s360_quota_used gauge
caddy_s360_quota_used 4
`
	if err := testutil.CollectAndCompare(collector{}, strings.NewReader(text), "caddy_s360_quota_limit", "caddy_s360_quota_used", "caddy_s360_quota_refusals_total"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(collector{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	v := edgeStats(pooledEdge{Edge: h.edge, queue: h.queue})
	if q := v.Quota; q == nil || q.Used != 4 || !q.Holding || q.RunsOut.IsZero() {
		t.Fatalf("/s360/stats quota %+v", q)
	}
}
