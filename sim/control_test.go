package sim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

type counters struct {
	Calls       map[string]int `json:"calls"`
	Statuses    map[string]int `json:"statuses"`
	RateLimited int            `json:"rateLimited"`
	// FloorRefused counts per-key floor refusals by "service/method".
	FloorRefused map[string]int `json:"floorRefused"`
	// RateLimitedBy counts rate-status answers by the limit hit.
	RateLimitedBy       map[string]int      `json:"rateLimitedBy"`
	Total               int                 `json:"total"`
	PerMinute           []bucket            `json:"perMinute"`
	PerMinuteByEndpoint map[string][]bucket `json:"perMinuteByEndpoint"`
}

func (h *harness) counters() counters {
	h.t.Helper()
	var c counters
	if r := h.do("GET", "/_sim/counters", ""); r.status != 200 || json.Unmarshal(r.body, &c) != nil {
		h.t.Fatalf("counters: %d %s", r.status, r.body)
	}
	return c
}

func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, func(c *Config) { c.RateLimit = 5 })
		h.login() // call 1 of 5: auth counts
		for i := range 4 {
			h.ok("catalogService/getPOSConfig", map[string]int{"requestId": i})
		}
		r := h.call("availabilityService/getProductAvailability", "{}")
		if body := r.json(t); r.status != 509 || body["error"] != "rate_limited" || body["scope"] != "institution" ||
			body["limit"] != 5.0 || body["window"] != "1m0s" || r.header.Get("Retry-After") != "" {
			t.Fatalf("6th call: %d %v %s", r.status, r.header, r.body)
		}
		c := h.counters()
		if c.Total != 6 || c.RateLimited != 1 || c.Statuses["509"] != 1 || c.Statuses["200"] != 5 || c.Calls["auth"] != 1 ||
			c.Calls["catalogService/getPOSConfig"] != 4 || c.Calls["availabilityService/getProductAvailability"] != 1 ||
			len(c.PerMinute) != 1 || c.PerMinute[0].Calls != 5 || c.PerMinute[0].Start != "2025-11-10T10:00:00.000+01:00" {
			t.Errorf("counters %+v", c)
		}

		// Switch to 429, then let the window pass.
		h.control("POST", "/_sim/faults", `{"rateStatus": 429}`)
		if r := h.call("catalogService/getPOSConfig", "{}"); r.status != 429 {
			t.Errorf("after switch: %d", r.status)
		}
		h.control("POST", "/_sim/clock", `{"advance": "1m"}`)
		h.ok("catalogService/getPOSConfig", "{}")
		if c := h.counters(); len(c.PerMinute) != 2 || c.PerMinute[1].Calls != 1 || c.RateLimited != 2 {
			t.Errorf("next window: %+v", c)
		}

		// A lower limit applies at once; reset clears the window.
		h.control("POST", "/_sim/faults", `{"rateLimit": 1}`)
		if r := h.call("catalogService/getPOSConfig", "{}"); r.status != 429 {
			t.Errorf("rateLimit 1: %d", r.status)
		}
		h.control("POST", "/_sim/reset", "")
		if c := h.counters(); c.Total != 0 || c.RateLimited != 0 || len(c.Calls) != 0 || len(c.PerMinute) != 0 {
			t.Errorf("after reset: %+v", c)
		}
		h.ok("catalogService/getPOSConfig", "{}")
	})
}

