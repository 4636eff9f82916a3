// Command sharedhit measures the shared tier of cluster mode:
// node A fetches N distinct availability keys from the simulator; node B,
// a fresh node of the same cluster, then asks for each key twice. B's
// first answer comes from Redis (a shared-tier hit), its second from its
// own Badger (a local hit). It checks that B made no S-360 call and prints
// a Markdown table of both latencies, one request at a time.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/s360edge/s360edge/bench/internal/proc"
)

const avail = "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability"

func main() {
	a := flag.String("a", "", "node A base URL (fetches the keys)")
	b := flag.String("b", "", "node B base URL (reads them from the shared tier)")
	sim := flag.String("sim", "", "simulator base URL")
	n := flag.Int("n", 200, "distinct keys")
	perfs := flag.Int("performances", 26, "performances per request (26: the 2 KB answer of make bench)")
	flag.Parse()

	var fx struct {
		PosID    int64 `json:"posId"`
		Products []struct {
			Performances []struct {
				ID int64 `json:"id"`
			} `json:"performances"`
		} `json:"products"`
	}
	must(proc.GetJSON(*sim+"/_sim/fixtures", &fx))
	var ids []string
	for _, p := range fx.Products {
		if len(ids) < *perfs && len(p.Performances) > 0 {
			ids = append(ids, fmt.Sprint(p.Performances[0].ID))
		}
	}
	body := func(i int) string {
		return fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%s],"eventIds":[%d]}`, fx.PosID, strings.Join(ids, ","), 7_000_000+i)
	}
	client := &http.Client{Timeout: time.Minute}
	post := func(base, body string) (time.Duration, string, int) {
		start := time.Now()
		resp, err := client.Post(base+avail, "application/json", strings.NewReader(body))
		must(err)
		size, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != 200 {
			fail("%s: status %d, Cache-Status %q", base, resp.StatusCode, resp.Header.Get("Cache-Status"))
		}
		return d, resp.Header.Get("Cache-Status"), int(size)
	}

	for i := range *n {
		if _, cs, _ := post(*a, body(i)); !strings.Contains(cs, "fwd=miss") {
			fail("node A, key %d: Cache-Status %q, want a miss", i, cs)
		}
	}
	before := simTotal(*sim)
	var shared, local []time.Duration
	seen := map[string]int{}
	size := 0
	for i := range *n {
		d, cs, sz := post(*b, body(i))
		shared = append(shared, d)
		seen[cs]++
		size = sz
		d, cs, _ = post(*b, body(i))
		local = append(local, d)
		if !strings.HasPrefix(cs, "s360edge; hit") {
			fail("node B, key %d again: Cache-Status %q, want a local hit", i, cs)
		}
	}
	calls := simTotal(*sim) - before
	if calls != 0 {
		fail("node B made %d S-360 calls for keys node A had fetched", calls)
	}
	fmt.Printf("%d keys of %d bytes each; node B made %d S-360 calls. One request at a time, curl-like client in Go, keep-alive.\n\n", *n, size, calls)
	fmt.Printf("| node B's request | n | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- |\n")
	row("first: shared-tier hit (Redis GET, zstd decode, checksum, stored locally)", shared)
	row("second: local hit (Badger)", local)
	var kinds []string
	for cs, k := range seen {
		kinds = append(kinds, fmt.Sprintf("`%s` × %d", cs, k))
	}
	slices.Sort(kinds)
	fmt.Printf("\nCache-Status of node B's first answers: %s.\n", strings.Join(kinds, ", "))
}

func row(name string, d []time.Duration) {
	slices.Sort(d)
	p := func(q float64) string {
		return fmt.Sprintf("%.2f", float64(d[min(len(d)-1, int(q*float64(len(d))))])/1e6)
	}
	fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", name, len(d), p(0.5), p(0.9), p(0.99), p(1))
}

func simTotal(sim string) int {
	var c struct {
		Total int `json:"total"`
	}
	must(proc.GetJSON(sim+"/_sim/counters", &c))
	return c.Total
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sharedhit: "+format+"\n", args...)
	os.Exit(1)
}
