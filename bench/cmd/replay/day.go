package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/s360edge/s360edge/bench/internal/machine"
	"github.com/s360edge/s360edge/bench/internal/proc"
)

// ------------------------------------------------------------ the schedule

type kind int

const (
	kPage  kind = iota // a visitor views a product page: catalog, then availability
	kSpike             // an on-sale buyer: catalog, availability, sometimes an order
	kOrder             // an order of a browsing visitor
	kAbuse             // one junk request of the abusive client
	kSetup             // a back-office setup change (/_sim/setup)
	kStock             // a stock change (/_sim/stock)
)

type event struct {
	at    time.Duration // wall offset from the start of the day
	kind  kind
	prod  int  // product index (Zipf rank - 1)
	buyer int  // client number, for X-Forwarded-For
	order bool // a spike buyer who orders
	n     int  // serial of a stock change
}

// fixtures is the part of the simulator's /_sim/fixtures the day uses.
type fixtures struct {
	PosID    int64       `json:"posId"`
	Products []fxProduct `json:"products"`
}

type fxProduct struct {
	Code         string   `json:"code"`
	Name         string   `json:"name"`
	State        string   `json:"state"`
	Performances []fxPerf `json:"performances"`
}

type fxPerf struct {
	ID                     int64   `json:"id"`
	State                  string  `json:"state"`
	SeatCategoryIDs        []int64 `json:"seatCategoryIds"`
	AudienceSubCategoryIDs []int64 `json:"audienceSubCategoryIds"`
}

// pair is a (performance, seat category) whose stock the day changes; its
// quantities are stockBase+serial, so an answer tells which change it shows.
type pair struct{ perf, sc int64 }

const stockBase = 100000

// plan is the day, the same for every design (seeded).
type plan struct {
	events    []event
	spikeProd int
	tracked   []pair
	catKeys   int // distinct catalog bodies the buyers ask for
}

func running(fx *fixtures, i int) bool {
	p := fx.Products[i]
	return p.State == "RUNNING" && len(p.Performances) > 0 && p.Performances[0].State == "RUNNING"
}

func makePlan(fx *fixtures) *plan {
	rng := rand.New(rand.NewPCG(*seed, 9))
	n := len(fx.Products)
	zipf := rand.NewZipf(rng, *zipfS, 1, uint64(n-1))
	m := func(x float64) time.Duration { return time.Duration(x * float64(*minute)) }
	pl := &plan{spikeProd: -1}
	for i := 5; i < n && pl.spikeProd < 0; i++ {
		if running(fx, i) {
			pl.spikeProd = i
		}
	}
	if pl.spikeProd < 0 {
		pl.spikeProd = 0
	}
	for _, i := range []int{0, 1, 2, 3, pl.spikeProd} {
		if i < n {
			perf := fx.Products[i].Performances[0]
			pl.tracked = append(pl.tracked, pair{perf.ID, perf.SeatCategoryIDs[len(perf.SeatCategoryIDs)-1]})
		}
	}
	keys := map[int]bool{}
	add := func(e event) { pl.events = append(pl.events, e) }
	day := float64(*dayLen)
	for mi := 0; mi < *dayLen; mi++ {
		// a day's shape: quiet at both ends, busiest in the middle
		views := int(math.Round(float64(*browse) * (0.3 + 0.7*math.Sin(math.Pi*(float64(mi)+0.5)/day))))
		for range views {
			p := int(zipf.Uint64())
			keys[p] = true
			add(event{at: m(float64(mi) + rng.Float64()), kind: kPage, prod: p, buyer: rng.IntN(5000)})
		}
	}
	for i := range *spikeN {
		keys[pl.spikeProd] = true
		add(event{at: m(*spikeAt + rng.Float64()**spikeLen), kind: kSpike, prod: pl.spikeProd,
			buyer: 100000 + i, order: rng.Float64() < *spikeShare})
	}
	for range int(*ordersMin * day) {
		p := int(zipf.Uint64())
		for !running(fx, p) {
			p = int(zipf.Uint64())
		}
		add(event{at: m(rng.Float64() * day), kind: kOrder, prod: p, buyer: rng.IntN(5000)})
	}
	for range int(float64(*abuseRate) * (*abuseTo - *abuseFrom)) {
		add(event{at: m(*abuseFrom + rng.Float64()*(*abuseTo-*abuseFrom)), kind: kAbuse, prod: rng.IntN(n)})
	}
	for _, s := range strings.Split(*setups, ",") {
		if x, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && x < day {
			add(event{at: m(x), kind: kSetup})
		}
	}
	for k, at := 0, 2; at < *dayLen; k, at = k+1, at+*stockEvery {
		add(event{at: m(float64(at) + 0.5), kind: kStock, n: k})
	}
	slices.SortStableFunc(pl.events, func(a, b event) int { return int(a.at - b.at) })
	pl.catKeys = len(keys)
	return pl
}