// With LimitScope endpoint, each service (and auth) has the limit of its
// own: the older SecuTix pages' 60 a minute per endpoint.
func TestEndpointLimitScope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, func(c *Config) { c.RateLimit, c.LimitScope = 3, ScopeEndpoint })
		h.login() // auth is an endpoint of its own
		for i := range 3 {
			h.ok("catalogService/getPOSConfig", map[string]int{"requestId": i})
		}
		// Another method of the same service shares its endpoint's limit.
		r := h.call("catalogService/isCatalogServiceAlive", "{}")
		if body := r.json(t); r.status != 509 || body["scope"] != "endpoint" || body["endpoint"] != "catalogService" ||
			body["limit"] != 3.0 || !strings.Contains(body["message"].(string), "catalogService") {
			t.Fatalf("4th catalogService call: %d %s", r.status, r.body)
		}
		// Another service has its own.
		for range 3 {
			h.ok("setupService/listVatCodes", "{}")
		}
		c := h.counters()
		if c.RateLimited != 1 || c.RateLimitedBy["endpoint"] != 1 || len(c.PerMinute) != 1 || c.PerMinute[0].Calls != 7 ||
			c.PerMinuteByEndpoint["catalogService"][0].Calls != 3 || c.PerMinuteByEndpoint["setupService"][0].Calls != 3 ||
			c.PerMinuteByEndpoint["auth"][0].Calls != 1 {
			t.Errorf("counters %+v", c)
		}
		// Switched at run time: the institution's sum is over the limit.
		h.control("POST", "/_sim/faults", `{"limitScope": "institution"}`)
		if r := h.call("setupService/listSeasons", "{}"); r.status != 509 || r.json(t)["scope"] != "institution" {
			t.Errorf("institution scope: %d %s", r.status, r.body)
		}
		h.control("POST", "/_sim/clock", `{"advance": "1m"}`)
		h.ok("setupService/listSeasons", "{}")
		if r := h.do("POST", "/_sim/faults", `{"limitScope": "method"}`); r.status != 400 {
			t.Errorf("limitScope method: %d %s", r.status, r.body)
		}
		if c := h.counters(); c.RateLimitedBy["institution"] != 1 || len(c.PerMinuteByEndpoint["setupService"]) != 2 {
			t.Errorf("counters %+v", c)
		}
	})
}

