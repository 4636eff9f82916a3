package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

type quotaStats struct {
	Quota           int64         `json:"quota"`
	Month           string        `json:"month"`
	Used            int64         `json:"used"`
	Holding         bool          `json:"holding"`
	Refusals        uint64        `json:"refusals"`
	SetupInterval   time.Duration `json:"setup_interval"`
	UpdatesInterval time.Duration `json:"updates_interval"`
}

func (e *edge) quotaStats(t *testing.T) *quotaStats {
	t.Helper()
	var out struct {
		Edges []struct {
			Quota *quotaStats `json:"quota"`
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &out)
	if len(out.Edges) != 1 {
		t.Fatalf("%d edges in the stats", len(out.Edges))
	}
	return out.Edges[0].Quota
}

// A sidecar polling every second is given a small monthly quota (a
// reload): its watchers stretch to an hour, a buyer's miss of a stored key
// gets the stored answer stale and one of a key never stored gets 429
// quota, while an order still reaches S-360.
func TestQuotaStretchesWatchersAndServesStale(t *testing.T) {
	s := startSim(t, "-catalog-floor", "0", "-availability-floor", "0")
	lines := append([]string{"setup_poll 1s", "updates_poll 1s", "max_age availabilityService/* 1s", "stale_while_revalidate 1ms"}, noFloors...)
	e := startEdge(t, siteCaddyfile(s.URL, lines, staticSite))
	calls := func(method string) int { return s.Counters(t).Calls[method] }
	const setup, avail = "catalogService/getLastSetupUpdate", "availabilityService/getEventAvailability"
	waitFor(t, "three setup polls, a second apart", 15*time.Second, func() bool { return calls(setup) >= 3 })
	fx := s.Fixtures(t)
	url := e.URL + api + "availabilityService/v1_33/getEventAvailability"
	body := func(i int) string {
		return fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d]}`, fx.PosID, fx.Products[i].Performances[0].ID)
	}
	if status, hdr, _ := post(t, url, body(0)); status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("the first miss: %d %q", status, hdr.Get("Cache-Status"))
	}
	if e.quotaStats(t) != nil {
		t.Fatal("a quota in the stats without one configured")
	}

	// 2 calls a month: one is kept for orders, and the plan holds buyers
	// from the first call counted on, whatever the day of the month.
	e.Reload(t, siteCaddyfile(s.URL, append(lines, "quota 2 month"), staticSite))
	waitFor(t, "the watchers stretched to an hour", 10*time.Second, func() bool {
		q := e.quotaStats(t)
		return q != nil && q.SetupInterval == time.Hour && q.UpdatesInterval == time.Hour
	})
	start, polls, availCalls := time.Now(), calls(setup), calls(avail)

	// Hits until the stored answer's second of freshness is over; then the
	// new config's client gets its token (counted, never refused), the
	// miss is refused by the plan, and the stored answer served.
	var (
		status int
		hdr    http.Header
		b      []byte
	)
	waitFor(t, "the stored answer to go stale", 5*time.Second, func() bool {
		status, hdr, b = post(t, url, body(0))
		cs := hdr.Get("Cache-Status") // a stale-while-revalidate hit of its 1 ms: once more
		return strings.Contains(cs, "detail=") && !strings.Contains(cs, "detail=stale-while-revalidate")
	})
	if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, "s360edge; hit; ttl=") || !strings.HasSuffix(cs, "; detail=stale-throttled") || !strings.Contains(string(b), `"statusCode"`) {
		t.Fatalf("a stored key's miss under the quota: %d %q %s", status, cs, b)
	}
	status, hdr, b = post(t, url, body(1))
	var apiErr struct{ Error string }
	json.Unmarshal(b, &apiErr)
	if retry, _ := strconv.Atoi(hdr.Get("Retry-After")); status != 429 || apiErr.Error != "quota" || retry < 1 {
		t.Fatalf("a key never stored, under the quota: %d %s, Retry-After %q", status, b, hdr.Get("Retry-After"))
	}
	orders := calls("externalOrderFacade/createOrUpdateOrder")
	if status, _, b := post(t, e.URL+api+"externalOrderFacade/v1_33/createOrUpdateOrder", stormOrder(fx, 0), "Accept", "application/json"); status != 200 || !strings.Contains(string(b), "redirectUrl") {
		t.Fatalf("an order under the quota: %d %s", status, b)
	}
	if n := calls("externalOrderFacade/createOrUpdateOrder"); n != orders+1 {
		t.Fatalf("%d orders reached S-360, want %d", n, orders+1)
	}

	// Three seconds would have been three polls at setup_poll 1s; at most
	// one already under way when the quota came may land.
	for time.Since(start) < 3*time.Second {
		if n := calls(setup); n > polls+1 {
			t.Fatalf("%d setup polls since the quota came, want none", n-polls)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := calls(avail); n != availCalls {
		t.Fatalf("%d buyers' availability calls reached S-360 under the quota", n-availCalls)
	}
	q := e.quotaStats(t)
	if q.Quota != 2 || q.Month != time.Now().UTC().Format("2006-01") || !q.Holding || q.Used < 2 || q.Refusals < 2 {
		t.Fatalf("quota stats %+v", q)
	}
	no509(t, s)
}