// ------------------------------------------------------------ what is observed

type simCounters struct {
	Calls       map[string]int `json:"calls"`
	Statuses    map[string]int `json:"statuses"`
	RateLimited int            `json:"rateLimited"`
	Total       int            `json:"total"`
}

func (c simCounters) refused() int { return c.Statuses["509"] + c.Statuses["429"] }

type obs struct{ pair, k int }

type rec struct {
	kind     kind
	at, lat  time.Duration
	status   int
	class    string // upstream, hit, stale, 429, 509, error, ...
	upstream bool   // this request caused an upstream call
	ok       bool   // 200 with a success envelope (orders: and a redirect for s360edge)
	reason   string // why the call failed: errorKind
	what     string // the call's class: catalog, availability or order
	catVer   int    // product 0's setup version in a catalog answer (0: not product 0)
	obs      []obs  // tracked stock seen in an availability answer
}

type change struct {
	at time.Duration
	k  int
}

type result struct {
	design     string
	err        error
	wall       time.Duration
	recs       []rec
	minutes    []simCounters // at the start of each scaled minute, then the end
	setupAt    []time.Duration
	setupSnap  []int // getCatalogDetailed calls before each setup change
	stock      map[int][]change
	plan       *plan
	dropped    []string
	loadBefore string
	loadAfter  string
}

// ------------------------------------------------------------ one design

type client struct {
	design string
	base   string // where the website's calls go
	hc     *http.Client
	mu     sync.Mutex
	token  string // nocache and nginx: the operator token the backend holds
}

