package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStaleness(t *testing.T) {
	*minute = 3 * time.Second
	s := time.Second
	r := &result{
		setupAt: []time.Duration{10 * s, 40 * s},
		stock:   map[int][]change{0: {{5 * s, 0}, {20 * s, 3}}, 1: {{7 * s, 1}}},
	}
	tests := []struct {
		name                   string
		rec                    rec
		catStale, avStale      int
		catOldest, availOldest time.Duration
	}{
		{name: "catalog before any change", rec: rec{at: 5 * s, catVer: 1}},
		{name: "catalog showing the first change", rec: rec{at: 15 * s, catVer: 2}},
		{name: "catalog missing the first change", rec: rec{at: 15 * s, catVer: 1}, catStale: 1, catOldest: 5 * s},
		{name: "catalog missing both changes is as old as the first", rec: rec{at: 50 * s, catVer: 1}, catStale: 1, catOldest: 40 * s},
		{name: "catalog current after the last change", rec: rec{at: 50 * s, catVer: 3}},
		{name: "not a product-0 catalog answer", rec: rec{at: 50 * s}},
		{name: "availability before its change", rec: rec{at: 4 * s, obs: []obs{{0, -1}}}},
		{name: "availability missing its change", rec: rec{at: 8 * s, obs: []obs{{0, -1}}}, avStale: 1, availOldest: 3 * s},
		{name: "availability showing the change", rec: rec{at: 8 * s, obs: []obs{{0, 0}}}},
		{name: "availability one change behind", rec: rec{at: 26 * s, obs: []obs{{0, 0}}}, avStale: 1, availOldest: 6 * s},
		{name: "another pair's changes do not count", rec: rec{at: 26 * s, obs: []obs{{1, 1}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.recs = []rec{tc.rec}
			_, cs, cm, _, as, am := r.staleness()
			if cs != tc.catStale || cm != tc.catOldest || as != tc.avStale || am != tc.availOldest {
				t.Errorf("catalog stale %d oldest %s, availability stale %d oldest %s; want %d %s, %d %s",
					cs, cm, as, am, tc.catStale, tc.catOldest, tc.avStale, tc.availOldest)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name, design string
		status       int
		header       string // Cache-Status or X-Cache-Status
		class        string
		upstream     bool
	}{
		{"edge hit", "s360edge", 200, "s360edge; hit; ttl=40", "hit", false},
		{"edge stale", "s360edge", 200, "s360edge; hit; ttl=-3; detail=generation", "stale", false},
		{"edge miss stored", "s360edge", 200, "s360edge; fwd=miss; stored", "upstream", true},
		{"edge coalesced miss made no call of its own", "s360edge", 200, "s360edge; fwd=miss; stored; detail=coalesced", "upstream", false},
		{"edge refusal made no call", "s360edge", 429, "s360edge; fwd=miss", "429", false},
		{"edge error after a call", "s360edge", 502, "s360edge; fwd=miss", "502", true},
		{"nginx hit", "nginx", 200, "HIT", "hit", false},
		{"nginx miss", "nginx", 200, "MISS", "upstream", true},
		{"nginx expired", "nginx", 200, "EXPIRED", "upstream", true},
		{"nginx 509 from upstream", "nginx", 509, "MISS", "509", true},
		{"no cache", "nocache", 200, "", "upstream", true},
		{"no cache 509", "nocache", 509, "", "509", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.design == "nginx" {
				h.Set("X-Cache-Status", tc.header)
			} else if tc.header != "" {
				h.Set("Cache-Status", tc.header)
			}
			class, up := classify(tc.design, &http.Response{StatusCode: tc.status, Header: h})
			if class != tc.class || up != tc.upstream {
				t.Errorf("classify = %q, %v; want %q, %v", class, up, tc.class, tc.upstream)
			}
		})
	}
}

func TestDropLines(t *testing.T) {
	src := "s360 {\n\tupstream x\n\tclient_quota 30 3s\n\tfancy {\n\t\tinner 1\n\t}\n\tshop y\n}\n"
	tests := []struct{ name, drop, want string }{
		{"a one-line option", "client_quota", "s360 {\n\tupstream x\n\tfancy {\n\t\tinner 1\n\t}\n\tshop y\n}\n"},
		{"an option with a block", "fancy", "s360 {\n\tupstream x\n\tclient_quota 30 3s\n\tshop y\n}\n"},
		{"an absent option", "nothing", src},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(dropLines([]byte(src), tc.drop)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	m := unknownSub.FindSubmatch([]byte(`{"msg":"parsing caddyfile tokens for 's360': unknown subdirective \"client_quota\", at Caddyfile:30"}`))
	if m == nil || string(m[1]) != "client_quota" {
		t.Errorf("the name of the unknown subdirective is not found in the log line: %q", m)
	}
}

// The day is the same for every design: a seed gives one schedule, sorted,
// with the spike's buyers inside its window.
func TestPlanIsSeededAndShaped(t *testing.T) {
	*minute = 3 * time.Second
	fx := &fixtures{PosID: 1}
	for i := range 10 {
		fx.Products = append(fx.Products, fxProduct{Code: "EV" + strings.Repeat("0", i), State: "RUNNING",
			Performances: []fxPerf{{ID: int64(100 + i), State: "RUNNING", SeatCategoryIDs: []int64{1, 2}, AudienceSubCategoryIDs: []int64{7}}}})
	}
	a, b := makePlan(fx), makePlan(fx)
	if !slices.Equal(a.events, b.events) {
		t.Fatal("two plans of one seed differ")
	}
	if !slices.IsSortedFunc(a.events, func(x, y event) int { return int(x.at - y.at) }) {
		t.Error("events are not in time order")
	}
	lo, hi := time.Duration(*spikeAt*float64(*minute)), time.Duration((*spikeAt+*spikeLen)*float64(*minute))
	spike, views := 0, map[int]int{}
	for _, e := range a.events {
		switch e.kind {
		case kSpike:
			spike++
			if e.at < lo || e.at > hi || e.prod != a.spikeProd {
				t.Fatalf("spike buyer at %s on product %d, outside [%s, %s] or not product %d", e.at, e.prod, lo, hi, a.spikeProd)
			}
		case kPage:
			views[e.prod]++
		}
	}
	if spike != *spikeN {
		t.Errorf("%d spike buyers, want %d", spike, *spikeN)
	}
	if views[0] <= views[len(fx.Products)-1] {
		t.Errorf("no Zipf skew: product 0 viewed %d times, the last %d", views[0], views[len(fx.Products)-1])
	}
}

func TestLimitsFromCaddyfile(t *testing.T) {
	tests := []struct {
		name, src         string
		wantRate, wantQuo int
	}{
		{"defaults: no quota, fair shares", "s360 {\n\tupstream x\n}\n", 150, -1},
		{"rate_limit sets no quota", "\trate_limit 100 {$MINUTE}\n", 100, -1},
		{"client_quota", "\trate_limit 150 3s\n\tclient_quota 10 {$MINUTE}\n", 150, 10},
		{"client_quota off", "\tclient_quota off\n", 150, 0},
		{"a placeholder count is left alone", "\trate_limit {$RATE} 3s\n", 150, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rate, q := limits([]byte(tc.src), 150)
			if rate != tc.wantRate || q != tc.wantQuo {
				t.Errorf("limits = %d, %d; want %d, %d", rate, q, tc.wantRate, tc.wantQuo)
			}
		})
	}
}

// Failed answers are named by class and by what their body says, the
// sidecar's error or S-360's status detail.
func TestErrorKind(t *testing.T) {
	for _, tc := range []struct{ class, body, want string }{
		{"429", `{"error":"min_interval","message":"..."}`, "429 min_interval"},
		{"509", `{"statusCode":"failed","statusDetail":"rate_limited"}`, "509 rate_limited"},
		{"upstream", `{"statusCode":"invalid_parameter"}`, "upstream invalid_parameter"},
		{"502", `<html>bad gateway</html>`, "502 (no JSON error)"},
	} {
		if got := errorKind(tc.class, []byte(tc.body)); got != tc.want {
			t.Errorf("errorKind(%q, %s) = %q, want %q", tc.class, tc.body, got, tc.want)
		}
	}
}
