// Command replay is the evidence that a site behind s360edge stays within
// S-360's limits where plain designs do not: a compressed day of a website's
// traffic replayed against s360sim through three designs, one after the
// other, each with a fresh simulator and the same seeded schedule:
//
//	s360edge  the real sidecar (bench/Caddyfile.replay) in front of the simulator
//	nocache   the website's backend calls the simulator itself, holding one
//	          operator token as a plain client does (fetched from the token
//	          endpoint, fetched again on 401)
//	nginx     the same backend through Debian's nginx proxy_cache, 60 s TTL on
//	          POST bodies (bench/nginx.replay.conf)
//
// Time is scaled: one "scaled minute" lasts -minute of wall time, and every
// interval of the set-up (the simulator's rate window and floors, the
// sidecar's budget window, polls, floors and freshness, nginx's TTL) is
// divided by the same factor. The day is -day scaled minutes long. The report
// replaces the "replay" section of BENCHMARKS.md and the figure is written to
// bench/figures/replay.svg.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/s360edge/s360edge/bench/internal/mdsection"
	"github.com/s360edge/s360edge/bench/internal/proc"
)

var (
	binDir     = flag.String("bin", "bench/bin", "directory holding s360sim and s360edge")
	caddyfile  = flag.String("caddyfile", "bench/Caddyfile.replay", "the sidecar's Caddyfile (design s360edge)")
	nginxBin   = flag.String("nginx", "nginx", "nginx binary (design nginx)")
	nginxConf  = flag.String("nginx-conf", "bench/nginx.replay.conf", "nginx config template (design nginx)")
	mdPath     = flag.String("md", "BENCHMARKS.md", "Markdown file whose replay section is replaced; empty: print only")
	svgPath    = flag.String("svg", "bench/figures/replay.svg", "figure of upstream calls per scaled minute; empty: none")
	designList = flag.String("designs", "s360edge,nocache,nginx", "designs to run, in order")
	minute     = flag.Duration("minute", 3*time.Second, "wall time of one scaled minute (whole seconds, for nginx's TTL)")
	dayLen     = flag.Int("day", 40, "scaled minutes in the day")
	products   = flag.Int("products", 24, "simulator products")
	zipfS      = flag.Float64("zipf", 1.1, "Zipf exponent of browsing over products (rank 1 = product 0)")
	browse     = flag.Int("browse", 120, "page views a scaled minute at the day's peak (catalog + availability each)")
	spikeN     = flag.Int("spike", 2000, "buyers of the on-sale spike")
	spikeAt    = flag.Float64("spike-at", 16, "scaled minute the sale opens")
	spikeLen   = flag.Float64("spike-len", 2, "scaled minutes over which the spike's buyers arrive")
	spikeShare = flag.Float64("spike-order", 0.03, "share of the spike's buyers who place an order")
	ordersMin  = flag.Float64("orders", 2, "orders a scaled minute throughout the day")
	setups     = flag.String("setups", "11,23,35", "scaled minutes of setup changes (/_sim/setup)")
	stockEvery = flag.Int("stock-every", 3, "scaled minutes between stock changes (/_sim/stock)")
	abuseRate  = flag.Int("abuse", 200, "junk requests a scaled minute from the abusive client")
	abuseFrom  = flag.Float64("abuse-from", 5, "scaled minute the abusive client starts")
	abuseTo    = flag.Float64("abuse-to", 30, "scaled minute it stops")
	simLimit   = flag.Int("sim-limit", 180, "the simulator's calls a scaled minute")
	edgeLimit  = flag.Int("edge-limit", 150, "the sidecar's rate_limit a scaled minute, for the report; a rate_limit line of the Caddyfile wins")
	latency    = flag.Duration("latency", 20*time.Millisecond, "simulator latency of every call")
	catLatency = flag.Duration("catalog-latency", 500*time.Millisecond, "simulator latency added to getCatalogDetailed")
	conc       = flag.Int("conc", 256, "requests in flight at most (beyond it a request waits; latency counts from sending)")
	seed       = flag.Uint64("seed", 1, "schedule seed")
	note       = flag.String("note", "", "a sentence printed under the section's title (e.g. which code was measured)")
	keep       = flag.Bool("keep", false, "keep each design's directory (logs) and print its path")
)

const (
	api      = "/tnseb/backend-apis/"
	operator = "MOSA_WEB"
	secret   = "sim-secret"
)

