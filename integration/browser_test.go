package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/oauth2-proxy/mockoidc"
)

// chromiumPath is Debian's chromium package; .ci/run installs it.
const chromiumPath = "/usr/bin/chromium"

// syncBuffer collects output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runWithin runs one chromedp action under its own deadline, so that a
// page that never shows what we wait for fails the test with a message
// instead of hanging it.
func runWithin[T any](t *testing.T, ctx context.Context, what string, timeout time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		defer lcancel()
		at, _ := chromedp.Run(lctx, chromedp.Location())
		t.Fatalf("%s: %v (the page is at %q)", what, err, at)
	}
	return v
}

// needChromium skips the test without Chromium, or fails it on CI.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found: install Debian's chromium package (apt-get install chromium) to run the browser tests; on CI (CI set) they fail instead", chromiumPath)
		}
		t.Fatalf("%s not found although CI is set: .ci/run should have installed the chromium package: %v", chromiumPath, err)
	}
}

// artifactsDir is where the browser tests save their screenshots.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("artifacts")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one test's headless Chromium, with a record of what its
// pages did for the failure report.
type browser struct {
	ctx        context.Context
	mu         sync.Mutex
	pageLog    []string
	exceptions []string
}

func (b *browser) note(list *[]string, format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	*list = append(*list, fmt.Sprintf(format, args...))
}

// startChromium starts headless Chromium for t; stop (also run when t
// ends) closes it, out is its output.
func startChromium(t *testing.T) (ctx context.Context, stop func(), out *syncBuffer) {
	t.Helper()
	// As root, Chromium needs --no-sandbox; without the background
	// networking flags it keeps calling Google's services, which a closed
	// network answers slowly or never.
	out = &syncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	stop = func() { cancel(); cancelAlloc() }
	t.Cleanup(stop)

	// The first Run starts the browser and binds it to ctx, so it gets no
	// deadline of its own; a watchdog bounds it instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	var err error
	select {
	case err = <-started:
	case <-time.After(90 * time.Second):
		cancel()
		err = fmt.Errorf("no answer within 90s (%w)", <-started)
	}
	if err != nil {
		t.Fatalf("starting %s: %v\n--- chromium output ---\n%s", chromiumPath, err, tail(out.String(), 4000))
	}
	return ctx, stop, out
}

// startBrowser starts Chromium for t. If t fails, the page at that moment
// is saved as failShot in artifacts, and what the pages did is logged.
func startBrowser(t *testing.T, artifacts, failShot string) *browser {
	t.Helper()
	ctx, stop, chromeOut := startChromium(t)
	b := &browser{ctx: ctx}
	var wg sync.WaitGroup
	consoleEvents := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	exceptionEvents := chromedp.Events(ctx, runtime.ExceptionThrown)
	responseEvents := chromedp.Events(ctx, network.ResponseReceived)
	requestEvents := chromedp.Events(ctx, network.RequestWillBeSent)
	wg.Go(func() {
		for ev, err := range consoleEvents {
			if err != nil {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, firstNonEmpty(a.Description, string(a.Value)))
			}
			b.note(&b.pageLog, "console.%s %s", ev.Type, strings.Join(args, " "))
		}
	})
	wg.Go(func() {
		for ev, err := range exceptionEvents {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.note(&b.exceptions, "%s at %s:%d", msg, d.URL, d.LineNumber+1)
			b.note(&b.pageLog, "uncaught exception: %s at %s:%d", msg, d.URL, d.LineNumber+1)
		}
	})
	wg.Go(func() {
		for ev, err := range responseEvents {
			if err != nil {
				return
			}
			b.note(&b.pageLog, "%d %s", ev.Response.Status, ev.Response.URL)
		}
	})
	wg.Go(func() {
		for ev, err := range requestEvents {
			if err != nil {
				return
			}
			if r := ev.RedirectResponse; r != nil {
				b.note(&b.pageLog, "%d %s → %s", r.Status, r.URL, ev.Request.URL)
			}
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
				path := filepath.Join(artifacts, failShot)
				if os.WriteFile(path, png, 0o644) == nil {
					t.Logf("screenshot of the page at the failure: %s", path)
				}
			}
			scancel()
		}
		stop()
		wg.Wait()
		if t.Failed() {
			b.mu.Lock()
			t.Logf("--- what the page did ---\n%s", strings.Join(b.pageLog, "\n"))
			b.mu.Unlock()
			t.Logf("--- chromium output (without D-Bus noise) ---\n%s", tail(withoutDBus(chromeOut.String()), 4000))
		}
	})
	return b
}

// screenshot saves the current page as name in artifacts.
func (b *browser) screenshot(t *testing.T, artifacts, name, what string) {
	t.Helper()
	png := runWithin(t, b.ctx, "taking the screenshot of "+what, 20*time.Second, chromedp.FullScreenshot(100))
	path := filepath.Join(artifacts, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("saving %s: %v", path, err)
	}
	t.Logf("screenshot of %s: %s", what, path)
}

