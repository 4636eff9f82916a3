// Command onsale is an on-sale spike of orders through s360edge in front of
// s360sim, once with the order queue on and once with it off
// (bench/Caddyfile.onsale, ORDER_QUEUE), each phase against a fresh
// simulator and a fresh storage directory.
//
// N buyers post one order each (createOrUpdateOrder, one ticket of the same
// performance, externalReference "buyer-NNNN") within a short spike, in a
// known order: buyer i sends its first POST at i × spike/N. Most send
// Prefer: respond-async and, on 202, poll their ticket every 1-2 s until
// the outcome; a share are plain API clients (no Prefer: they wait, and
// past order_wait get 429 order_queued, their order withdrawn); a share of
// the async buyers leave right after their 202 and never poll. A buyer
// refused with another 429 or a 503 (without the queue: budget_exhausted)
// tries again by hand after Retry-After, capped, a few times; a buyer who
// leaves does not.
//
// The report compares the phases (orders placed, refused, withdrawn,
// abandoned, 509s, waits, FIFO inversions, each order placed once), is
// printed, and replaces the "onsale" section of BENCHMARKS.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/s360edge/s360edge/bench/internal/machine"
	"github.com/s360edge/s360edge/bench/internal/mdsection"
	"github.com/s360edge/s360edge/bench/internal/proc"
)

var (
	binDir    = flag.String("bin", "bench/bin", "directory holding s360sim and s360edge")
	caddyfile = flag.String("caddyfile", "bench/Caddyfile.onsale", "the sidecar's Caddyfile (placeholders RATE_LIMIT and ORDER_QUEUE)")
	mdPath    = flag.String("md", "BENCHMARKS.md", "Markdown file whose onsale section is replaced; empty: print only")
	section   = flag.String("section", "onsale", "the BENCHMARKS.md section to replace")
	phases    = flag.String("phases", "on,off", "order_queue of each phase, in turn")
	buyers    = flag.Int("buyers", 120, "buyers, one order each")
	spike     = flag.Duration("spike", 5*time.Second, "the buyers' first POSTs are spread evenly over this")
	limit     = flag.Int("limit", 40, "the sidecar's rate_limit, calls a minute")
	simLimit  = flag.Int("sim-limit", 180, "the simulator's calls a minute (S-360's default)")
	plain     = flag.Float64("plain", 0.10, "share of the buyers that are plain API clients (no Prefer: respond-async)")
	leave     = flag.Float64("leave", 0.05, "share of the async buyers that leave right after their 202 (and, without the queue, after their first refusal)")
	retries   = flag.Int("retries", 3, "tries again by hand after a refusal (429 other than order_queued, or 503)")
	retryCap  = flag.Duration("retry-cap", 10*time.Second, "longest Retry-After a buyer waits before trying again")
	pollMin   = flag.Duration("poll-min", time.Second, "shortest interval between a buyer's polls of its ticket")
	pollMax   = flag.Duration("poll-max", 2*time.Second, "longest interval between a buyer's polls of its ticket")
	settle    = flag.Duration("settle", 3*time.Second, "wait after the sidecar is up before the spike (its first token and polls)")
	maxPhase  = flag.Duration("max-phase", 8*time.Minute, "a phase's buyers give up after this")
	tie       = flag.Duration("tie", 5*time.Millisecond, "two buyers whose first POSTs are less than this apart are not compared for FIFO: neither came first")
	seed      = flag.Uint64("seed", 1, "which buyers are plain API clients and which leave (the same in both phases)")
	keep      = flag.Bool("keep", false, "keep each phase's directory (logs, buyers.tsv, orders.json) and print its path")
)

const (
	orderPath = "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder"
	operator  = "MOSA_WEB"
	secret    = "sim-secret"
)

func main() {
	flag.Parse()
	var report bytes.Buffer
	loadStart := machine.LoadAvg()
	var results []*phaseResult
	for _, p := range strings.Split(*phases, ",") {
		p = strings.TrimSpace(p)
		fmt.Fprintf(os.Stderr, "== on-sale with order_queue %s: %d buyers within %s, rate_limit %d 1m, simulator %d/min\n", p, *buyers, *spike, *limit, *simLimit)
		res, err := runPhase(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "onsale:", err)
			res = &phaseResult{queue: p, err: err}
		}
		results = append(results, res)
	}
	writeReport(&report, results, loadStart)
	os.Stdout.Write(report.Bytes())
	if *mdPath != "" {
		if err := mdsection.Replace(*mdPath, *section, report.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "onsale:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "== wrote the %s section of %s\n", *section, *mdPath)
	}
	for _, r := range results {
		if r.err != nil {
			os.Exit(1)
		}
	}
}