func runDesign(name string) (*result, error) {
	switch name {
	case "s360edge", "nocache", "nginx":
	default:
		return nil, fmt.Errorf("unknown design %q", name)
	}
	work, err := os.MkdirTemp("", "s360replay-"+name+"-")
	if err != nil {
		return nil, err
	}
	os.Chmod(work, 0o755)
	if *keep {
		fmt.Fprintln(os.Stderr, "   keeping", work)
	} else {
		defer os.RemoveAll(work)
	}
	sim, simURL, err := proc.StartSim(work, *binDir, time.Minute,
		"-operator", operator, "-secret", secret, "-products", fmt.Sprint(*products),
		"-rate-limit", fmt.Sprint(*simLimit), "-rate-window", minute.String(),
		"-catalog-floor", scaled(10*time.Minute).String(), "-availability-floor", scaled(time.Minute).String(),
		"-latency", latency.String(), "-catalog-latency", catLatency.String())
	if err != nil {
		return nil, err
	}
	defer sim.Stop()
	var fx fixtures
	if err := proc.GetJSON(simURL+"/_sim/fixtures", &fx); err != nil {
		return nil, err
	}
	if len(fx.Products) < 6 {
		return nil, fmt.Errorf("need at least 6 products, the simulator has %d", len(fx.Products))
	}
	// Orders take seat category 0; enough seats that none sells out, so a
	// refused order is the design's doing, not the sale's.
	for _, p := range fx.Products {
		for _, perf := range p.Performances {
			if err := postJSON(simURL+"/_sim/stock", map[string]any{"performanceId": perf.ID,
				"seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 50000}, nil); err != nil {
				return nil, err
			}
		}
	}
	res := &result{design: name, plan: makePlan(&fx), stock: map[int][]change{}}
	tr := &http.Transport{MaxIdleConnsPerHost: *conc, MaxIdleConns: *conc}
	defer tr.CloseIdleConnections()
	c := &client{design: name, hc: &http.Client{Transport: tr, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	switch name {
	case "s360edge":
		edgePort, adminPort := proc.FreePort(), proc.FreePort()
		c.base = "http://127.0.0.1:" + edgePort
		env := []string{"HOME=" + work, "XDG_DATA_HOME=" + work, "XDG_CONFIG_HOME=" + work, "WORK=" + work,
			"EDGE_PORT=" + edgePort, "ADMIN_PORT=" + adminPort, "SIM_URL=" + simURL,
			"MINUTE=" + minute.String(), "MIN10=" + scaled(10*time.Minute).String(),
			"HOUR=" + scaled(time.Hour).String(), "HOUR24=" + scaled(24*time.Hour).String()}
		edge, dropped, err := startEdge(work, env, c.base)
		res.dropped = dropped
		if err != nil {
			return res, err
		}
		defer edge.Stop()
	case "nocache":
		c.base = simURL
	case "nginx":
		port := proc.FreePort()
		c.base = "http://127.0.0.1:" + port
		ng, err := startNginx(work, port, strings.TrimPrefix(simURL, "http://"))
		if err != nil {
			return nil, err
		}
		defer ng.Stop()
		if err := proc.WaitUp(c.base+"/", ng, time.Minute); err != nil {
			return nil, fmt.Errorf("%v; %s", err, readTail(filepath.Join(work, "error.log")))
		}
	}

	// The day starts on a boundary of the simulator's fixed windows, so
	// that the scaled minutes sampled here are its windows.
	t0 := time.Now().Truncate(*minute).Add(*minute)
	time.Sleep(time.Until(t0))
	res.loadBefore = machine.LoadAvg()
	var mu sync.Mutex
	var wg, sampler sync.WaitGroup
	var first simCounters
	if err := proc.GetJSON(simURL+"/_sim/counters", &first); err != nil {
		return nil, err
	}
	res.minutes = append(res.minutes, first)
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for k := 1; k <= *dayLen; k++ {
			time.Sleep(time.Until(t0.Add(time.Duration(k) * *minute)))
			var cs simCounters
			if err := proc.GetJSON(simURL+"/_sim/counters", &cs); err != nil {
				fmt.Fprintln(os.Stderr, "   counters:", err)
			}
			mu.Lock()
			res.minutes = append(res.minutes, cs)
			mu.Unlock()
		}
	}()

	sem := make(chan struct{}, *conc)
	name0 := regexp.MustCompile(regexp.QuoteMeta(fx.Products[0].Name) + `(?: v(\d+))?"`)
	pairIdx := map[pair]int{}
	for i, p := range res.plan.tracked {
		pairIdx[p] = i
	}
	for _, e := range res.plan.events {
		time.Sleep(time.Until(t0.Add(e.at)))
		switch e.kind {
		case kSetup:
			var cs simCounters
			proc.GetJSON(simURL+"/_sim/counters", &cs)
			if err := postJSON(simURL+"/_sim/setup", struct{}{}, nil); err != nil {
				fmt.Fprintln(os.Stderr, "   setup change:", err)
				continue
			}
			mu.Lock()
			res.setupSnap = append(res.setupSnap, cs.Calls[catalogMethod])
			res.setupAt = append(res.setupAt, time.Since(t0))
			mu.Unlock()
			continue
		case kStock:
			i := e.n % len(res.plan.tracked)
			p := res.plan.tracked[i]
			if err := postJSON(simURL+"/_sim/stock", map[string]any{"performanceId": p.perf,
				"seatCategoryId": p.sc, "quantity": stockBase + e.n}, nil); err != nil {
				fmt.Fprintln(os.Stderr, "   stock change:", err)
				continue
			}
			mu.Lock()
			res.stock[i] = append(res.stock[i], change{time.Since(t0), e.n})
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rs := c.visit(e, &fx, res.plan, name0, pairIdx, t0)
			// a visit that waited for a slot was slow for its buyer too
			if late := time.Since(t0.Add(e.at)) - sumLat(rs); late > 0 && len(rs) > 0 {
				rs[0].lat += late
			}
			mu.Lock()
			res.recs = append(res.recs, rs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sampler.Wait()
	res.wall = time.Since(t0)
	var last simCounters
	if err := proc.GetJSON(simURL+"/_sim/counters", &last); err != nil {
		return nil, err
	}
	res.setupSnap = append(res.setupSnap, last.Calls[catalogMethod])
	res.loadAfter = machine.LoadAvg()
	return res, nil
}

func sumLat(rs []rec) (d time.Duration) {
	for _, r := range rs {
		d += r.lat
	}
	return d
}

// visit plays one event: the calls the website makes for it.
func (c *client) visit(e event, fx *fixtures, pl *plan, name0 *regexp.Regexp, pairIdx map[pair]int, t0 time.Time) []rec {
	p := fx.Products[e.prod]
	ip := fmt.Sprintf("10.%d.%d.%d", e.buyer>>16&255, e.buyer>>8&255, e.buyer&255)
	catalog := fmt.Sprintf(`{"productCode":%q}`, p.Code)
	perfs := make([]string, len(p.Performances))
	for i, perf := range p.Performances {
		perfs[i] = fmt.Sprint(perf.ID)
	}
	avail := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%s],"seatCategoryIds":[-1]}`, fx.PosID, strings.Join(perfs, ","))
	var out []rec
	switch e.kind {
	case kAbuse:
		junk := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%s],"q":"%x"}`, fx.PosID, perfs[0], rand.Uint64())
		return []rec{c.call(kAbuse, "availabilityService/v1_33/getEventAvailability", junk, "203.0.113.66", t0).rec}
	case kOrder:
		return []rec{c.order(e, fx, ip, t0)}
	}
	r := c.call(e.kind, "catalogService/v1_33/getCatalogDetailed", catalog, ip, t0)
	if e.prod == 0 && r.ok {
		r.catVer = 1
		if m := name0.FindSubmatch(r.body); m != nil && len(m[1]) > 0 {
			r.catVer, _ = strconv.Atoi(string(m[1]))
		}
	}
	out = append(out, r.rec)
	a := c.call(e.kind, "availabilityService/v1_33/getEventAvailability", avail, ip, t0)
	if a.ok {
		var v struct {
			Data struct {
				Rows []struct {
					PerformanceID     int64 `json:"performanceId"`
					SeatCategoryID    int64 `json:"seatCategoryId"`
					AvailableQuantity int   `json:"availableQuantity"`
				} `json:"eventAvailabilities"`
			} `json:"eventAvailabilityData"`
		}
		json.Unmarshal(a.body, &v)
		for _, row := range v.Data.Rows {
			if i, ok := pairIdx[pair{row.PerformanceID, row.SeatCategoryID}]; ok {
				k := -1
				if row.AvailableQuantity >= stockBase {
					k = row.AvailableQuantity - stockBase
				}
				a.obs = append(a.obs, obs{i, k})
			}
		}
	}
	out = append(out, a.rec)
	if e.kind == kSpike && e.order {
		out = append(out, c.order(e, fx, ip, t0))
	}
	return out
}

func (c *client) order(e event, fx *fixtures, ip string, t0 time.Time) rec {
	perf := fx.Products[e.prod].Performances[0]
	body := fmt.Sprintf(`{"pointOfSalesId":%d,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,`+
		`"singleEntryAttributionOperations":[{"performanceId":%d,"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":1}]}`,
		fx.PosID, perf.ID, perf.SeatCategoryIDs[0], perf.AudienceSubCategoryIDs[0])
	r := c.call(kOrder, "externalOrderFacade/v1_33/createOrUpdateOrder", body, ip, t0)
	if c.design == "s360edge" && r.ok && !bytes.Contains(r.body, []byte("redirectUrl")) {
		r.ok = false
	}
	if !r.ok && r.reason == "" {
		r.reason = r.class + " no redirect"
	}
	return r.rec
}

type answer struct {
	rec
	body []byte
}

// call makes one call of the website. Without the sidecar, the backend adds
// its operator token and fetches a new one when S-360 answers 401.
func (c *client) call(k kind, method, body, ip string, t0 time.Time) answer {
	start := time.Now()
	a := answer{rec: rec{kind: k, at: start.Sub(t0)}}
	var resp *http.Response
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		tok := ""
		if c.design != "s360edge" {
			if tok, err = c.getToken(""); err != nil {
				break
			}
		}
		req, _ := http.NewRequest("POST", c.base+api+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-Forwarded-For", ip)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err = c.hc.Do(req)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || c.design == "s360edge" {
			break
		}
		drain(resp.Body)
		resp.Body.Close()
		c.getToken(tok) // expired: the next attempt fetches a new one
		resp = nil
	}
	if err != nil || resp == nil {
		a.lat, a.class = time.Since(start), "error"
		return a
	}
	a.body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	a.lat, a.status = time.Since(start), resp.StatusCode
	a.ok = resp.StatusCode == 200 && bytes.Contains(a.body, []byte(`"statusCode":"success"`))
	a.class, a.upstream = classify(c.design, resp)
	a.what, _, _ = strings.Cut(method, "Service/")
	if strings.HasPrefix(method, "externalOrderFacade/") {
		a.what = "order"
	}
	if !a.ok {
		a.reason = errorKind(a.class, a.body)
	}
	return a
}

