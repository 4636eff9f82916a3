package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserQueueJourney is an on-sale booking in headless Chromium: the
// budget is spent, so "Book" on the demo page queues the order; the
// browser shows the waiting page with its position, and lands on the
// shop's cart with the order S-360 created once the budget frees a slot.
func TestBrowserQueueJourney(t *testing.T) {
	needChromium(t)
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactsDir(t)
	s := startSim(t)
	e := startEdge(t, pollsOffCaddyfile(s.URL, "rate_limit 6 20s\n\t\tclient_quota off\n\t\torder_hold 100ms\n\t\torder_queue_per_client 10",
		"root * "+demo, "file_server"))
	fx := s.Fixtures(t)
	bk := firstBookable(t, fx)
	b := startBrowser(t, artifacts, "queue-failure.png")
	ctx := b.ctx
	runWithin(t, ctx, "the demo page should list the catalog with a Book button", 45*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(bk.bookSel)),
	))
	// Other buyers spend the window: orders until one has to queue.
	for i := 0; ; i++ {
		status, _, body := post(t, e.URL+orderPath, buyerOrder(fx, 1+i%3), "Accept", "application/json", "Prefer", "respond-async")
		if status == 202 {
			break
		}
		if status != 200 || i > 10 {
			t.Fatalf("order %d of the other buyers: %d %s", i, status, body)
		}
	}
	runWithin(t, ctx, "after \"Book\" the browser should show the waiting page with its position", 30*time.Second, chromedp.Steps(
		chromedp.Click(chromedp.CSS(bk.bookSel)),
		chromedp.WaitVisible(chromedp.ID("position")),
	))
	at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location())
	pos := runWithin(t, ctx, "reading the position", 10*time.Second, chromedp.Text(chromedp.ID("position")))
	if !strings.HasPrefix(at, e.URL+"/s360/queue/") || (pos != "2" && pos != "1" && pos != "now") {
		t.Fatalf("waiting page at %q shows position %q, want 2 (behind the other buyer's order)", at, pos)
	}
	b.screenshot(t, artifacts, "queue-waiting.png", "the waiting page")
	runWithin(t, ctx, "the waiting page should go on to the shop's cart once a slot frees", 45*time.Second, chromedp.WaitVisible(chromedp.ID("order-id")))
	orderID := strings.TrimSpace(runWithin(t, ctx, "reading the order id", 10*time.Second, chromedp.Text(chromedp.ID("order-id"))))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); !strings.HasPrefix(at, s.URL+"/shop/cart?") {
		t.Fatalf("the booking ended at %q, want the simulator's cart", at)
	}
	found := false
	for _, o := range s.Orders(t) {
		if len(o.Lines) == 1 && o.Lines[0].PerformanceID == bk.perfID && fmt.Sprint(o.OrderID) == orderID {
			found = true
		}
	}
	if !found {
		t.Fatalf("the cart shows order %q, which the simulator did not create for performance %d: %+v", orderID, bk.perfID, s.Orders(t))
	}
	b.screenshot(t, artifacts, "queue-cart.png", "the cart after the queue")
	b.noExceptions(t)
}
