package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCacheHitsCoalescingAndRestart(t *testing.T) {
	s := startSim(t, "-availability-floor", "0", "-catalog-floor", "0")
	e := startEdge(t, caddyfile(s, ""))
	fx := s.Fixtures(t)
	catalog := e.URL + api + "catalogService/v1_33/getCatalogDetailed"

	status, hdr, first := post(t, catalog, `{"scope":"STANDARD","requestId":1}`)
	if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("first call: %d %q", status, hdr.Get("Cache-Status"))
	}
	status, hdr, again := post(t, catalog, "{ \"requestId\": 2,\n \"scope\" : \"STANDARD\" }")
	if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit; ttl=") || hdr.Get("Age") == "" || string(again) != string(first) {
		t.Fatalf("same body, other key order: %d %q Age=%q", status, hdr.Get("Cache-Status"), hdr.Get("Age"))
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("%d getCatalogDetailed calls, want 1", n)
	}

	t.Run("1000 concurrent identical misses make one call", func(t *testing.T) {
		s.Control(t, "/_sim/faults", `{"latency":"1s"}`)
		defer s.Control(t, "/_sim/faults", `{"latency":"0s"}`)
		body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d]}`, fx.PosID, fx.Products[1].Performances[0].ID)
		url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
		before := s.Counters(t).Calls["availabilityService/getEventAvailability"]
		const n = 1000
		var wg sync.WaitGroup
		statuses := make(chan string, n)
		client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: n}}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					statuses <- err.Error()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses <- fmt.Sprint(resp.StatusCode, " ", resp.Header.Get("Cache-Status"))
			}()
		}
		wg.Wait()
		close(statuses)
		kinds := map[string]int{}
		for st := range statuses {
			kinds[strings.SplitN(st, "; ttl=", 2)[0]]++
		}
		if got := s.Counters(t).Calls["availabilityService/getEventAvailability"] - before; got != 1 {
			t.Errorf("%d upstream calls for %d identical requests; answers %v", got, n, kinds)
		}
		for k := range kinds {
			if !strings.HasPrefix(k, "200 s360edge; ") {
				t.Errorf("unexpected answers: %v", kinds)
			}
		}
		if kinds["200 s360edge; fwd=miss; stored; detail=coalesced"] == 0 {
			t.Errorf("no coalesced answers: %v", kinds)
		}
	})

	// Restart: the first request is a hit from disk, with no upstream call
	// (not even for a token).
	e.Stop(t)
	e = restartEdge(t, e)
	before := s.Counters(t).Total
	status, hdr, body := post(t, e.URL+api+"catalogService/v1_33/getCatalogDetailed", `{"scope":"STANDARD"}`)
	if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit;") || string(body) != string(first) {
		t.Fatalf("after restart: %d %q", status, hdr.Get("Cache-Status"))
	}
	if after := s.Counters(t).Total; after != before {
		t.Fatalf("first hit after restart made %d upstream calls", after-before)
	}

	t.Run("admin purge, stats and metrics", func(t *testing.T) {
		resp, err := http.Post("http://"+e.Admin+"/s360/purge", "application/json", strings.NewReader(`{"class":"catalog"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"purged":1`) {
			t.Fatalf("purge: %d %s", resp.StatusCode, b)
		}
		_, hdr, _ := post(t, e.URL+api+"catalogService/v1_33/getCatalogDetailed", `{"scope":"STANDARD"}`)
		if !strings.HasSuffix(hdr.Get("Cache-Status"), "; detail=purged") { // soft: answered, refreshed later
			t.Fatalf("after purge: %q", hdr.Get("Cache-Status"))
		}
		for _, bad := range []string{`{"class":"orders"}`, `{"nope":1}`, `{"class":"catalog","tag":"x"}`, `[`} {
			resp, err := http.Post("http://"+e.Admin+"/s360/purge", "application/json", strings.NewReader(bad))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("purge %s: %d, want 400", bad, resp.StatusCode)
			}
		}
		var stats struct {
			Edges []struct {
				Generation uint64
				Requests   []struct {
					Class, Outcome string
					Value          int
				}
				Store struct{ Entries int }
			}
		}
		getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
		if len(stats.Edges) != 1 || stats.Edges[0].Store.Entries < 2 || len(stats.Edges[0].Requests) == 0 {
			t.Fatalf("stats: %+v", stats)
		}
		resp, err = http.Get("http://" + e.Admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`caddy_s360_requests_total{class="catalog",outcome="hit"}`, `caddy_s360_requests_total{class="catalog",outcome="stale"}`, "caddy_s360_budget_remaining", "caddy_s360_cache_entries"} {
			if !strings.Contains(string(m), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestStaleIfErrorWithSimulatorDown(t *testing.T) {
	s := startSim(t, "-availability-floor", "0")
	e := startEdge(t, caddyfile(s, "max_age availabilityService/* 1s\n\t\tstale_while_revalidate 1ms\n\t\tmin_interval availabilityService/* 0"))
	fx := s.Fixtures(t)
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
	body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d]}`, fx.PosID, fx.Products[0].Performances[0].ID)
	_, _, fresh := post(t, url, body)
	s.Control(t, "/_sim/faults", `{"down":true}`)
	waitFor(t, "a stale-if-error answer", 10*time.Second, func() bool {
		status, hdr, b := post(t, url, body)
		return status == 200 && strings.HasSuffix(hdr.Get("Cache-Status"), "detail=stale-if-error") && string(b) == string(fresh)
	})
	// Nothing cached for this one: a clear 502.
	status, _, b := post(t, url, fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d]}`, fx.PosID, fx.Products[1].Performances[0].ID))
	if status != 502 || !strings.Contains(string(b), `"error":"upstream_unreachable"`) {
		t.Fatalf("uncached call with S-360 down: %d %s", status, b)
	}
}
