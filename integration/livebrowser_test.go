package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserLiveAvailability: the demo page, in headless Chromium,
// follows its products on /s360/live and shows a stock change without
// being reloaded.
func TestBrowserLiveAvailability(t *testing.T) {
	needChromium(t)
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactsDir(t)
	s := startWatchSim(t)
	simUp := time.Now()
	e := startEdge(t, siteCaddyfile(s.URL, append([]string{"setup_poll 1s", "updates_poll 1s"}, noFloors...),
		[]string{"root * " + demo, "file_server"}))
	fx := s.Fixtures(t)
	bk := firstBookable(t, fx)
	perf := fx.Products[0].Performances[0]
	for _, q := range fx.Products[0].Performances {
		if q.ID == bk.perfID {
			perf = q
		}
	}
	b := startBrowser(t, artifacts, "live-failure.png")
	ctx := b.ctx
	runWithin(t, ctx, "the demo page should list the catalog with availability and follow it live", 45*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(bk.productSel+" "+bk.availSel)),
	))
	waitFor(t, "the page to subscribe", 10*time.Second, func() bool {
		return runWithin(t, ctx, "reading the live line", 5*time.Second, chromedp.Text(chromedp.ID("live"))) == "Availability updates live."
	})
	waitQuietFeed(t, e, simUp) // the page loaded the catalog: the feed asks about its products

	// One ticket left in each seat category, behind the page's back.
	for _, sc := range perf.SeatCategoryIDs {
		s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":1}`, perf.ID, sc))
	}
	want := fmt.Sprintf("%d left", len(perf.SeatCategoryIDs))
	var shown string
	waitFor(t, "the page to show the new stock, "+want, 20*time.Second, func() bool {
		shown = strings.TrimSpace(runWithin(t, ctx, "reading the availability", 5*time.Second, chromedp.Text(chromedp.CSS(bk.productSel+" "+bk.availSel))))
		return shown == want
	})
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != e.URL+"/" {
		t.Errorf("the browser is at %q, want still on the demo page", at)
	}
	b.noExceptions(t)
}
