package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/tidwall/gjson"
)

// statusConfig polls once at start (then hourly) and counts the budget
// over an hour, so that nothing moves between reading the page and
// /s360/stats.
// adaptive off: every refusal pauses its scope (with learned limits, a
// refusal they explain pauses nothing), so the page can be seen paused.
func statusConfig(s *sim) string {
	return siteCaddyfile(s.URL, append([]string{"rate_limit 100 1h", "adaptive off", "setup_poll 1h", "updates_poll 1h"}, noFloors...),
		append([]string{"s360_status /status"}, staticSite...))
}

// shownStats reads every data-stat of the page's first edge: the class
// table's cells under "requests.<class>.<outcome>".
const shownStats = `(() => {
	const s = document.querySelector("section.edge");
	if (!s) return null;
	const out = {dir: s.dataset.dir};
	for (const e of s.querySelectorAll("[data-stat]")) {
		const row = e.closest("tr[data-class]");
		const name = row ? "requests." + row.dataset.class + "." + e.dataset.stat : e.dataset.stat;
		out[name] = e.dataset.value ?? e.textContent.trim();
	}
	return out;
})()`

// TestStatusPage loads /s360/ in headless Chromium with nothing cached,
// then after traffic and S-360's 509s have paused the institution, and
// checks every number shown against /s360/stats.
func TestStatusPage(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found: install Debian's chromium package to check the status page in a browser; on CI (CI set) this test fails instead", chromiumPath)
		}
		t.Fatalf("%s not found although CI is set: %v", chromiumPath, err)
	}
	artifacts, err := filepath.Abs("artifacts")
	if err == nil {
		err = os.MkdirAll(artifacts, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := startSim(t, "-catalog-floor", "0", "-availability-floor", "0")
	e := startEdge(t, statusConfig(s))
	defer e.Stop(t)
	// Caddy's admin endpoint refuses browser navigations (no Origin): the
	// browser reads the page from the s360_status handler, curl from the
	// admin endpoint.
	page := e.URL + "/status"
	adminPage := adminGet(t, e, "/s360/", "text/html")
	if !strings.Contains(adminPage, `<section class="edge"`) || !strings.Contains(adminPage, `http-equiv="refresh"`) {
		t.Errorf("admin /s360/ with Accept: text/html is not the status page:\n%s", tail(adminPage, 2000))
	}
	if j := adminGet(t, e, "/s360/", "*/*"); !gjson.Valid(j) || !gjson.Get(j, "edges.0.budget_per_minute").IsArray() {
		t.Errorf("admin /s360/ for curl is not the stats JSON: %s", tail(j, 500))
	}

	ctx, _, _ := startChromium(t)
	load := func(what, shot string) map[string]string {
		t.Helper()
		runWithin(t, ctx, "loading "+page+" "+what, 30*time.Second, chromedp.Steps(
			chromedp.Navigate(page),
			chromedp.WaitVisible(chromedp.CSS("section.edge svg")),
		))
		shown := runWithin(t, ctx, "reading the numbers "+what, 10*time.Second, chromedp.Evaluate[map[string]string](shownStats))
		png := runWithin(t, ctx, "taking the screenshot "+what, 20*time.Second, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(artifacts, shot), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s: %s", what, filepath.Join(artifacts, shot))
		return shown
	}

	// 1. Nothing cached yet.
	shown := load("with nothing cached", "status-empty.png")
	stats := adminStats(t, e)
	checkShown(t, shown, stats)
	if shown["catalog_ages.entries"] != "0" || shown["hit_ratio"] != "no requests yet" || shown["paused"] != "not paused" {
		t.Errorf("a fresh sidecar shows %v", shown)
	}

	// 2. Traffic: a catalog miss then a hit, availability; then S-360
	// refuses two availability keys and another method: the method, then
	// the institution, pause.
	fx := s.Fixtures(t)
	for range 2 {
		if st, _, b := post(t, e.URL+api+"catalogService/v1_33/getPOSConfig", `{}`); st != 200 {
			t.Fatalf("getPOSConfig: %d %s", st, b)
		}
	}
	avail := func(method string, perf int64) int {
		st, _, _ := post(t, e.URL+api+"availabilityService/v1_33/"+method, fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d]}`, fx.PosID, perf))
		return st
	}
	if st := avail("getEventAvailability", fx.Products[0].Performances[0].ID); st != 200 {
		t.Fatalf("availability: %d", st)
	}
	s.Control(t, "/_sim/faults", `{"burst509":3}`)
	avail("getEventAvailability", fx.Products[1].Performances[0].ID)
	avail("getEventAvailability", fx.Products[2].Performances[0].ID)
	avail("getPerformanceAvailability", fx.Products[3].Performances[0].ID)
	stats = adminStats(t, e)
	if stats.Get("budget.paused_until").String() == "" || stats.Get("budget.pauses_by_scope.method").Int() == 0 {
		t.Fatalf("S-360's 509s did not pause a method and the institution: %s", stats.Get("budget"))
	}

	shown = load("while paused", "status-paused.png")
	stats = adminStats(t, e)
	checkShown(t, shown, stats)
	if !strings.HasPrefix(shown["paused"], "paused until ") {
		t.Errorf("the page shows %q while the institution is paused", shown["paused"])
	}
	if shown["requests.catalog.hit"] != "1" || shown["budget.pushbacks"] != "3" {
		t.Errorf("after one catalog hit and three 509s the page shows %v", shown)
	}
}

// checkShown compares each number on the page with /s360/stats.
func checkShown(t *testing.T, shown map[string]string, stats gjson.Result) {
	t.Helper()
	if shown == nil {
		t.Fatal("the page shows no s360 cache")
	}
	if shown["dir"] != stats.Get("dir").String() {
		t.Errorf("the page shows %q, /s360/stats %q", shown["dir"], stats.Get("dir"))
	}
	perMinute := int64(0)
	for _, m := range stats.Get("budget_per_minute").Array() {
		perMinute += m.Get("calls").Int()
	}
	compared := 0
	for name, v := range shown {
		var want int64
		switch {
		case name == "dir" || name == "paused" || name == "hit_ratio" || strings.HasPrefix(name, "budget.method_limits"):
			continue // words, or rows of a list (caddymodule's status tests check those)
		case name == "budget_per_minute_total":
			want = perMinute
		case strings.HasPrefix(name, "requests."):
			p := strings.SplitN(name, ".", 3)
			for _, c := range stats.Get("requests").Array() {
				if c.Get("class").String() == p[1] && c.Get("outcome").String() == p[2] {
					want = c.Get("value").Int()
				}
			}
		default:
			if !stats.Get(name).Exists() {
				t.Errorf("the page shows %s = %q, which /s360/stats does not have", name, v)
				continue
			}
			want = stats.Get(name).Int()
		}
		if got, err := strconv.ParseInt(v, 10, 64); err != nil || got != want {
			t.Errorf("%s: the page shows %q, /s360/stats says %d", name, v, want)
		}
		compared++
	}
	if compared < 20 {
		t.Errorf("only %d numbers compared: %v", compared, shown)
	}
}

// adminGet GETs an admin route as curl would, with an Accept header.
func adminGet(t *testing.T, e *edge, path, accept string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.Admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// adminStats returns the first edge of /s360/stats.
func adminStats(t *testing.T, e *edge) gjson.Result {
	t.Helper()
	b := adminGet(t, e, "/s360/stats", "application/json")
	if !json.Valid([]byte(b)) {
		t.Fatalf("/s360/stats: %s", b)
	}
	edges := gjson.Get(b, "edges").Array()
	if len(edges) != 1 {
		t.Fatalf("/s360/stats has %d edges, want 1", len(edges))
	}
	return edges[0]
}