// noExceptions fails t if a page threw an uncaught exception.
func (b *browser) noExceptions(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.exceptions) > 0 {
		t.Errorf("the pages threw uncaught exceptions:\n%s", strings.Join(b.exceptions, "\n"))
	}
}

// bookable is what a journey books: the first product's first RUNNING
// performance, with its selectors on the demo page.
type bookable struct {
	productID, perfID             int64
	productName                   string
	productSel, availSel, bookSel string
}

func firstBookable(t *testing.T, fx fixtures) bookable {
	t.Helper()
	product := fx.Products[0]
	for _, q := range product.Performances {
		if q.State == "RUNNING" && len(q.SeatCategoryIDs) > 0 {
			return bookable{
				productID: product.ID, perfID: q.ID, productName: product.Name,
				productSel: fmt.Sprintf(`.product[data-product-id="%d"]`, product.ID),
				availSel:   fmt.Sprintf(`.availability[data-performance-id="%d"][data-available]`, q.ID),
				bookSel:    fmt.Sprintf(`button.book[data-performance-id="%d"]`, q.ID),
			}
		}
	}
	t.Fatalf("product %d %q has no RUNNING performance in the simulator's fixtures", product.ID, product.Name)
	return bookable{}
}

// browseDemo opens the demo page, served by the sidecar's website, and
// checks that it lists the catalog with availability and offers a login.
func browseDemo(t *testing.T, b *browser, e *edge, fx fixtures, bk bookable) {
	t.Helper()
	ctx := b.ctx
	runWithin(t, ctx, "the demo page should list the catalog with availability and offer a login", 45*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(bk.productSel+" "+bk.availSel)),
		chromedp.WaitVisible(chromedp.ID("login")),
	))
	if name := runWithin(t, ctx, "reading the product name", 10*time.Second, chromedp.Text(chromedp.CSS(bk.productSel+" h2"))); name != bk.productName {
		t.Errorf("the demo page names product %d %q, want %q (the catalog's English name)", bk.productID, name, bk.productName)
	}
	avail := runWithin(t, ctx, "reading the availability", 10*time.Second, chromedp.Text(chromedp.CSS(bk.productSel+" "+bk.availSel)))
	if !regexp.MustCompile(`^[1-9][0-9]* left$`).MatchString(strings.TrimSpace(avail)) {
		t.Errorf("availability of performance %d shows %q, want \"<n> left\" from getEventAvailability", bk.perfID, avail)
	}
	listed := runWithin(t, ctx, "counting the products", 10*time.Second, chromedp.Evaluate[int](`document.querySelectorAll(".product").length`))
	if listed < 2 {
		t.Errorf("the demo page lists %d products, want the simulator's catalog (%d products in the fixtures)", listed, len(fx.Products))
	}
}

// bookToCart clicks "Book": the page posts the order with fetch and
// follows redirectUrl to the shop, which shows the cart. It checks that
// the cart shows the one order S-360 created, for one ticket of bk, saves
// the cart as shot, and returns the order id.
func bookToCart(t *testing.T, b *browser, s *sim, bk bookable, artifacts, shot string) string {
	t.Helper()
	ctx := b.ctx
	runWithin(t, ctx, "after \"Book\" the browser should land on the shop's cart page", 45*time.Second, chromedp.Steps(
		chromedp.Click(chromedp.CSS(bk.bookSel)),
		chromedp.WaitVisible(chromedp.ID("order-id")),
	))
	at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location())
	if !strings.HasPrefix(at, s.URL+"/shop/cart?") {
		t.Errorf("the booking ended at %q, want the simulator's cart %s/shop/cart?...", at, s.URL)
	}
	orderID := strings.TrimSpace(runWithin(t, ctx, "reading the order id", 10*time.Second, chromedp.Text(chromedp.ID("order-id"))))
	b.screenshot(t, artifacts, shot, "the cart page")

	orders := s.Orders(t)
	if len(orders) != 1 {
		t.Fatalf("the simulator has %d orders, want exactly the one booked: %+v", len(orders), orders)
	}
	o := orders[0]
	if fmt.Sprint(o.OrderID) != orderID {
		t.Errorf("the cart page shows order %q, the simulator created order %d", orderID, o.OrderID)
	}
	if len(o.Lines) != 1 || o.Lines[0].PerformanceID != bk.perfID || o.Lines[0].Quantity != 1 {
		t.Errorf("order %d has lines %+v, want one ticket for performance %d", o.OrderID, o.Lines, bk.perfID)
	}
	var redirects []map[string]any
	getJSON(t, s.URL+"/_sim/redirects", &redirects)
	if len(redirects) == 0 || fmt.Sprint(redirects[len(redirects)-1]["orderId"]) != orderID || redirects[len(redirects)-1]["lang"] != "en" {
		t.Errorf("the shop's cart redirects were %v, want the last one for order %s with lang en", redirects, orderID)
	}
	return orderID
}