func TestFloors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, func(c *Config) { c.CatalogFloor = 10 * time.Minute; c.AvailabilityFloor = time.Minute })
		f := h.fixtures()
		h.ok("catalogService/getCatalogDetailed", `{"requestId": 1}`)
		if r := h.call("catalogService/getCatalogDetailed", `{"requestId": 2}`); r.status != 509 || r.json(t)["error"] != "rate_limited" ||
			r.json(t)["scope"] != "parameters" || r.json(t)["method"] != "catalogService/getCatalogDetailed" || r.json(t)["interval"] != "10m0s" {
			t.Errorf("same body, other requestId: %d %s", r.status, r.body)
		}
		h.ok("catalogService/getCatalogDetailed", `{"scope": "EXTENDED"}`) // another body
		h.ok("catalogService/getCatalog", `{}`)                            // another method
		h.ok("catalogService/getPOSConfig", `{}`)                          // no floor
		h.ok("catalogService/getPOSConfig", `{}`)
		time.Sleep(10*time.Minute - time.Millisecond)
		if r := h.call("catalogService/getCatalogDetailed", `{}`); r.status != 509 {
			t.Errorf("just before the floor: %d", r.status)
		}
		time.Sleep(time.Millisecond)
		h.ok("catalogService/getCatalogDetailed", `{}`)

		avail := map[string]any{"pointOfSalesId": f.PosID, "performanceIds": []int64{f.Products[0].Performances[0].ID}, "seatCategoryIds": []int{-1}}
		h.ok("availabilityService/getEventAvailability", avail)
		// Key order and whitespace do not make a body different.
		r := h.call("availabilityService/getEventAvailability", `{ "seatCategoryIds":[-1], "performanceIds": [`+
			jsonNum(f.Products[0].Performances[0].ID)+`], "pointOfSalesId": `+jsonNum(f.PosID)+`, "requestId": 9}`)
		if r.status != 509 {
			t.Errorf("availability floor: %d", r.status)
		}
		h.control("POST", "/_sim/faults", `{"rateStatus": 429}`)
		if r := h.call("availabilityService/getEventAvailability", avail); r.status != 429 {
			t.Errorf("availability floor, 429: %d", r.status)
		}
		h.control("POST", "/_sim/clock", `{"advance": "1m"}`)
		h.ok("availabilityService/getEventAvailability", avail)
		if c := h.counters(); c.FloorRefused["catalogService/getCatalogDetailed"] != 2 || c.FloorRefused["availabilityService/getEventAvailability"] != 2 ||
			len(c.FloorRefused) != 2 || c.RateLimited != 4 || c.RateLimitedBy["parameters"] != 4 {
			t.Errorf("floor counters %+v", c)
		}
		h.control("POST", "/_sim/reset", "")
		h.ok("catalogService/getCatalogDetailed", `{"scope": "EXTENDED"}`)

		h.control("POST", "/_sim/faults", `{"catalogFloor": "0s"}`)
		h.ok("catalogService/getCatalogDetailed", `{}`)
		h.ok("catalogService/getCatalogDetailed", `{}`)
		if c := h.counters(); c.RateLimited != 0 || len(c.FloorRefused) != 0 || c.Calls["catalogService/getCatalogDetailed"] != 3 {
			t.Errorf("counters %+v", c)
		}
	})
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestFaults(t *testing.T) {
	h := newSim(t, nil)
	h.login()
	h.control("POST", "/_sim/faults", `{"fail5xx": 2, "burst509": 1}`)
	if r := h.call("catalogService/getPOSConfig", "{}"); r.status != 509 {
		t.Errorf("burst509: %d", r.status)
	}
	for range 2 {
		if r := h.call("catalogService/getPOSConfig", "{}"); r.status != 503 || r.json(t)["error"] != "unavailable" {
			t.Errorf("fail5xx: %d %s", r.status, r.body)
		}
	}
	h.ok("catalogService/getPOSConfig", "{}")
	var f faults
	if r := h.do("GET", "/_sim/faults", ""); json.Unmarshal(r.body, &f) != nil || f.Fail5xx != 0 || f.Burst509 != 0 ||
		f.RateStatus != 509 || f.TokenTTL != duration(24*time.Hour) {
		t.Errorf("GET /_sim/faults: %s", r.body)
	}

	h.control("POST", "/_sim/faults", `{"expireTokens": true}`)
	if r := h.call("catalogService/getPOSConfig", "{}"); r.status != 401 || r.json(t)["error"] != "token_expired" {
		t.Errorf("expireTokens: %d %s", r.status, r.body)
	}
	h.login()
	h.ok("catalogService/getPOSConfig", "{}")

	h.control("POST", "/_sim/faults", `{"down": true}`)
	req, _ := http.NewRequest("POST", h.srv.URL+"/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("down: got HTTP %d, want a closed connection", resp.StatusCode)
	}
	h.control("POST", "/_sim/faults", `{"down": false}`)
	h.ok("catalogService/getPOSConfig", "{}")
	if c := h.counters(); c.Statuses["0"] != 1 || c.Statuses["503"] != 2 || c.RateLimited != 1 {
		t.Errorf("counters %+v", c)
	}

	for _, bad := range []string{`{"latency": 5}`, `{"latency": "soon"}`, `{"rateStatus": 200}`, `{"fail5xx": -1}`, `{"typo": 1}`, `[`, `{"tokenTTL": "0s"}`} {
		if r := h.do("POST", "/_sim/faults", bad); r.status != 400 {
			t.Errorf("%s: %d", bad, r.status)
		}
	}
	if r := h.do("GET", "/_sim/faults", ""); !strings.Contains(string(r.body), `"rateStatus":509`) {
		t.Errorf("rejected updates must change nothing: %s", r.body)
	}
}

