// Command live measures what the live availability streams (GET
// /s360/live) cost one s360edge process, side by side in one run: the
// process idle with no subscriber, then with -n subscribers (10,000 by
// default) idle, while one change fans out to all of them, while the fresh
// answer that follows it does, and after they have all gone. For each
// phase it reads the process's RSS (VmRSS, RssAnon) from /proc, its CPU
// time (utime + stime) over the phase, and its goroutines and Go heap from
// Caddy's /metrics; for the fan-outs, how long after the stock change the
// first and the last subscriber had the event.
//
// It starts bench/bin/s360sim and bench/bin/s360edge (bench/Caddyfile.live)
// on free loopback ports, stops them by PID, prints a Markdown report and,
// with -md, rewrites the "live" section of that file.
//
// Each subscription is one TCP connection of this process: with the
// default 10,000, both processes need a file descriptor limit above
// 10,000 (Go raises the soft limit to the hard one; `ulimit -Hn`).
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/s360edge/s360edge/bench/internal/mdsection"
	"github.com/s360edge/s360edge/bench/internal/proc"
)

var (
	binDir    = flag.String("bin", "bench/bin", "directory of s360edge and s360sim")
	caddyfile = flag.String("caddyfile", "bench/Caddyfile.live", "the sidecar's Caddyfile")
	n         = flag.Int("n", 10000, "subscribers")
	window    = flag.Duration("window", 30*time.Second, "how long each idle phase is measured (at least two heartbeats: 30s)")
	mdPath    = flag.String("md", "", "Markdown file whose \"live\" section the report replaces")
	workDir   = flag.String("work", "bench/work/live", "working directory (logs, store)")
)

const avail = "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability"