// ------------------------------------------------------------ observed state

type fixtures struct {
	PosID    int64 `json:"posId"`
	Products []struct {
		Performances []struct {
			ID                     int64   `json:"id"`
			State                  string  `json:"state"`
			SeatCategoryIDs        []int64 `json:"seatCategoryIds"`
			AudienceSubCategoryIDs []int64 `json:"audienceSubCategoryIds"`
		} `json:"performances"`
	} `json:"products"`
}

type simOrder struct {
	OrderID int64  `json:"orderId"`
	Ref     string `json:"externalReference"`
	Created string `json:"created"`
}

type simCounters struct {
	Calls       map[string]int `json:"calls"`
	Statuses    map[string]int `json:"statuses"`
	RateLimited int            `json:"rateLimited"`
	Total       int            `json:"total"`
}

type queueStats struct {
	Length    int `json:"length"`
	Sending   int `json:"sending"`
	Enqueued  int `json:"enqueued"`
	Admitted  int `json:"admitted"`
	Placed    int `json:"placed"`
	Failed    int `json:"failed"`
	Withdrawn int `json:"withdrawn"`
	Abandoned int `json:"abandoned"`
	Refused   int `json:"refused"`
}

type edgeStats struct {
	Edges []struct {
		Queue  queueStats `json:"order_queue"`
		Budget struct {
			EffectiveLimit int    `json:"effective_limit"`
			WatchReserve   int    `json:"watch_reserve"`
			OrderReserve   int    `json:"order_reserve"`
			Granted        uint64 `json:"granted"`
			Waits          uint64 `json:"waits"`
			Rejections     uint64 `json:"rejections"`
			Pauses         uint64 `json:"pauses"`
			Pushbacks      uint64 `json:"pushbacks"`
		} `json:"budget"`
	} `json:"edges"`
}

func readStats(adminURL string) (edgeStats, error) {
	var st edgeStats
	if err := proc.GetJSON(adminURL+"/s360/stats", &st); err != nil {
		return st, err
	}
	if len(st.Edges) != 1 {
		return st, fmt.Errorf("%s/s360/stats: %d edges, want 1", adminURL, len(st.Edges))
	}
	return st, nil
}

// phaseResult is one phase: the buyers' side and what the simulator and
// the sidecar counted.
type phaseResult struct {
	queue      string // "on" or "off"
	err        error
	buyers     []*buyer
	orders     []simOrder
	counters   simCounters
	stats      edgeStats
	t0         time.Time // the spike's start
	wall       time.Duration
	drained    time.Duration // until the line was empty (queue on)
	loadBefore string
	loadAfter  string
}

// ------------------------------------------------------------ a phase