func TestControl(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, nil)
		f := h.fixtures()
		if f.Institution != "MOSA" || f.PosID < 1e13 || len(f.PaymentMethodIDs) == 0 || len(f.Products) != 12 ||
			f.Products[0].ID < 1e13 || f.Products[0].State != "RUNNING" || len(f.Products[0].Performances) == 0 ||
			len(f.Products[0].Performances[0].SeatCategoryIDs) < 2 || len(f.Products[0].Performances[0].AudienceSubCategoryIDs) != 4 {
			t.Errorf("fixtures %+v", f)
		}
		// The same seed gives the same catalog.
		if g := newMemSim(t, nil).fixtures(); g.Products[5].ID != f.Products[5].ID || g.Products[5].Name != f.Products[5].Name {
			t.Errorf("not deterministic: %+v vs %+v", g.Products[5], f.Products[5])
		}
		if g := newMemSim(t, func(c *Config) { c.Seed = 2 }).fixtures(); g.Products[5].Name == f.Products[5].Name && g.Products[5].ID == f.Products[5].ID {
			t.Errorf("seed ignored")
		}

		now := h.control("POST", "/_sim/clock", `{"advance": "10m"}`)["now"]
		if now != "2025-11-10T10:10:00.000+01:00" || h.control("GET", "/_sim/clock", "")["now"] != now {
			t.Errorf("clock %v", now)
		}
		perf := f.Products[0].Performances[0]
		st := h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 7})
		if num(st["quantity"]) != 7 || st["lastUpdate"] != now {
			t.Errorf("stock: %v", st)
		}
		for _, bad := range []string{`{"performanceId": 1, "seatCategoryId": 2, "quantity": 1}`, `{"quantity": -1}`, `{}`, `nope`} {
			if r := h.do("POST", "/_sim/stock", bad); r.status != 404 && r.status != 400 {
				t.Errorf("stock %s: %d", bad, r.status)
			}
		}
		for _, p := range []string{"/_sim/orders", "/_sim/redirects"} {
			if r := h.do("GET", p, ""); r.status != 200 || string(r.body) != "[]" {
				t.Errorf("%s empty: %d %s", p, r.status, r.body)
			}
		}
		if r := h.do("GET", "/_sim/reset", ""); r.status != 404 && r.status != 405 {
			t.Errorf("GET /_sim/reset: %d", r.status)
		}
	})
}

func TestRedirectsAndCart(t *testing.T) {
	h := newSim(t, nil)
	f := h.fixtures()
	d := h.ok("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(2)))["orderUpdateData"].(map[string]any)
	id, secret := jsonNum(num(d["orderId"])), d["orderSecretId"].(string)

	r := h.do("GET", "/api/1/redirect/cart?orderId="+id+"&lang=fr&orderSecretId="+secret, "")
	if r.status != 302 || r.header.Get("Location") != "/shop/cart?lang=fr&orderId="+id {
		t.Fatalf("cart redirect: %d %v", r.status, r.header.Get("Location"))
	}
	page := h.do("GET", r.header.Get("Location"), "")
	body := string(page.body)
	for _, want := range []string{`<h1 id="cart-title">Cart</h1>`, `<span id="order-id">` + id + `</span>`, f.Products[0].Name, `lang="fr"`, `class="quantity">2<`} {
		if !strings.Contains(body, want) {
			t.Errorf("cart page lacks %q:\n%s", want, body)
		}
	}
	if r := h.do("GET", "/api/1/redirect/checkout?orderId="+id, ""); r.status != 302 || r.header.Get("Location") != "/shop/checkout?orderId="+id {
		t.Errorf("checkout redirect: %d %s", r.status, r.header.Get("Location"))
	}
	if p := h.do("GET", "/shop/checkout?orderId="+id, ""); !strings.Contains(string(p.body), `<h1 id="cart-title">Checkout</h1>`) {
		t.Errorf("checkout page: %s", p.body)
	}
	if r := h.do("GET", "/api/1/redirect/cart?orderId=123&lang=en", ""); r.status != 404 || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("unknown order: %d", r.status)
	}
	if r := h.do("GET", "/api/1/redirect/cart?orderId="+id+"&secret=wrong", ""); r.status != 403 {
		t.Errorf("wrong secret: %d", r.status)
	}
	if r := h.do("GET", "/shop/cart?orderId=nope", ""); r.status != 404 {
		t.Errorf("cart of unknown order: %d", r.status)
	}
	if r := h.do("GET", "/api/1/redirect/product?id=5&lang=en", ""); r.status != 302 || r.header.Get("Location") != "/shop/product?id=5&lang=en" {
		t.Errorf("product redirect: %d %s", r.status, r.header.Get("Location"))
	}

	var recs []redirect
	if r := h.do("GET", "/_sim/redirects", ""); jsonInto(r.body, &recs) != nil || len(recs) != 5 {
		t.Fatalf("redirects: %s", r.body)
	}
	if recs[0].Path != "/api/1/redirect/cart" || recs[0].OrderID != id || recs[0].Lang != "fr" || recs[0].Secret != secret || recs[0].Status != 302 ||
		recs[2].Status != 404 || recs[3].Status != 403 {
		t.Errorf("records %+v", recs)
	}
}