// TestBrowserJourney is the whole partial-integration journey in headless
// Chromium: the demo page, served by the sidecar's website, lists the
// catalog and availability; the buyer logs in at the provider, books, and
// lands on the simulator's cart page showing the order S-360 created.
func TestBrowserJourney(t *testing.T) {
	needChromium(t)
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactsDir(t)

	p := startProvider(t)
	s := startSim(t)
	e := startEdge(t, oidcCaddyfile(s, p, demo, ""), oidcEnv(t, p)...)
	fx := s.Fixtures(t)
	bk := firstBookable(t, fx)
	// Another product's performance is sold out behind the page's back.
	soldOut := fx.Products[1].Performances[0]
	buyer := &mockoidc.MockUser{Subject: "buyer-1815", Email: "ada@example.com", EmailVerified: true, PreferredUsername: "ada.lovelace"}
	p.QueueUser(buyer) // the "Log in" click
	p.QueueUser(buyer) // the login that "Book" starts after the logout

	b := startBrowser(t, artifacts, "journey-failure.png")
	ctx := b.ctx

	// 1. The demo page lists the catalog, with availability, through the sidecar.
	browseDemo(t, b, e, fx, bk)

	// 2. Log in: the sidecar's login, the provider, the callback, and back
	// to the page, which shows the buyer from /auth/userinfo.
	runWithin(t, ctx, "after \"Log in\" the page should come back showing the buyer", 45*time.Second, chromedp.Steps(
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("user-name")),
		chromedp.WaitVisible(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.CSS(bk.availSel)),
		chromedp.WaitVisible(chromedp.CSS(bk.bookSel)),
	))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != e.URL+"/" {
		t.Errorf("after the login the browser is at %q, want back on the demo page %q", at, e.URL+"/")
	}
	if name := runWithin(t, ctx, "reading the user name", 10*time.Second, chromedp.Text(chromedp.ID("user-name"))); name != buyer.PreferredUsername {
		t.Errorf("the page shows the buyer as %q, want %q", name, buyer.PreferredUsername)
	}
	if email := runWithin(t, ctx, "reading the user email", 10*time.Second, chromedp.Text(chromedp.ID("user-email"))); !strings.Contains(email, buyer.Email) {
		t.Errorf("the page shows the email %q, want %q", email, buyer.Email)
	}
	b.screenshot(t, artifacts, "journey-shop.png", "the demo page, logged in")

	// 3. A performance that sold out since the page loaded: S-360 refuses
	// the order, the sidecar answers 409 not_available, the page says so.
	for _, sc := range soldOut.SeatCategoryIDs {
		s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":0}`, soldOut.ID, sc))
	}
	soldOutSel := fmt.Sprintf(`button.book[data-performance-id="%d"]`, soldOut.ID)
	runWithin(t, ctx, "booking a sold-out performance should show an error on the page", 30*time.Second, chromedp.Steps(
		chromedp.Click(chromedp.CSS(soldOutSel)),
		chromedp.WaitVisible(chromedp.ID("error")),
	))
	if msg := runWithin(t, ctx, "reading the error", 10*time.Second, chromedp.Text(chromedp.ID("error"))); !strings.Contains(msg, "Sold out") {
		t.Errorf("after booking a sold-out performance the page says %q, want a \"Sold out\" message", msg)
	}
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != e.URL+"/" {
		t.Errorf("a refused order should keep the buyer on the page, the browser is at %q", at)
	}
	if n := len(s.Orders(t)); n != 0 {
		t.Errorf("the simulator has %d orders after a sold-out booking, want none", n)
	}

	// 4. and 5. Book, and land on the shop's cart with the order S-360 created.
	bookToCart(t, b, s, bk, artifacts, "journey.png")

	// 6. Back on the site, "Log out" ends the session; "Book" then gets
	// 401 login_required, and the page sends the buyer through the login
	// and back to itself (not to the API path).
	runWithin(t, ctx, "after \"Log out\" the page should offer the login again", 45*time.Second, chromedp.Steps(
		chromedp.Navigate(e.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("logout")),
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(bk.bookSel)),
	))
	runWithin(t, ctx, "\"Book\" while logged out should go through the login and back to the page", 45*time.Second, chromedp.Steps(
		chromedp.Click(chromedp.CSS(bk.bookSel)),
		chromedp.WaitVisible(chromedp.ID("user-name")),
	))
	if at := runWithin(t, ctx, "reading the location", 10*time.Second, chromedp.Location()); at != e.URL+"/" {
		t.Errorf("after the login that \"Book\" started the browser is at %q, want back on the demo page %q", at, e.URL+"/")
	}
	if n := len(s.Orders(t)); n != 1 {
		t.Errorf("the simulator has %d orders, want still the one booked (an order without a login must not reach S-360)", n)
	}
	b.noExceptions(t)
}

// withoutDBus drops Chromium's complaints about the missing D-Bus, which
// say nothing about the test.
func withoutDBus(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "dbus") && !strings.Contains(l, "D-Bus") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// firstNonEmpty returns the first non-empty string.
func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