func runPhase(queue string) (*phaseResult, error) {
	work, err := os.MkdirTemp("", "s360onsale-")
	if err != nil {
		return nil, err
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "   keeping", work)
	} else {
		defer os.RemoveAll(work)
	}
	sim, simURL, err := proc.StartSim(work, *binDir, 30*time.Second,
		"-operator", operator, "-secret", secret, "-rate-limit", fmt.Sprint(*simLimit))
	if err != nil {
		return nil, err
	}
	defer sim.Stop()
	body, err := onSaleOrder(simURL)
	if err != nil {
		return nil, err
	}

	edgePort, adminPort := proc.FreePort(), proc.FreePort()
	env := []string{"HOME=" + work, "XDG_DATA_HOME=" + work, "XDG_CONFIG_HOME=" + work, "WORK=" + work,
		"EDGE_PORT=" + edgePort, "ADMIN_PORT=" + adminPort, "SIM_URL=" + simURL,
		fmt.Sprintf("RATE_LIMIT=%d 1m", *limit), "ORDER_QUEUE=" + queue}
	edge, err := proc.Start(filepath.Join(work, "edge.log"), env, filepath.Join(*binDir, "s360edge"),
		"run", "--config", *caddyfile, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	defer edge.Stop()
	edgeURL, adminURL := "http://127.0.0.1:"+edgePort, "http://127.0.0.1:"+adminPort
	if err := proc.WaitUp(edgeURL+"/", edge, 30*time.Second); err != nil {
		return nil, err
	}
	time.Sleep(*settle)

	res := &phaseResult{queue: queue, buyers: newBuyers(), loadBefore: machine.LoadAvg()}
	ctx, cancel := context.WithTimeout(context.Background(), *maxPhase)
	defer cancel()
	client := &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: *buyers, MaxIdleConns: *buyers},
		Timeout:       2 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// The buyers are on the site already: one idle connection each, so
	// that no POST of the spike waits for a connection.
	var warm sync.WaitGroup
	for range *buyers {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if resp, err := client.Get(edgeURL + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	warm.Wait()
	res.t0 = time.Now()
	// One loop starts the buyers, each at its time: late under load,
	// never before the one ahead of it.
	var wg sync.WaitGroup
	for i, b := range res.buyers {
		time.Sleep(time.Until(res.t0.Add(time.Duration(i) * *spike / time.Duration(*buyers))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.run(ctx, client, edgeURL, strings.Replace(body, "{", fmt.Sprintf(`{"externalReference":%q,`, b.ref()), 1))
		}()
	}
	wg.Wait()
	res.wall = time.Since(res.t0)

	// The orders of buyers who left are placed or abandoned in their turn:
	// wait until the line is empty, then ask their tickets (a ticket
	// answers its outcome for 15 minutes; reading it now changes nothing).
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		st, err := readStats(adminURL)
		if err != nil {
			return nil, err
		}
		if q := st.Edges[0].Queue; q.Length == 0 && q.Sending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the line still holds orders 3 minutes after the last buyer's outcome")
		}
	}
	res.drained = time.Since(res.t0)
	for _, b := range res.buyers {
		if b.outcome == outLeft && b.ticket != "" {
			b.leftOutcome = ticketOutcome(client, edgeURL+b.ticket)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if err := proc.GetJSON(simURL+"/_sim/orders", &res.orders); err != nil {
		return nil, err
	}
	if err := proc.GetJSON(simURL+"/_sim/counters", &res.counters); err != nil {
		return nil, err
	}
	if res.stats, err = readStats(adminURL); err != nil {
		return nil, err
	}
	res.loadAfter = machine.LoadAvg()
	if *keep {
		var tsv bytes.Buffer
		fmt.Fprintf(&tsv, "buyer\tkind\tsent_ms\tdone_ms\tattempts\toutcome\tdetail\torder_id\tqueued_at\tposition\n")
		for _, b := range res.buyers {
			fmt.Fprintf(&tsv, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%d\n", b.ref(), b.kind, b.sent.Sub(res.t0).Milliseconds(),
				b.done.Sub(res.t0).Milliseconds(), b.attempts, b.outcome, b.detail, b.orderID, b.queuedAt.Format(time.RFC3339Nano), b.position)
		}
		os.WriteFile(filepath.Join(work, "buyers.tsv"), tsv.Bytes(), 0o644)
		orders, _ := json.MarshalIndent(res.orders, "", "\t")
		os.WriteFile(filepath.Join(work, "orders.json"), orders, 0o644)
	}
	return res, nil
}

// onSaleOrder is the order every buyer posts: one ticket of the first
// running performance, whose seat category gets enough stock for every
// buyer twice over, so that availability never decides an outcome.
func onSaleOrder(simURL string) (string, error) {
	var fx fixtures
	if err := proc.GetJSON(simURL+"/_sim/fixtures", &fx); err != nil {
		return "", err
	}
	for _, p := range fx.Products {
		for _, perf := range p.Performances {
			if perf.State != "RUNNING" || len(perf.SeatCategoryIDs) == 0 || len(perf.AudienceSubCategoryIDs) == 0 {
				continue
			}
			stock := fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":%d}`, perf.ID, perf.SeatCategoryIDs[0], 2**buyers)
			resp, err := http.Post(simURL+"/_sim/stock", "application/json", strings.NewReader(stock))
			if err != nil {
				return "", err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("/_sim/stock: %d %s", resp.StatusCode, b)
			}
			return fmt.Sprintf(`{"pointOfSalesId":%d,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,`+
				`"singleEntryAttributionOperations":[{"performanceId":%d,"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":1}]}`,
				fx.PosID, perf.ID, perf.SeatCategoryIDs[0], perf.AudienceSubCategoryIDs[0]), nil
		}
	}
	return "", fmt.Errorf("no running performance in the simulator's fixtures")
}

// ticketOutcome reads a final ticket: "placed", or "withdrawn (abandoned)"
// and the like.
func ticketOutcome(client *http.Client, url string) string {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var t struct{ Status, Reason, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return fmt.Sprintf("%d, not JSON", resp.StatusCode)
	}
	switch {
	case t.Reason != "":
		return t.Status + " (" + t.Reason + ")"
	case t.Error != "":
		return t.Status + " (" + t.Error + ")"
	}
	return t.Status
}

// commit is the code measured: the repository's HEAD, and whether the
// product's files differ from it.
func commit() string {
	out, err := exec.Command("git", "log", "-1", "--format=%h %s").Output()
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)*.md").Output(); err == nil && len(st) > 0 {
		s += " (with uncommitted changes)"
	}
	return s
}