// errorKind names a failed answer by its class (its status, or hit, stale,
// upstream) and what the body says: the sidecar's JSON error
// (budget_exhausted, min_interval, client_quota...) or S-360's statusDetail
// (or statusCode when it has none).
func errorKind(class string, body []byte) string {
	var env struct {
		Error        string `json:"error"`
		StatusCode   string `json:"statusCode"`
		StatusDetail string `json:"statusDetail"`
	}
	json.Unmarshal(body, &env)
	why := cmp.Or(env.Error, env.StatusDetail, env.StatusCode, "(no JSON error)")
	return class + " " + why
}

func classify(design string, resp *http.Response) (class string, upstream bool) {
	st := resp.StatusCode
	other := fmt.Sprint(st)
	switch design {
	case "s360edge":
		cs := resp.Header.Get("Cache-Status")
		// a 429 is the sidecar's own refusal (budget, floor, quota): no call
		upstream = strings.Contains(cs, "fwd=") && !strings.Contains(cs, "coalesced") && st != 429
		switch {
		case st == 200 && strings.Contains(cs, "; hit") && strings.Contains(cs, "detail="):
			return "stale", false
		case st == 200 && strings.Contains(cs, "; hit"):
			return "hit", false
		case st == 200 && strings.Contains(cs, "fwd="):
			return "upstream", upstream
		}
		return other, upstream
	case "nginx":
		switch resp.Header.Get("X-Cache-Status") {
		case "HIT", "STALE", "UPDATING":
			return "hit", false
		}
	}
	if st == 200 {
		return "upstream", true
	}
	return other, true
}

// getToken returns the token held, or fetches one when none is held or the
// held one is stale (the one a 401 came back for).
func (c *client) getToken(stale string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stale != "" && c.token == stale {
		c.token = ""
		return "", nil
	}
	if c.token != "" {
		return c.token, nil
	}
	var out struct{ Token string }
	err := postJSON(c.base+"/tnai/backend-apis/v1/auth", map[string]string{"operator": operator, "partner": "website", "secret": secret}, &out)
	if err != nil {
		return "", err
	}
	c.token = out.Token
	return c.token, nil
}

// ------------------------------------------------------------ helpers

func postJSON(url string, in, out any) error {
	b, _ := json.Marshal(in)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, tail(body, 200))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	return tail(b, 400)
}