func main() {
	flag.Parse()
	work, err := filepath.Abs(*workDir)
	must(err)
	must(os.RemoveAll(work))
	must(os.MkdirAll(work, 0o755))
	var lim syscall.Rlimit
	must(syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < uint64(*n)+200 {
		fail("the file descriptor limit is %d: %d subscribers need more (ulimit -n)", lim.Cur, *n)
	}

	edgePort, adminPort := proc.FreePort(), proc.FreePort()
	sim, simURL, err := proc.StartSim(work, *binDir, 30*time.Second, "-catalog-floor", "0", "-availability-floor", "0", "-rate-limit", "0")
	must(err)
	stops = append(stops, sim.Stop)
	defer sim.Stop()
	simUp := time.Now()
	env := []string{"SIM_URL=" + simURL, "EDGE_PORT=" + edgePort, "ADMIN_PORT=" + adminPort, "STORE=" + filepath.Join(work, "store"),
		"LIVE_MAX=" + strconv.Itoa(*n), "HOME=" + work, "XDG_DATA_HOME=" + filepath.Join(work, "data"), "XDG_CONFIG_HOME=" + filepath.Join(work, "config")}
	edgeBin := filepath.Join(*binDir, "s360edge")
	edge, err := proc.Start(filepath.Join(work, "edge.log"), env, edgeBin, "run", "--config", *caddyfile, "--adapter", "caddyfile")
	must(err)
	stops = append(stops, edge.Stop)
	defer edge.Stop()
	base, admin := "http://127.0.0.1:"+edgePort, "http://127.0.0.1:"+adminPort
	must(proc.WaitUp(base+"/", edge, 60*time.Second))
	pid := edge.PID()

	// The catalog, so that the feed polls its products; one availability
	// answer of the product that will change.
	var fx struct {
		PosID    int64 `json:"posId"`
		Products []struct {
			ID           int64 `json:"id"`
			Performances []struct {
				ID              int64   `json:"id"`
				State           string  `json:"state"`
				SeatCategoryIDs []int64 `json:"seatCategoryIds"`
			} `json:"performances"`
		} `json:"products"`
	}
	must(proc.GetJSON(simURL+"/_sim/fixtures", &fx))
	post(base+"/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", `{}`)
	var products []int64
	x := -1
	for i, p := range fx.Products {
		if len(p.Performances) > 0 && p.Performances[0].State == "RUNNING" {
			products = append(products, p.ID)
			if x < 0 {
				x = i
			}
		}
	}
	if x < 0 || len(products) < 2 {
		fail("the simulator's catalog has fewer than two RUNNING products")
	}
	xp := fx.Products[x]
	body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, xp.Performances[0].ID)
	post(base+avail, body)
	// Before the feed's reference date passes the simulator's start, every
	// product is reported changed (the polls overlap by a second).
	for time.Since(simUp) < 5*time.Second {
		time.Sleep(100 * time.Millisecond)
	}

	var rows []row
	time.Sleep(10 * time.Second) // start-up settles
	rows = append(rows, idle(pid, admin, "no subscriber, idle"))

	// -n subscribers: each follows the product that will change and one
	// other, in turn.
	ctx, cancel := context.WithCancel(context.Background())
	subs := make([]*sub, *n)
	began := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				other := products[1+i%(len(products)-1)]
				subs[i] = subscribe(ctx, base, fmt.Sprintf("%d,%d", xp.ID, other), xp.ID)
			}
		})
	}
	for i := range *n {
		next <- i
	}
	close(next)
	wg.Wait()
	opened := time.Since(began)
	if got := metric(admin, "caddy_s360_live_subscribers"); got != float64(*n) {
		fail("caddy_s360_live_subscribers %v after opening %d subscriptions", got, *n)
	}
	time.Sleep(10 * time.Second)
	rows = append(rows, idle(pid, admin, fmt.Sprintf("%d subscribers, idle", *n)))

	// One change of the product every subscriber follows: the feed's next
	// poll (every second) invalidates it and every subscriber hears it.
	p := xp.Performances[0]
	change := fanout(pid, admin, fmt.Sprintf("%d subscribers, a change fans out", *n), subs, func(s *sub) *atomic.Int64 { return &s.changed }, func() {
		post(simURL+"/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":7}`, p.ID, p.SeatCategoryIDs[0]))
	})
	rows = append(rows, change)
	// The answer to the page's refetch goes to every subscriber too.
	fresh := fanout(pid, admin, fmt.Sprintf("%d subscribers, a fresh answer fans out", *n), subs, func(s *sub) *atomic.Int64 { return &s.fresh }, func() {
		post(base+avail, body)
	})
	rows = append(rows, fresh)

	cancel()
	for _, s := range subs {
		<-s.done
	}
	for metric(admin, "caddy_s360_live_subscribers") != 0 {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(10 * time.Second)
	rows = append(rows, idle(pid, admin, "after they all left, idle"))
	var heard, eventBytes int64
	for _, s := range subs {
		if s.changed.Load() != 0 {
			heard++
		}
		eventBytes = max(eventBytes, s.freshBytes.Load())
	}

	var out bytes.Buffer
	report(&out, rows, opened, heard, eventBytes, metric(admin, "caddy_s360_live_dropped_total"))
	os.Stdout.Write(out.Bytes())
	if *mdPath != "" {
		must(mdsection.Replace(*mdPath, "live", out.Bytes()))
	}
}

// sub is one subscription: when (unix ns) it heard the change and the
// fresh answer of the product every subscriber follows.
type sub struct {
	changed, fresh atomic.Int64
	freshBytes     atomic.Int64
	done           chan struct{}
}

var client = &http.Client{Transport: &http.Transport{
	MaxIdleConnsPerHost: -1,
	DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
}}

// subscribe opens one stream and reads it on a goroutine until ctx ends.
func subscribe(ctx context.Context, base, products string, x int64) *sub {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/s360/live?products="+products, nil)
	must(err)
	resp, err := client.Do(req)
	must(err)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		fail("subscribing: %d %s", resp.StatusCode, b)
	}
	s := &sub{done: make(chan struct{})}
	prefix := []byte(fmt.Sprintf(`data: {"productId":%d`, x))
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		r := bufio.NewReaderSize(resp.Body, 1024)
		for {
			line, err := r.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				// A long data line (the fresh answer): the event has
				// come; read the rest of it.
				rest, _ := r.ReadString('\n')
				line = append(slices.Clone(line), rest...)
				err = nil
			}
			if err != nil {
				return
			}
			if !bytes.HasPrefix(line, prefix) {
				continue
			}
			now := time.Now().UnixNano()
			if bytes.Contains(line, []byte(`"availability":`)) {
				s.fresh.CompareAndSwap(0, now)
				s.freshBytes.Store(int64(len(line)))
			} else {
				s.changed.CompareAndSwap(0, now)
			}
		}
	}()
	return s
}

// row is one phase's measurement.
type row struct {
	phase                string
	rssMiB, anonMiB      float64
	cpu                  time.Duration // the process's CPU time over the phase
	span                 time.Duration // the phase's wall time
	goroutines, heapMiB  float64
	first, last, fanSpan time.Duration // fan-outs: first and last subscriber after the trigger
	profile              string        // idle phases: the heap profile taken at the end
}

// idle measures the process over -window with nothing happening but the
// polls (every second) and the heartbeats.
func idle(pid int, admin, phase string) row {
	work, _ := filepath.Abs(*workDir)
	t0, c0 := time.Now(), cpuTime(pid)
	time.Sleep(*window)
	r := row{phase: phase, cpu: cpuTime(pid) - c0, span: time.Since(t0)}
	r.rssMiB, r.anonMiB = memory(pid)
	// After two GCs the heap in use is what is live: net/http's pools of
	// connection buffers keep their content through one (sync.Pool's
	// victim cache).
	heapProfile(admin)
	profile := heapProfile(admin)
	r.goroutines, r.heapMiB = metric(admin, "go_goroutines"), metric(admin, "go_memstats_heap_inuse_bytes")/(1<<20)
	name := strings.NewReplacer(" ", "-", ",", "").Replace(phase)
	must(os.WriteFile(filepath.Join(work, "heap-"+name+".pb.gz"), profile, 0o644))
	r.profile = filepath.Join(work, "heap-"+name+".pb.gz")
	fmt.Fprintf(os.Stderr, "%s: %+v\n", phase, r)
	return r
}

// fanout runs trigger and waits until every subscriber has had the event
// (at returns where its subscriber keeps the time), sampling RSS every
// 50 ms; the phase ends once the last one has it.
func fanout(pid int, admin, phase string, subs []*sub, at func(*sub) *atomic.Int64, trigger func()) row {
	c0, t0 := cpuTime(pid), time.Now()
	var peakRSS, peakAnon float64
	trigger()
	deadline := time.Now().Add(time.Minute)
	for {
		rss, anon := memory(pid)
		peakRSS, peakAnon = max(peakRSS, rss), max(peakAnon, anon)
		heard := 0
		for _, s := range subs {
			if at(s).Load() != 0 {
				heard++
			}
		}
		if heard == len(subs) {
			break
		}
		if time.Now().After(deadline) {
			fail("%s: %d of %d subscribers had the event after a minute", phase, heard, len(subs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := row{phase: phase, cpu: cpuTime(pid) - c0, span: time.Since(t0), rssMiB: peakRSS, anonMiB: peakAnon}
	first, last := int64(1<<62), int64(0)
	for _, s := range subs {
		v := at(s).Load()
		first, last = min(first, v), max(last, v)
	}
	r.first, r.last = time.Duration(first-t0.UnixNano()), time.Duration(last-t0.UnixNano())
	r.fanSpan = r.last - r.first
	r.goroutines, r.heapMiB = metric(admin, "go_goroutines"), metric(admin, "go_memstats_heap_inuse_bytes")/(1<<20)
	fmt.Fprintf(os.Stderr, "%s: %+v\n", phase, r)
	// The next poll reports the change again (the polls overlap by a
	// second): let it pass before the next phase.
	time.Sleep(3 * time.Second)
	return r
}

func report(out io.Writer, rows []row, opened time.Duration, heard, eventBytes int64, dropped float64) {
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(out, "## Live availability, %d subscribers — make bench-live\n\n", *n)
	fmt.Fprintf(out, "Generated by `make bench-live` (bench/cmd/live) on %s at commit %s; %d CPUs; load average at the end %s. "+
		"One s360edge process (bench/Caddyfile.live: polls every second, `live_max %d`) in front of the simulator; "+
		"%d subscriptions to `/s360/live`, each one HTTP/1.1 connection from the bench process on loopback, each following "+
		"the product that changes and one other; opening them all took %s (64 at a time). "+
		"Each idle phase is %s of the process doing nothing but its polls and the heartbeats (every 15 s); "+
		"a fan-out phase runs from the stock change (or the refetch) until the last subscriber has the event. "+
		"RSS is /proc's VmRSS (RssAnon: its anonymous part); CPU is the process's utime + stime over the phase, "+
		"in clock ticks of 10 ms; goroutines and heap (go_memstats_heap_inuse_bytes, after two forced GCs in the idle phases) come from Caddy's /metrics at the phase's end.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(commit)), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "),
		*n, *n, opened.Round(100*time.Millisecond), *window)
	fmt.Fprintln(out, "| phase | VmRSS MiB | RssAnon MiB | CPU over the phase | CPU, % of one core | goroutines | Go heap in use MiB | first / last subscriber after the trigger |")
	fmt.Fprintln(out, "| --- | --: | --: | --: | --: | --: | --: | --- |")
	for _, r := range rows {
		spread := ""
		if r.last > 0 {
			spread = fmt.Sprintf("%s / %s", r.first.Round(time.Millisecond), r.last.Round(time.Millisecond))
		}
		fmt.Fprintf(out, "| %s | %.1f | %.1f | %s in %s | %.2f %% | %.0f | %.1f | %s |\n", r.phase, r.rssMiB, r.anonMiB,
			r.cpu, r.span.Round(time.Millisecond), 100*r.cpu.Seconds()/r.span.Seconds(), r.goroutines, r.heapMiB, spread)
	}
	base, full := rows[0], rows[1]
	fmt.Fprintf(out, "\nPer subscriber, idle: %.1f KiB of VmRSS ((%.1f − %.1f) MiB / %d) and %.1f goroutines. "+
		"In the fan-out phases the RSS columns are the peaks (sampled every 50 ms), and the first subscriber's delay "+
		"includes the wait for the feed's next poll (at most a second) for the change. "+
		"%d of %d subscribers heard the change; the fresh answer's event was %d bytes; %v subscribers were dropped as slow readers.\n",
		(full.rssMiB-base.rssMiB)*1024/float64(*n), full.rssMiB, base.rssMiB, *n, (full.goroutines-base.goroutines)/float64(*n),
		heard, *n, eventBytes, dropped)
	if top := pprofTop(base.profile, full.profile); top != "" {
		fmt.Fprintf(out, "\nWhere the heap of the %d subscribers goes (`go tool pprof -top -diff_base` of the heap profiles taken after two GCs at the end of the two idle phases, the 12 largest by flat size):\n\n```\n%s```\n", *n, top)
	}
}

// pprofTop is the head of `go tool pprof -top` of profile against base,
// or "" without a go command.
func pprofTop(base, profile string) string {
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	out, err := exec.Command(goCmd, "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space", "-diff_base", base, profile).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go tool pprof: %v\n", err)
		return ""
	}
	// flat and the function: the percentages are of the base's total.
	var top strings.Builder
	rows := false
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "flat":
			rows = true
			fmt.Fprintf(&top, "%10s  %s\n", "flat", "function")
		case rows && len(f) >= 6:
			fmt.Fprintf(&top, "%10s  %s\n", f[0], strings.Join(f[5:], " "))
		}
	}
	return top.String()
}

// cpuTime is the process's utime + stime.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:])) // after the command's name
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// memory is the process's VmRSS and RssAnon in MiB.
func memory(pid int) (rss, anon float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		}
	}
	return rss, anon
}

// heapProfile is the process's heap profile, taken after a GC (Caddy's
// admin endpoint serves net/http/pprof).
func heapProfile(admin string) []byte {
	resp, err := http.Get(admin + "/debug/pprof/heap?gc=1")
	must(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(err)
	if resp.StatusCode != 200 {
		fail("heap profile: %d %s", resp.StatusCode, b)
	}
	return b
}

// metric is the value of an unlabelled metric of Caddy's /metrics.
func metric(admin, name string) float64 {
	resp, err := http.Get(admin + "/metrics")
	must(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		fail("no %s in /metrics", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func post(url, body string) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	must(err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fail("POST %s: %d %s", url, resp.StatusCode, b)
	}
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

// stops stop the child processes when the command fails.
var stops []func()

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "live: "+format+"\n", args...)
	for _, stop := range stops {
		stop()
	}
	os.Exit(1)
}
