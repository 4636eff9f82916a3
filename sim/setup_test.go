package sim

import (
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/s360"
)

// TestEveryDefaultMethodIsSimulated keeps the simulator in step with the
// sidecar's built-in allow-list: a method the sidecar allows but the
// simulator answers 404 could not be tested end to end.
func TestEveryDefaultMethodIsSimulated(t *testing.T) {
	for name := range s360.DefaultMethods() {
		if methods[name] == nil {
			t.Errorf("%s is on the sidecar's allow-list but not simulated", name)
		}
	}
	if methods["externalOrderHistoryService/listTicketsByCriteria"] == nil {
		t.Error("listTicketsByCriteria not simulated")
	}
}

func ids(list any) []int64 {
	var out []int64
	for _, v := range list.([]any) {
		out = append(out, num(v.(map[string]any)["id"]))
	}
	return out
}

func TestSetupReadsMatchTheCatalog(t *testing.T) {
	h := newSim(t, nil)
	cat := h.ok("catalogService/getCatalogDetailed", `{"scope":"EXTENDED"}`)
	seasons := path(cat, "catalogData", "seasons").([]any)

	got := h.ok("setupService/listSeasons", `{}`)["seasons"].([]any)
	if !slices.Equal(ids(got), ids(seasons)) || len(got) != 2 {
		t.Fatalf("listSeasons ids %v, catalog %v", ids(got), ids(seasons))
	}
	for i, se := range got {
		se := se.(map[string]any)
		start, err1 := time.Parse(isoLayout, se["start"].(string))
		end, err2 := time.Parse(isoLayout, se["end"].(string))
		if se["code"] != path(seasons[i], "code") || se["state"] != "RUNNING" || err1 != nil || err2 != nil || !end.After(start) ||
			len(se["priceLevels"].([]any)) != 0 || len(se["audienceCategories"].([]any)) != 0 || path(se, "externalName", "translations", 0, "value") == nil {
			t.Errorf("season %d: %v", i, se)
		}
	}

	for i, se := range seasons {
		seasonID := num(path(se, "id"))
		t.Run("season "+path(se, "code").(string), func(t *testing.T) {
			var wantSubs []int64
			for _, ac := range path(se, "audienceCategories").([]any) {
				wantSubs = append(wantSubs, ids(path(ac, "audienceSubCategories"))...)
			}
			subs := h.ok("setupService/listAudienceSubCategories", map[string]any{"seasonId": seasonID})["audienceSubCategories"]
			if !slices.Equal(ids(subs), wantSubs) {
				t.Errorf("audience subcategories %v, catalog %v", ids(subs), wantSubs)
			}
			for _, sub := range subs.([]any) {
				kind := path(sub, "audienceCategoryKind")
				if kind != "FULL" && kind != "REDUCED" && kind != "FREE" || path(sub, "requiredAudienceSubCategoryIds") == nil || path(sub, "crossSeatCategory") != false {
					t.Errorf("subcategory %v", sub)
				}
			}
			levels := h.ok("setupService/listPriceLevels", map[string]any{"seasonId": seasonID})["priceLevels"]
			if !slices.Equal(ids(levels), ids(path(se, "priceLevels"))) || path(levels, 0, "mainCategory") != "OCCASIONAL" {
				t.Errorf("price levels %v, catalog %v", levels, path(se, "priceLevels"))
			}

			search := map[string]any{"searchProductsCriteria": map[string]any{"seasonIds": []int64{seasonID}, "productFamilyTypes": []string{"SINGLE_ENTRY"}},
				"granularity": "COMPLETE", "minIndex": 0, "nbMaxResults": 100}
			products := h.ok("setupService/searchProductsByCriteria", search)["products"].([]any)
			want := ids(path(seasons[i], "products"))
			slices.Sort(want)
			if !slices.Equal(ids(products), want) || len(want) == 0 {
				t.Errorf("searched products %v, catalog (sorted) %v", ids(products), want)
			}
			for _, p := range products {
				perfs := path(p, "event", "performances").([]any)
				if len(perfs) == 0 || path(perfs[0], "id") == nil || path(perfs[0], "prices", 0, "amount") == nil {
					t.Errorf("product %v has no usable performances", path(p, "id"))
				}
				for _, perf := range perfs {
					if _, has := perf.(map[string]any)["state"]; has {
						t.Errorf("searchProductsByCriteria performance carries a state: %v", perf)
					}
				}
			}
		})
	}

	vat := h.ok("setupService/listVatCodes", `{}`)["vatCodes"].([]any)
	if len(vat) != 1 || num(path(vat, 0, "currentRate")) != 5500 {
		t.Fatalf("vat codes %v", vat)
	}
	if want := num(path(seasons[0], "products", 0, "vatCodeId")); num(path(vat, 0, "id")) != want {
		t.Errorf("vat code id %v, products use %d", path(vat, 0, "id"), want)
	}
}

