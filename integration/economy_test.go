package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func adminPurge(t *testing.T, e *edge, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+e.Admin+"/s360/purge", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("purge %s: %d %s", body, resp.StatusCode, b)
	}
	return string(b)
}

func floorKeys(t *testing.T, e *edge) int {
	t.Helper()
	var st struct {
		Edges []struct {
			Budget struct {
				FloorKeys int `json:"floor_keys"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if len(st.Edges) != 1 {
		t.Fatalf("stats: %+v", st)
	}
	return st.Edges[0].Budget.FloorKeys
}

// TestFloorsCountAttemptsAndSurviveRestart: while S-360 answers
// in_progress, six requests make one call; the floor holds across a
// restart.
func TestFloorsCountAttemptsAndSurviveRestart(t *testing.T) {
	s := startSim(t, "-catalog-floor", "0", "-in-progress", "100")
	e := startEdge(t, caddyfile(s, ""))
	url := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
	for i := range 6 {
		status, hdr, b := post(t, url, `{}`)
		if i > 0 && (status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) || hdr.Get("Retry-After") == "") {
			t.Fatalf("request %d during in_progress: %d %q %s", i+1, status, hdr.Get("Retry-After"), b)
		}
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("6 requests during in_progress made %d calls, want 1", n)
	}
	e.Stop(t)
	e = restartEdge(t, e)
	if n := floorKeys(t, e); n != 1 {
		t.Fatalf("floor_keys after restart: %d, want 1", n)
	}
	if status, _, b := post(t, url, `{}`); status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) {
		t.Fatalf("after restart: %d %s", status, b)
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("a restart let %d calls through, want 1 in all", n)
	}
}

// TestFeedsAnsweredFromCopies: the website's repeated feed calls do not
// reach S-360.
func TestFeedsAnsweredFromCopies(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	fx := s.Fixtures(t)
	for range 60 {
		if status, _, b := post(t, e.URL+api+"catalogService/v1_33/getLastSetupUpdate", `{}`); status != 200 {
			t.Fatalf("getLastSetupUpdate: %d %s", status, b)
		}
	}
	if n := s.Counters(t).Calls["catalogService/getLastSetupUpdate"]; n > 2 {
		t.Fatalf("60 x getLastSetupUpdate made %d upstream calls", n)
	}
	feed := fmt.Sprintf(`{"pointOfSalesId":%d,"productIds":[%d],"referenceDate":"2026-01-01T00:00:00.000Z"}`, fx.PosID, fx.Products[0].ID)
	url := e.URL + api + "availabilityService/v1_33/getUpdatedAvailabilities"
	status, _, first := post(t, url, feed)
	status2, hdr, again := post(t, url, feed)
	if status != 200 || status2 != 200 || !strings.HasSuffix(hdr.Get("Cache-Status"), "detail=feed-copy") || string(again) != string(first) {
		t.Fatalf("feed twice: %d, %d %q", status, status2, hdr.Get("Cache-Status"))
	}
	c := s.Counters(t)
	if n := c.Calls["availabilityService/getUpdatedAvailabilities"]; n != 1 {
		t.Fatalf("two identical feed calls made %d upstream calls", n)
	}
	if c.Statuses["509"] != 0 {
		t.Fatalf("S-360 answered 509 %d times", c.Statuses["509"])
	}
}

// TestSoftPurgeKeepsAnswering: after the README's purge, the next request
// is answered 200 (detail=purged) within the catalog's floor; a hard purge
// deletes.
func TestSoftPurgeKeepsAnswering(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	url := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
	_, _, first := post(t, url, `{}`)
	if got := adminPurge(t, e, `{"class":"catalog"}`); !strings.Contains(got, `"purged":1`) {
		t.Fatalf("soft purge: %s", got)
	}
	status, hdr, b := post(t, url, `{}`)
	if status != 200 || !strings.HasSuffix(hdr.Get("Cache-Status"), "detail=purged") || string(b) != string(first) {
		t.Fatalf("after a soft purge: %d %q", status, hdr.Get("Cache-Status"))
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("%d catalog calls within the floor, want 1", n)
	}
	if got := adminPurge(t, e, `{"class":"catalog","hard":true}`); !strings.Contains(got, `"purged":1`) {
		t.Fatalf("hard purge: %s", got)
	}
	if status, _, b := post(t, url, `{}`); status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) {
		t.Fatalf("after a hard purge within the floor: %d %s", status, b)
	}
}

// TestFairShareKeepsABuyerServedThroughAFlood: with the default budget
// (150 calls a minute, clients sharing it fairly), an abusive client
// flooding distinct availability requests from one address does not keep a
// buyer from another out: every request of the buyer is answered, and the
// buyer sees a stock change at the next updates poll. Clients are told
// apart by X-Forwarded-For (trusted_proxies).
func TestFairShareKeepsABuyerServedThroughAFlood(t *testing.T) {
	s := startWatchSim(t)
	simUp := time.Now()
	cf := siteCaddyfile(s.URL, append([]string{"updates_poll 1s"}, noFloors...), staticSite)
	cf = strings.Replace(cf, "admin %[2]s", "admin %[2]s\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}", 1)
	e := startEdge(t, cf)
	fx := s.Fixtures(t)
	const buyer, abuser = "198.51.100.7", "203.0.113.66"
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
	perf := fx.Products[0].Performances[0]
	bodyA := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, perf.ID)
	as := func(ip, url, body string) (int, http.Header, []byte) {
		return post(t, url, body, "X-Forwarded-For", ip)
	}
	if status, _, b := as(buyer, e.URL+getCatalog, `{}`); status != 200 {
		t.Fatalf("catalog: %d %s", status, b)
	}
	if status, _, b := as(buyer, url, bodyA); status != 200 {
		t.Fatalf("availability: %d %s", status, b)
	}
	// As in TestStockChangeInvalidatesOnlyThatProduct: a poll past the
	// simulator's start, or every product is reported changed once.
	waitFor(t, "an updates poll past the simulator's start", 15*time.Second, func() bool {
		return e.watchStats(t).LastUpdatesPoll.After(simUp.Add(1500 * time.Millisecond))
	})

	// The flood: 4 connections, each a distinct body as fast as answers
	// come, 20 ms apart.
	stop := make(chan struct{})
	var abused, refused atomic.Int64
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				req, _ := newRequest("POST", url, fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"q":"%d-%d"}`, fx.PosID, perf.ID, c, i))
				req.Header.Set("X-Forwarded-For", abuser)
				resp, err := noRedirect.Do(req)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					abused.Add(1)
				case resp.StatusCode == 429 && strings.Contains(string(b), `"client_quota"`):
					refused.Add(1)
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	waitFor(t, "the abuser to be held to its share", 15*time.Second, func() bool { return refused.Load() > 0 })

	// The buyer browses on: a product it had not seen (a miss), then A,
	// five times a second; A's stock changes after 10 visits.
	visits := 0
	visit := func() (sawChange bool) {
		visits++
		other := fx.Products[1+visits%(len(fx.Products)-1)]
		body := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1],"visit":%d}`, fx.PosID, other.Performances[0].ID, visits)
		if status, hdr, b := as(buyer, url, body); status != 200 || !strings.Contains(hdr.Get("Cache-Status"), "fwd=miss") {
			t.Fatalf("the buyer's visit %d: %d %q %s", visits, status, hdr.Get("Cache-Status"), b)
		}
		status, _, b := as(buyer, url, bodyA)
		if status != 200 {
			t.Fatalf("the buyer's visit %d, A: %d %s", visits, status, b)
		}
		return strings.Contains(string(b), `"availableQuantity":3,`)
	}
	for range 10 {
		if visit() {
			t.Fatal("the buyer sees a stock change before it happened")
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":3}`, perf.ID, perf.SeatCategoryIDs[0]))
	waitFor(t, "the buyer to see A's new stock", 15*time.Second, visit)
	var st struct {
		Edges []struct {
			Budget struct {
				QuotaRefusals int `json:"quota_refusals"`
				Clients       int `json:"clients"`
				FairShare     int `json:"fair_share"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if b := st.Edges[0].Budget; b.Clients != 2 || b.FairShare != 70 || b.QuotaRefusals == 0 {
		t.Fatalf("budget %+v: want two active clients, 70 each", b)
	}
	if n := abused.Load(); n == 0 || n > 70 {
		t.Fatalf("the abuser got %d answers, want some and at most its share, 70", n)
	}
	t.Logf("abuser: %d answered, %d refused for its share; the buyer made %d visits", abused.Load(), refused.Load(), visits)
	no509(t, s)
}