func main() {
	flag.Parse()
	if *minute < time.Second || *minute%time.Second != 0 {
		fatal(fmt.Errorf("-minute must be whole seconds (nginx's TTL), got %s", *minute))
	}
	if src, err := os.ReadFile(*caddyfile); err == nil {
		*edgeLimit, quota = limits(src, *edgeLimit)
	}
	var results []*result
	for _, name := range strings.Split(*designList, ",") {
		fmt.Fprintf(os.Stderr, "== design %s: a day of %d scaled minutes, %s each\n", name, *dayLen, *minute)
		res, err := runDesign(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "replay: %s: %v\n", name, err)
			res = &result{design: name, err: err}
		}
		results = append(results, res)
	}
	var report bytes.Buffer
	writeReport(&report, results)
	os.Stdout.Write(report.Bytes())
	if *svgPath != "" {
		if err := os.WriteFile(*svgPath, figure(results), 0o644); err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "== wrote %s\n", *svgPath)
	}
	if *mdPath != "" {
		if err := mdsection.Replace(*mdPath, "replay", report.Bytes()); err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "== wrote the replay section of %s\n", *mdPath)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "replay:", err)
	os.Exit(1)
}

// quota is the client quota the report checks the abusive client against:
// the Caddyfile's client_quota; 0 with client_quota off, -1 without one
// (the default: clients share the budget fairly, no fixed quota).
var quota int

// limits reads the calls of rate_limit and client_quota from a Caddyfile
// (scaled windows are the tool's own, so only the counts matter here).
func limits(src []byte, rate int) (int, int) {
	q := -1
	for _, l := range strings.Split(string(src), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		switch {
		case f[0] == "rate_limit" && err == nil:
			rate = n
		case f[0] == "client_quota" && err == nil:
			q = n
		case f[0] == "client_quota" && f[1] == "off":
			q = 0
		}
	}
	return rate, q
}

// scaled turns a duration of the real day into wall time.
func scaled(real time.Duration) time.Duration {
	return time.Duration(float64(real) * float64(*minute) / float64(time.Minute)).Round(time.Millisecond)
}

// ------------------------------------------------------------ processes

var unknownSub = regexp.MustCompile(`unknown subdirective \\?"([A-Za-z_]+)\\?"`)

// startEdge runs s360edge with the Caddyfile. When the binary refuses a
// subdirective it does not know (a Caddyfile written for a newer sidecar),
// the line is dropped from a copy and the start retried; the dropped names
// are returned for the report.
func startEdge(work string, env []string, edgeURL string) (*proc.Proc, []string, error) {
	src, err := os.ReadFile(*caddyfile)
	if err != nil {
		return nil, nil, err
	}
	var dropped []string
	for attempt := 0; attempt < 10; attempt++ {
		path := filepath.Join(work, "Caddyfile")
		if err := os.WriteFile(path, src, 0o644); err != nil {
			return nil, nil, err
		}
		logPath := filepath.Join(work, "edge.log")
		p, err := proc.Start(logPath, env, filepath.Join(*binDir, "s360edge"), "run", "--config", path, "--adapter", "caddyfile")
		if err != nil {
			return nil, nil, err
		}
		if err = proc.WaitUp(edgeURL+"/", p, time.Minute); err == nil {
			return p, dropped, nil
		}
		p.Stop()
		log, _ := os.ReadFile(logPath)
		m := unknownSub.FindSubmatch(log)
		if m == nil {
			return nil, dropped, fmt.Errorf("%v; end of edge.log: %s", err, tail(log, 400))
		}
		name := string(m[1])
		dropped = append(dropped, name)
		src = dropLines(src, name)
		fmt.Fprintf(os.Stderr, "   this s360edge does not know %q: dropped from the Caddyfile, retrying\n", name)
	}
	return nil, dropped, fmt.Errorf("too many unknown subdirectives")
}

// dropLines removes the lines whose first word is name, with a block that
// opens on such a line.
func dropLines(src []byte, name string) []byte {
	var out []string
	depth := 0
	for _, l := range strings.Split(string(src), "\n") {
		f := strings.Fields(l)
		if depth > 0 {
			depth += strings.Count(l, "{") - strings.Count(l, "}")
			continue
		}
		if len(f) > 0 && f[0] == name {
			depth = strings.Count(l, "{") - strings.Count(l, "}")
			continue
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// startNginx writes the config from the template into work and runs nginx
// in the foreground (daemon off), so that it is stopped by its PID.
func startNginx(work, port, simAddr string) (*proc.Proc, error) {
	tmpl, err := os.ReadFile(*nginxConf)
	if err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 { // workers would run as nobody and could not use work/
		user = "user root root;"
	}
	conf := strings.NewReplacer("@DIR@", work, "@PORT@", port, "@SIM@", simAddr,
		"@TTL@", fmt.Sprint(int(scaled(time.Minute)/time.Second)), "@USER@", user).Replace(string(tmpl))
	if err := os.WriteFile(filepath.Join(work, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(*nginxBin)
	if err != nil {
		if _, e := os.Stat("/usr/sbin/nginx"); e != nil {
			return nil, fmt.Errorf("nginx not found (%v); install Debian's nginx package", err)
		}
		bin = "/usr/sbin/nginx"
	}
	return proc.Start(filepath.Join(work, "nginx.out"), nil, bin, "-p", work, "-c", filepath.Join(work, "nginx.conf"), "-e", filepath.Join(work, "error.log"))
}

func drain(r io.Reader) { io.Copy(io.Discard, r) }
