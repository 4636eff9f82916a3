// Command misses fires N concurrent identical requests at a cold cache key
// of s360edge and reports how many upstream calls the simulator counted
// and how long the clients waited. Output is Markdown.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type counters struct {
	Calls map[string]int `json:"calls"`
	Total int            `json:"total"`
}

func getCounters(sim string) counters {
	var c counters
	resp, err := http.Get(sim + "/_sim/counters")
	if err == nil {
		defer resp.Body.Close()
		err = json.NewDecoder(resp.Body).Decode(&c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading simulator counters:", err)
		os.Exit(1)
	}
	return c
}

func main() {
	edge := flag.String("edge", "", "s360edge base URL")
	sim := flag.String("sim", "", "simulator base URL")
	method := flag.String("method", "availabilityService/v1_33/getEventAvailability", "service/version/method")
	body := flag.String("body", "{}", "request body, the same for every client")
	n := flag.Int("n", 1000, "concurrent clients")
	flag.Parse()

	url := *edge + "/tnseb/backend-apis/" + *method
	name := strings.Split(*method, "/")[0] + "/" + strings.Split(*method, "/")[2]
	tr := &http.Transport{MaxIdleConnsPerHost: *n, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: time.Minute}

	before := getCounters(*sim)
	type result struct {
		lat    time.Duration
		status int
		cs     string
		err    error
	}
	res := make([]result, *n)
	var ready, wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range *n {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", url, strings.NewReader(*body))
			req.Header.Set("Content-Type", "application/json")
			ready.Done()
			<-startGate
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				res[i] = result{lat: time.Since(t0), err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res[i] = result{lat: time.Since(t0), status: resp.StatusCode, cs: resp.Header.Get("Cache-Status")}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(startGate)
	wg.Wait()
	wall := time.Since(t0)
	time.Sleep(200 * time.Millisecond) // let the simulator's counters settle
	after := getCounters(*sim)

	lats := make([]time.Duration, 0, *n)
	statuses := map[string]int{}
	for _, r := range res {
		lats = append(lats, r.lat)
		k := fmt.Sprint(r.status)
		switch {
		case r.err != nil:
			k = "error: " + r.err.Error()
		case strings.Contains(r.cs, "detail=coalesced"):
			k += " coalesced"
		case strings.Contains(r.cs, "fwd=miss"):
			k += " miss (leader)"
		case strings.Contains(r.cs, "hit"):
			k += " hit"
		default:
			k += " " + r.cs
		}
		statuses[k]++
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration { return lats[min(len(lats)-1, int(p*float64(len(lats))))] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	keys := make([]string, 0, len(statuses))
	for k := range statuses {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s × %d; ", k, statuses[k])
	}

	fmt.Printf("| concurrent identical requests | %d |\n", *n)
	fmt.Printf("| upstream calls of %s (simulator counters) | **%d** |\n", name, after.Calls[name]-before.Calls[name])
	fmt.Printf("| all simulator API calls during the run (auth included) | %d |\n", after.Total-before.Total)
	fmt.Printf("| answers (status, Cache-Status) | %s |\n", strings.TrimSuffix(sb.String(), "; "))
	fmt.Printf("| client latency min / p50 / p99 / max | %s / %s / %s / **%s** |\n", ms(lats[0]), ms(pct(0.50)), ms(pct(0.99)), ms(lats[len(lats)-1]))
	fmt.Printf("| wall time, first request sent to last answer read | %s |\n", ms(wall))
}
