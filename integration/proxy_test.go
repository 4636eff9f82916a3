package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

const api = "/tnseb/backend-apis/"

// caddyfile is the sidecar in front of the simulator, without polls and
// with the s360 subdirectives extra, in front of a static website.
func caddyfile(s *sim, extra string) string {
	return pollsOffCaddyfile(s.URL, extra, staticSite...)
}

func TestProxyAgainstSimulator(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	fx := s.Fixtures(t)
	perf := fx.Products[0].Performances[0]

	t.Run("catalog", func(t *testing.T) {
		status, hdr, body := post(t, e.URL+api+"catalogService/v1_33/getCatalogDetailed", `{}`, "Authorization", "Bearer the-websites-own-token")
		if status != 200 || !strings.Contains(string(body), `"catalogData"`) || !strings.Contains(string(body), fx.Products[0].Name) {
			t.Fatalf("catalog: %d %.300s", status, body)
		}
		if !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge;") {
			t.Errorf("Cache-Status = %q", hdr.Get("Cache-Status"))
		}
	})

	t.Run("availability", func(t *testing.T) {
		req := fmt.Sprintf(`{"pointOfSalesId":%d,"performanceIds":[%d],"seatCategoryIds":[-1]}`, fx.PosID, perf.ID)
		status, _, body := post(t, e.URL+api+"availabilityService/v1_33/getEventAvailability", req)
		var out struct {
			StatusCode string
			Data       struct {
				Items []struct {
					PerformanceID     int64
					SeatCategoryID    int64
					AvailableQuantity int
				} `json:"eventAvailabilities"`
			} `json:"eventAvailabilityData"`
		}
		if err := json.Unmarshal(body, &out); err != nil || status != 200 || out.StatusCode != "success" || len(out.Data.Items) != len(perf.SeatCategoryIDs) || out.Data.Items[0].PerformanceID != perf.ID {
			t.Fatalf("availability: %d %.400s", status, body)
		}
	})

	t.Run("order", func(t *testing.T) {
		order := fmt.Sprintf(`{"pointOfSalesId":%d,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,
			"singleEntryAttributionOperations":[{"performanceId":%d,"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":2}]}`,
			fx.PosID, perf.ID, perf.SeatCategoryIDs[0], perf.AudienceSubCategoryIDs[0])
		url := e.URL + api + "externalOrderFacade/v1_33/createOrUpdateOrder"
		status, _, body := post(t, url+"?lang=en", order, "Accept", "application/json")
		var out struct {
			RedirectURL string
			Data        struct{ OrderID int64 } `json:"orderUpdateData"`
		}
		if err := json.Unmarshal(body, &out); err != nil || status != 200 || out.Data.OrderID == 0 {
			t.Fatalf("order: %d %.400s", status, body)
		}
		if want := fmt.Sprintf("%s/api/1/redirect/cart?lang=en&orderId=%d", s.URL, out.Data.OrderID); out.RedirectURL != want {
			t.Fatalf("redirectUrl %q, want %q", out.RedirectURL, want)
		}

		// A browser navigation gets a 303 that lands on the shop's cart.
		status, hdr, _ := post(t, url, order, "Accept", "text/html,*/*;q=0.8")
		if status != 303 || !strings.HasPrefix(hdr.Get("Location"), s.URL+"/api/1/redirect/cart?orderId=") {
			t.Fatalf("browser order: %d Location=%q", status, hdr.Get("Location"))
		}
		resp, err := http.Get(hdr.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := strings.TrimPrefix(hdr.Get("Location"), s.URL+"/api/1/redirect/cart?orderId=")
		if resp.StatusCode != 200 || !strings.Contains(string(page), `<span id="order-id">`+id+`</span>`) {
			t.Fatalf("cart page for order %s: %d %.300s", id, resp.StatusCode, page)
		}

		// Sold out: a clear 409 with S-360's own fields.
		s.Control(t, "/_sim/stock", fmt.Sprintf(`{"performanceId":%d,"seatCategoryId":%d,"quantity":1}`, perf.ID, perf.SeatCategoryIDs[0]))
		status, _, body = post(t, url, order, "Accept", "application/json")
		if status != 409 || !strings.Contains(string(body), `"error":"not_available"`) || !strings.Contains(string(body), "error.order.availability") {
			t.Fatalf("sold-out order: %d %s", status, body)
		}
	})

	t.Run("rejections never reach S-360", func(t *testing.T) {
		before := s.Counters(t).Total
		cases := []struct {
			method, path, body string
			status             int
		}{
			{"POST", api + "externalOrderHistoryService/v1_34/listTicketsByCriteria", `{}`, 403},
			{"POST", api + "catalogService/v1_33/getCatalogDetailed", `not json`, 400},
			{"POST", api + "catalogService/v1_33/getCatalogDetailed", ``, 400},
			{"POST", api + "catalogService/v1_33/getCatalogDetailed", `{"pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
			{"GET", api + "catalogService/v1_33/getCatalogDetailed", ``, 405},
		}
		for _, c := range cases {
			req, _ := newRequest(c.method, e.URL+c.path, c.body)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Error, Message string }
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != c.status || e.Error == "" || e.Message == "" {
				t.Errorf("%s %s: %d %+v, want %d with a JSON error", c.method, c.path, resp.StatusCode, e, c.status)
			}
		}
		if after := s.Counters(t).Total; after != before {
			t.Errorf("rejected requests made %d upstream calls", after-before)
		}
	})

	t.Run("token refreshed after expiry", func(t *testing.T) {
		auths := s.Counters(t).Calls["auth"]
		s.Control(t, "/_sim/faults", `{"expireTokens":true}`)
		status, _, body := post(t, e.URL+api+"catalogService/v1_33/getPOSConfig", `{}`)
		if status != 200 || !strings.Contains(string(body), `"posId"`) {
			t.Fatalf("after token expiry: %d %s", status, body)
		}
		if got := s.Counters(t).Calls["auth"]; got != auths+1 {
			t.Errorf("auth calls went from %d to %d, want one refresh", auths, got)
		}
	})

	t.Run("website's token call keeps working", func(t *testing.T) {
		auths := s.Counters(t).Calls["auth"]
		// Without credentials, as a site written for the sidecar calls it
		// (wrong credentials get 401: integrity_test.go).
		status, _, body := post(t, e.URL+"/tnai/backend-apis/v1/auth", `{"partner":"site"}`)
		if status != 200 || !strings.Contains(string(body), `"token"`) {
			t.Fatalf("local auth: %d %s", status, body)
		}
		if s.Counters(t).Calls["auth"] != auths {
			t.Error("the website's token call reached S-360")
		}
	})

	t.Run("other paths reach the website", func(t *testing.T) {
		resp, err := noRedirect.Get(e.URL + "/index.html")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "website" {
			t.Fatalf("website path: %d %s", resp.StatusCode, b)
		}
	})

	e.Stop(t)
	for _, p := range []*proc{e.proc, s.proc} {
		if strings.Contains(p.Output(), simSecret) {
			t.Errorf("%s logged the operator secret", p.name)
		}
	}
	if strings.Contains(e.Output(), "eyJ") {
		t.Errorf("s360edge logged something that looks like a JWT")
	}
}

func TestConfigReloadKeepsServing(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	call := func() {
		t.Helper()
		if status, _, body := post(t, e.URL+api+"catalogService/v1_33/getPOSConfig", `{}`); status != 200 {
			t.Fatalf("getPOSConfig: %d %s", status, body)
		}
	}
	call()
	for i, extra := range []string{"rate_limit 100 1m", "partner reloaded\n\t\trate_limit 90 1m", "timeout 45s"} {
		e.Reload(t, caddyfile(s, extra))
		call()
		if bad := lines(e.proc, "Cannot acquire directory lock"); len(bad) > 0 {
			t.Fatalf("reload %d: %s", i, bad[0])
		}
	}
	if errs := lines(e.proc, `"level":"error"`); len(errs) > 0 {
		t.Errorf("errors logged across reloads: %s", strings.Join(errs, "\n"))
	}
}
