package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// syncCalls is one sync of the public TypeScript S-360 client's production
// flow (betagouv/assistant-declaration, getEventsSeries), as a website's
// backend makes it through the sidecar, approximated with the simulator's
// methods: a token (answered by the sidecar), getPOSConfig, listVatCodes,
// getCatalogDetailed {scope: EXTENDED} and getUpdatedAvailabilities of
// every product, then per product its order history
// (listTicketsByCriteria, which needs allow), and the availability of the
// first seven products: 23 upstream calls on a cold cache, as measured for
// 12 products.
func syncCalls(fx fixtures) [][2]string {
	ids := make([]string, len(fx.Products))
	for i, p := range fx.Products {
		ids[i] = fmt.Sprint(p.ID)
	}
	calls := [][2]string{
		{"/tnai/backend-apis/v1/auth", fmt.Sprintf(`{"operator":%q,"partner":"assistant-declaration","secret":%q}`, simOperator, simSecret)},
		{api + "catalogService/v1_33/getPOSConfig", `{}`},
		{api + "setupService/v1_33/listVatCodes", `{}`},
		{api + "catalogService/v1_33/getCatalogDetailed", `{"scope":"EXTENDED"}`},
		{api + "availabilityService/v1_33/getUpdatedAvailabilities", fmt.Sprintf(
			`{"pointOfSalesId":%d,"productIds":[%s],"referenceDate":"2026-01-01T00:00:00.000Z"}`, fx.PosID, strings.Join(ids, ","))},
	}
	avail := 0
	for _, p := range fx.Products {
		calls = append(calls, [2]string{api + "externalOrderHistoryService/v1_33/listTicketsByCriteria", fmt.Sprintf(
			`{"ticketFilterCriteria":{"pointOfSalesId":%d,"productId":%d,"startDate":"2010-02-01T00:00:00.000Z","endDate":"2027-12-31T00:00:00.000Z"}}`,
			fx.PosID, p.ID)})
		if avail < 7 && len(p.Performances) > 0 {
			avail++
			calls = append(calls, [2]string{api + "availabilityService/v1_33/getEventAvailability", fmt.Sprintf(
				`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, p.Performances[0].ID)})
		}
	}
	return calls
}

// TestBackendSyncTwiceAMinute: a site whose backend is the only caller is
// one client address. With the default config (and allow for the order
// history), two syncs within a minute get no 429: the lone client may use
// the whole budget but the reserves. (With the former default, a static
// fifth of the budget per client, the second sync's 8th history read got
// 429 client_quota.)
func TestBackendSyncTwiceAMinute(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, siteCaddyfile(s.URL, []string{"allow externalOrderHistoryService/listTicketsByCriteria"}, staticSite))
	fx := s.Fixtures(t)
	if len(fx.Products) != 12 {
		t.Fatalf("%d products in the fixtures, want the 12 measured", len(fx.Products))
	}
	sync := func(n int) (upstream int) {
		for _, c := range syncCalls(fx) {
			status, hdr, body := post(t, e.URL+c[0], c[1])
			if status != 200 {
				t.Fatalf("sync %d, %s: %d %s", n, c[0], status, body)
			}
			var env struct{ StatusCode string }
			if !strings.HasSuffix(c[0], "/v1/auth") && (json.Unmarshal(body, &env) != nil || env.StatusCode != "success") {
				t.Fatalf("sync %d, %s: %.300s", n, c[0], body)
			}
			if strings.Contains(hdr.Get("Cache-Status"), "fwd=") {
				upstream++
			}
		}
		return upstream
	}
	start := time.Now()
	first := sync(1)
	second := sync(2)
	if took := time.Since(start); took >= time.Minute {
		t.Fatalf("the two syncs took %v, not within a minute", took)
	}
	// The catalog reads and the availabilities are cached (the feed is
	// answered from its copy): the second sync reads the 12 histories.
	if first != 23 || second != 12 {
		t.Fatalf("upstream calls: %d on the first sync, %d on the second; want 23, 12", first, second)
	}
	var st struct {
		Edges []struct {
			Budget struct {
				QuotaRefusals int `json:"quota_refusals"`
				Clients       int `json:"clients"`
				FairShare     int `json:"fair_share"`
				Calls         int `json:"calls"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if b := st.Edges[0].Budget; b.QuotaRefusals != 0 || b.Clients != 1 || b.FairShare != 140 {
		t.Fatalf("budget %+v: want no refusal, one client with the whole 140", b)
	}
	t.Logf("upstream calls: %d, then %d; %d in the window with the watchers' polls", first, second, st.Edges[0].Budget.Calls)
	no509(t, s)
}
