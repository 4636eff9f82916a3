package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestAllowListAndRequestValidation runs the sidecar in front of the
// simulator with S-360's per-key limits on (the simulator's default).
func TestAllowListAndRequestValidation(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	setup := e.URL + api + "setupService/v1_33/"
	tickets := e.URL + api + "externalOrderHistoryService/v1_33/listTicketsByCriteria"
	ticketsBody := `{"ticketFilterCriteria":{"startDate":"2000-01-01","endDate":"2100-01-01"}}`

	t.Run("setup reads are cached", func(t *testing.T) {
		status, hdr, first := post(t, setup+"listSeasons", `{}`)
		if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" || !strings.Contains(string(first), `"seasons"`) {
			t.Fatalf("first listSeasons: %d %q %.200s", status, hdr.Get("Cache-Status"), first)
		}
		status, hdr, again := post(t, setup+"listSeasons", `{"requestId": 7}`)
		// A fresh hit: a stale one would have refetched in the background.
		if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, "s360edge; hit;") || strings.Contains(cs, "detail=") || string(again) != string(first) {
			t.Fatalf("second listSeasons: %d %q", status, hdr.Get("Cache-Status"))
		}
		if n := s.Counters(t).Calls["setupService/listSeasons"]; n != 1 {
			t.Fatalf("%d listSeasons calls reached the simulator, want 1", n)
		}
		var seasons struct{ Seasons []struct{ ID int64 } }
		if json.Unmarshal(first, &seasons) != nil || len(seasons.Seasons) == 0 {
			t.Fatalf("listSeasons answer %.200s", first)
		}
		body := fmt.Sprintf(`{"seasonId":%d}`, seasons.Seasons[0].ID)
		for i, want := range []string{"s360edge; fwd=miss; stored", "s360edge; hit;"} {
			status, hdr, b := post(t, setup+"listPriceLevels", body)
			if cs := hdr.Get("Cache-Status"); status != 200 || !strings.HasPrefix(cs, want) || strings.Contains(cs, "detail=") || !strings.Contains(string(b), `"priceLevels"`) {
				t.Errorf("listPriceLevels call %d: %d %q %.200s", i+1, status, hdr.Get("Cache-Status"), b)
			}
		}
	})

	t.Run("listTicketsByCriteria is denied by default", func(t *testing.T) {
		status, _, b := post(t, tickets, ticketsBody)
		if status != 403 || !strings.Contains(string(b), `"method_denied"`) {
			t.Fatalf("got %d %s", status, b)
		}
		if n := s.Counters(t).Calls["externalOrderHistoryService/listTicketsByCriteria"]; n != 0 {
			t.Fatalf("%d calls reached the simulator", n)
		}
	})

	t.Run("415 and 400 make no upstream call", func(t *testing.T) {
		before := s.Counters(t).Total
		catalog := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
		cases := []struct {
			name, url, body, contentType string
			status                       int
			code                         string
		}{
			{"form post of an order", e.URL + api + "externalOrderFacade/v1_33/createOrUpdateOrder", `a=1`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
			{"text/plain", catalog, `{}`, "text/plain", 415, "unsupported_media_type"},
			{"no content type", catalog, `{}`, "", 415, "unsupported_media_type"},
			{"latin-1 json", catalog, `{}`, "application/json; charset=iso-8859-1", 415, "unsupported_media_type"},
			{"nested 33 deep", catalog, `{"a":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, "application/json", 400, "invalid_json"},
			{"33-digit number", catalog, `{"productCode":` + strings.Repeat("1", 33) + `}`, "application/json", 400, "invalid_json"},
			{"1001 items", catalog, `{"ids":[` + strings.TrimSuffix(strings.Repeat("1,", 1001), ",") + `]}`, "application/json", 400, "invalid_json"},
			{"odd version", e.URL + api + "catalogService/v1/getCatalogDetailed", `{}`, "application/json", 403, "method_denied"},
			{"wildcard gone", e.URL + api + "catalogService/v1_33/deleteEverything", `{}`, "application/json", 403, "method_denied"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				status, hdr, b := post(t, c.url, c.body, "Content-Type", c.contentType)
				var got struct{ Error, Message string }
				if status != c.status || json.Unmarshal(b, &got) != nil || got.Error != c.code || got.Message == "" || hdr.Get("Content-Type") != "application/json" {
					t.Errorf("got %d %s, want %d %s", status, b, c.status, c.code)
				}
			})
		}
		if n := s.Counters(t).Total - before; n != 0 {
			t.Errorf("rejected requests made %d simulator calls", n)
		}
	})

	t.Run("allow opens listTicketsByCriteria, uncached", func(t *testing.T) {
		e.Reload(t, caddyfile(s, "allow externalOrderHistoryService/listTicketsByCriteria"))
		for i := 1; i <= 2; i++ {
			status, hdr, b := post(t, tickets, ticketsBody)
			if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=bypass" || !strings.Contains(string(b), `"ticketSummaries"`) {
				t.Fatalf("call %d: %d %q %.200s", i, status, hdr.Get("Cache-Status"), b)
			}
			if n := s.Counters(t).Calls["externalOrderHistoryService/listTicketsByCriteria"]; n != i {
				t.Fatalf("after call %d: %d simulator calls", i, n)
			}
		}
		status, _, b := post(t, e.URL+api+"externalOrderHistoryService/v1_33x/listTicketsByCriteria", ticketsBody)
		if status != 403 {
			t.Errorf("allowed method with an odd version: %d %s", status, b)
		}
	})
}