func TestSetupReadErrors(t *testing.T) {
	h := newSim(t, nil)
	cases := []struct {
		name, method string
		body         any
		code         string
	}{
		{"price levels without season", "setupService/listPriceLevels", `{}`, "error.parameter.mandatory"},
		{"subcategories of unknown season", "setupService/listAudienceSubCategories", `{"seasonId": 1}`, "error.season.unknown"},
		{"negative minIndex", "setupService/searchProductsByCriteria", `{"minIndex": -1}`, "error.parameter.invalid"},
		{"tickets without dates", "externalOrderHistoryService/listTicketsByCriteria", `{"ticketFilterCriteria": {"productId": 1}}`, "error.parameter.mandatory"},
		{"tickets with bad dates", "externalOrderHistoryService/listTicketsByCriteria", `{"ticketFilterCriteria": {"startDate": "yesterday", "endDate": "today"}}`, "error.parameter.invalid"},
		{"theme without pass", "availabilityService/getAvailableThemeAndLanguage", `{}`, "error.parameter.mandatory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.call(c.method, c.body)
			if m := r.json(t); r.status != 200 || m["statusCode"] != "error" || m["statusDetail"] != c.code {
				t.Errorf("got %d %s, want an error envelope with %s", r.status, r.body, c.code)
			}
		})
	}
	if r := h.call("setupService/listSeasons", `{"x": "not an object"`); r.status != 400 {
		t.Errorf("broken JSON: %d", r.status)
	}
	if m := h.ok("availabilityService/getAvailableThemeAndLanguage", `{"passId": 1, "timeslotIds": [2]}`); len(m["listThemeAndLanguage"].([]any)) != 0 {
		t.Errorf("theme and language %v", m)
	}
}

func TestSearchProductsPages(t *testing.T) {
	h := newSim(t, func(c *Config) { c.Products = 250 })
	page := func(minIndex, n int) []int64 {
		return ids(h.ok("setupService/searchProductsByCriteria", map[string]any{"granularity": "COMPLETE", "minIndex": minIndex, "nbMaxResults": n})["products"])
	}
	first := page(0, 1000)
	if len(first) != 100 || !slices.IsSorted(first) {
		t.Fatalf("first page: %d products, sorted %v", len(first), slices.IsSorted(first))
	}
	second, last := page(100, 100), page(200, 100)
	if len(second) != 100 || second[0] <= first[99] || len(last) != 50 {
		t.Errorf("pages: %d, %d", len(second), len(last))
	}
	if got := page(math.MaxInt, 100); len(got) != 0 {
		t.Errorf("page past the end: %v", got)
	}
	if got := page(0, 3); !slices.Equal(got, first[:3]) {
		t.Errorf("nbMaxResults 3: %v", got)
	}
}

// ticketsSim returns a simulator at t0 with one order of two tickets for the
// first performance, and the criteria that select its day; inside a bubble.
func ticketsSim(t *testing.T) (*harness, fixtures, func(map[string]any) map[string]any) {
	h := newMemSim(t, nil)
	f := h.fixtures()
	h.ok("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(2)))
	criteria := func(extra map[string]any) map[string]any {
		c := map[string]any{"productId": f.Products[0].ID, "startDate": "2025-11-10", "endDate": "2025-11-11T00:00:00Z"}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	return h, f, criteria
}

func TestListTicketsByCriteria(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, f, criteria := ticketsSim(t)
		perf := f.Products[0].Performances[0]
		m := h.ok("externalOrderHistoryService/listTicketsByCriteria", map[string]any{"ticketFilterCriteria": criteria(nil)})
		tickets := m["ticketSummaries"].([]any)
		if len(tickets) != 2 || m["truncated"] != false {
			t.Fatalf("tickets %v", m)
		}
		tk := tickets[0]
		if path(tk, "ticketState") != "VALID" || num(path(tk, "performanceId")) != perf.ID || num(path(tk, "seatCategoryId")) != perf.SeatCategoryIDs[0] ||
			num(path(tk, "audienceSubCategoryId")) != perf.AudienceSubCategoryIDs[0] || path(tk, "audienceSubCategory") != "ADULT" ||
			num(path(tk, "price")) <= 0 || path(tk, "priceLevelId") == nil {
			t.Errorf("ticket %v", tk)
		}
	})
	cases := []struct {
		name  string
		body  func(f fixtures, criteria func(map[string]any) map[string]any) map[string]any
		n     int
		trunc bool
	}{
		{"one per page", func(_ fixtures, criteria func(map[string]any) map[string]any) map[string]any {
			return map[string]any{"ticketFilterCriteria": criteria(nil), "paginationParameter": map[string]any{"startPosition": 1, "maxResult": 1}}
		}, 1, false},
		{"truncated", func(_ fixtures, criteria func(map[string]any) map[string]any) map[string]any {
			return map[string]any{"ticketFilterCriteria": criteria(nil), "paginationParameter": map[string]any{"startPosition": 0, "maxResult": 1}}
		}, 1, true},
		{"point of sales given", func(f fixtures, criteria func(map[string]any) map[string]any) map[string]any {
			return map[string]any{"ticketFilterCriteria": criteria(map[string]any{"pointOfSalesId": f.PosID})}
		}, 0, false},
		{"other product", func(f fixtures, criteria func(map[string]any) map[string]any) map[string]any {
			return map[string]any{"ticketFilterCriteria": criteria(map[string]any{"productId": f.Products[1].ID})}
		}, 0, false},
		{"dates before", func(_ fixtures, criteria func(map[string]any) map[string]any) map[string]any {
			return map[string]any{"ticketFilterCriteria": criteria(map[string]any{"startDate": "2025-01-01", "endDate": "2025-11-09"})}
		}, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, f, criteria := ticketsSim(t)
				m := h.ok("externalOrderHistoryService/listTicketsByCriteria", c.body(f, criteria))
				if len(m["ticketSummaries"].([]any)) != c.n || m["truncated"] != c.trunc {
					t.Errorf("got %v", m)
				}
			})
		})
	}
}
