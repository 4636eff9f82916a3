package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
)

func TestWantsHTML(t *testing.T) {
	for _, tc := range []struct {
		name, accept string
		want         bool
	}{
		{"browser navigation", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", true},
		{"curl", "*/*", false},
		{"none", "", false},
		{"json", "application/json", false},
		{"json preferred", "text/html;q=0.5, application/json", false},
		{"html preferred", "application/json;q=0.4, text/html", true},
		{"html refused", "text/html;q=0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/s360/", nil)
			r.Header.Set("Accept", tc.accept)
			if got := wantsHTML(r); got != tc.want {
				t.Fatalf("wantsHTML(%q) = %v", tc.accept, got)
			}
		})
	}
}

// stat returns the text of the element carrying data-stat="name".
func stat(t *testing.T, page, name string) string {
	t.Helper()
	m := regexp.MustCompile(`data-stat="` + regexp.QuoteMeta(name) + `"[^>]*>([^<]*)<`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no data-stat=%q on the page", name)
	}
	return m[1]
}

func render(t *testing.T, v statsView, now time.Time) string {
	t.Helper()
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, statusPage{Now: now, Refresh: statusRefresh, Edges: []statusEdge{newStatusEdge(v, now)}}); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestStatusPageRenders(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 30, 20, 0, time.UTC)
	hour := make([]edge.Minute, 60)
	for i := range hour {
		hour[i].Start = now.Truncate(time.Minute).Add(time.Duration(i-59) * time.Minute)
	}
	t.Run("nothing cached, nothing called", func(t *testing.T) {
		page := render(t, statsView{Snapshot: edge.Snapshot{Dir: "/var/lib/s360/x"}, PerMinute: hour}, now)
		for name, want := range map[string]string{"store.entries": "0", "budget.calls": "0", "paused": "not paused",
			"budget.method_limits": "none: no method was refused on its own",
			"hit_ratio":            "no requests yet", "budget_per_minute_total": "0", "catalog_ages.entries": "0"} {
			if got := stat(t, page, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		for _, want := range []string{`<meta http-equiv="refresh" content="5">`, "nothing cached", "no cacheable request yet", "<svg"} {
			if !strings.Contains(page, want) {
				t.Errorf("the page lacks %q", want)
			}
		}
		if strings.Contains(page, "<script") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
			t.Error("the page has a script or an external reference")
		}
		if strings.Contains(page, "<h3>Cluster</h3>") || strings.Contains(page, "Redis") {
			t.Error("the page of a single node shows a cluster panel")
		}
		if strings.Contains(page, "Monthly quota") {
			t.Error("the page shows a quota panel without a quota")
		}
	})
	t.Run("monthly quota held", func(t *testing.T) {
		q := &edge.QuotaStats{MonthPlan: budget.MonthPlan{Quota: 10000, Month: "2026-11", Used: 9400, Remaining: 600, LastHour: 40,
			Projected: 10360, RunsOut: time.Date(2026, 11, 30, 3, 30, 20, 0, time.UTC), OrderReserve: 19, Holding: true, Refusals: 7},
			SetupInterval: time.Hour, UpdatesInterval: time.Hour}
		page := render(t, statsView{Snapshot: edge.Snapshot{Dir: "/d"}, PerMinute: hour, Quota: q}, now)
		for name, want := range map[string]string{"quota.used": "9400", "quota.quota": "10000", "quota.last_hour": "40",
			"quota.projected": "10360", "quota.runs_out": "2026-11-30 03:30 UTC", "quota.order_reserve": "19",
			"quota.holding": "held: stale answers, or 429 quota", "quota.refusals": "7", "quota.setup_interval": "1h0m0s",
			"quota.badge": "monthly quota: buyers' misses held"} {
			if got := stat(t, page, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		q.Holding, q.RunsOut, q.UpdatesInterval = false, time.Time{}, 0
		page = render(t, statsView{Snapshot: edge.Snapshot{Dir: "/d"}, PerMinute: hour, Quota: q}, now)
		for name, want := range map[string]string{"quota.runs_out": "not this month", "quota.holding": "let through", "quota.updates_interval": "off"} {
			if got := stat(t, page, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		if strings.Contains(page, `data-stat="quota.badge"`) {
			t.Error("the holding badge without a hold")
		}
	})
	for _, tc := range []struct {
		name   string
		status cluster.Status
		want   map[string]string
		badge  bool
	}{
		{"cluster, Redis up, this node polls", cluster.Status{Mode: "cluster", Node: "web-1", Nodes: 3, Leader: "web-1", RedisOK: true},
			map[string]string{"cluster.redis_ok": "up", "cluster.mode": "cluster", "cluster.nodes": "3", "cluster.node": "web-1", "cluster.leader": "this node",
				"shared_hits": "12"}, false},
		{"cluster, Redis up, another node polls", cluster.Status{Mode: "cluster", Node: "web-1", Nodes: 2, Leader: "web-2", RedisOK: true},
			map[string]string{"cluster.redis_ok": "up", "cluster.nodes": "2", "cluster.leader": "web-2"}, false},
		{"cluster, Redis down", cluster.Status{Mode: "local", Node: "web-1", Nodes: 3, RedisOK: false},
			map[string]string{"cluster.redis_ok": "down", "cluster.mode": "local", "cluster.nodes": "3", "cluster.leader": "unknown",
				"cluster.badge": "Redis down: serving alone", "shared_hits": "12", "shared_waits": "4", "shared_errors": "7"}, true},
		{"cluster, Redis answers but is a Redis Cluster", cluster.Status{Mode: "local", Node: "web-1", Nodes: 3, RedisOK: false, Error: "the Redis URL leads to a Redis Cluster"},
			map[string]string{"cluster.redis_ok": "down", "cluster.mode": "local", "cluster.error": "the Redis URL leads to a Redis Cluster",
				"cluster.badge": "Redis not used: serving alone"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.status
			snap := edge.Snapshot{Dir: "/d", SharedHits: 12, SharedWaits: 4, SharedErrors: 7}
			page := render(t, statsView{Snapshot: snap, PerMinute: hour, Cluster: &st}, now)
			for name, want := range tc.want {
				if got := stat(t, page, name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if got := strings.Contains(page, `data-stat="cluster.badge"`); got != tc.badge {
				t.Errorf("Redis-down badge shown: %v, want %v", got, tc.badge)
			}
			if got := strings.Contains(page, `data-stat="cluster.error"`); got != (tc.status.Error != "") {
				t.Errorf("why Redis is not used shown: %v, want %v", got, tc.status.Error != "")
			}
		})
	}
	t.Run("paused, with traffic", func(t *testing.T) {
		h := append([]edge.Minute(nil), hour...)
		h[58].Calls, h[59].Calls = 140, 30
		v := statsView{
			Snapshot: edge.Snapshot{Dir: "/d", Generation: 3, Generations: 2, PollFailures: 4,
				Requests: []edge.Counter{{Class: "catalog", Outcome: "hit", Value: 6}, {Class: "availability", Outcome: "stale", Value: 2},
					{Class: "availability", Outcome: "miss", Value: 2}},
				Store: cachestore.Stats{Entries: 7, Bytes: 3 << 20, MaxBytes: 4 << 20}},
			Budget: budget.Stats{Limit: 150, EffectiveLimit: 100, Window: time.Minute, Calls: 95, Remaining: 5,
				PausedUntil: now.Add(time.Minute), PausesByScope: budget.ScopeCounts{Key: 3, Method: 1, Institution: 1},
				PausedMethods: []string{"availabilityService/getEventAvailability"}, QuotaRefusals: 9, Clients: 3, FairShare: 30,
				LastAdjustment: &budget.Adjustment{At: now.Add(-time.Minute), From: 150, To: 100, Reason: "pushback"}, Adjustments: 1,
				MethodLimits: []budget.MethodLimit{{Method: "availabilityService/getPerformanceAvailability", Limit: 54, Calls: 50,
					LastAdjustment: &budget.Adjustment{At: now.Add(-2 * time.Minute), From: 150, To: 54, Reason: "method pushback"}}}},
			PerMinute: h,
			Catalog:   cachestore.Ages{Entries: 2, Oldest: now.Add(-2 * time.Hour), Newest: now.Add(-time.Minute)},
		}
		page := render(t, v, now)
		for name, want := range map[string]string{"paused": "paused until 12:31:20 UTC", "budget.calls": "95",
			"budget.effective_limit": "100", "budget.limit": "150", "budget.pauses_by_scope.method": "1",
			"budget.pauses_by_scope.institution": "1", "budget.quota_refusals": "9", "budget.clients": "3", "budget.fair_share": "30", "store.entries": "7",
			"store.bytes": "3.0 MiB", "hit_ratio": "60.0 %", "generation": "3", "poll_failures": "4",
			"budget_per_minute_total": "170", "catalog_ages.entries": "2", "budget.method_limits.limit": "54",
			"budget.method_limits.calls": "50"} {
			if got := stat(t, page, name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		for _, want := range []string{"availabilityService/getEventAvailability", "150 → 100", "newest 1m0s ago, oldest 2h0m0s ago",
			`<tr data-method="availabilityService/getPerformanceAvailability">`, "150 → 54, method pushback, 2m0s ago",
			"limit 100/min", "12:29 UTC: 140 calls", `class="n bad"`} {
			if !strings.Contains(page, want) {
				t.Errorf("the page lacks %q", want)
			}
		}
		// The tallest bar (140 > limit 100) reaches the top margin, the limit line sits below it.
		c, total := newChart(h, 100)
		if total != 170 || c.Bars[58].Y >= c.LimitY || c.Bars[59].Y <= c.LimitY || c.Bars[0].H != 0 {
			t.Errorf("chart: total %d, bars %+v %+v, limit at %v", total, c.Bars[58], c.Bars[59], c.LimitY)
		}
	})
}

func TestStatusRoute(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, accept string
		status                     int
		contentType                string
		code                       string // of an error's JSON body
	}{
		{"html for a browser", http.MethodGet, "/s360/", "text/html", 200, "text/html; charset=utf-8", ""},
		{"json otherwise", http.MethodGet, "/s360/", "*/*", 200, "application/json", ""},
		{"unknown subpath", http.MethodGet, "/s360/nope", "text/html", 404, "application/json", "not_found"},
		{"post", http.MethodPost, "/s360/", "text/html", 405, "application/json", "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			r.Header.Set("Accept", tc.accept)
			w := httptest.NewRecorder()
			if err := handleStatus(w, r); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if got := w.Header().Get("Content-Type"); got != tc.contentType {
				t.Fatalf("Content-Type %q, want %q", got, tc.contentType)
			}
			var e apiError
			if tc.code != "" && (json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code != tc.code || e.Message == "") {
				t.Fatalf("error body %s, want error %q and a message", w.Body, tc.code)
			}
		})
	}
}

func TestStatusHandler(t *testing.T) {
	for _, tc := range []struct {
		name, method, accept string
		status               int
		contentType          string
	}{
		{"browser", http.MethodGet, "text/html,*/*;q=0.8", 200, "text/html; charset=utf-8"},
		{"api client", http.MethodGet, "application/json", 200, "application/json"},
		{"head", http.MethodHead, "text/html", 200, "text/html; charset=utf-8"},
		{"post", http.MethodPost, "text/html", 405, "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/anywhere", nil)
			r.Header.Set("Accept", tc.accept)
			w := httptest.NewRecorder()
			if err := (StatusHandler{}).ServeHTTP(w, r, nil); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.status || w.Header().Get("Content-Type") != tc.contentType {
				t.Fatalf("%d %q, want %d %q: %s", w.Code, w.Header().Get("Content-Type"), tc.status, tc.contentType, w.Body)
			}
			if tc.status == 405 && !strings.Contains(w.Body.String(), `"error":"method_not_allowed"`) {
				t.Fatalf("405 body %s", w.Body)
			}
		})
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"bare", "s360_status", true},
		{"argument", "s360_status now", false},
		{"block", "s360_status {\n\trefresh 5\n}", false},
	} {
		t.Run("caddyfile "+tc.name, func(t *testing.T) {
			_, err := parseStatusHandler(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(tc.in)})
			if (err == nil) != tc.ok {
				t.Fatalf("%q: %v", tc.in, err)
			}
		})
	}
}
