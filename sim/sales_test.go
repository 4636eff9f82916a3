package sim

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestEventAvailability(t *testing.T) {
	h := newSim(t, nil)
	f := h.fixtures()
	perf := f.Products[0].Performances[0]
	cats := perf.SeatCategoryIDs
	rows := func(seatCats any) []any {
		m := h.ok("availabilityService/getEventAvailability", map[string]any{"pointOfSalesId": f.PosID,
			"performanceIds": []int64{perf.ID}, "seatCategoryIds": seatCats})
		return path(m, "eventAvailabilityData", "eventAvailabilities").([]any)
	}
	split := rows([]int64{-1})
	if len(split) != len(cats) {
		t.Fatalf("[-1]: %d rows for %d categories", len(split), len(cats))
	}
	sum := 0
	for i, r := range split {
		if num(path(r, "seatCategoryId")) != cats[i] || num(path(r, "performanceId")) != perf.ID || path(r, "level") != "GREEN" {
			t.Errorf("row %d: %v", i, r)
		}
		sum += int(num(path(r, "availableQuantity")))
	}
	for _, empty := range []any{[]int64{}, nil} {
		all := rows(empty)
		if len(all) != 1 || num(path(all[0], "availableQuantity")) != int64(sum) || path(all[0], "seatCategoryId") != nil {
			t.Errorf("seatCategoryIds %v: %v, want one row of %d", empty, all, sum)
		}
	}
	one := rows([]int64{cats[1], 999})
	if len(one) != 1 || num(path(one[0], "seatCategoryId")) != cats[1] || path(one[0], "availableQuantity") != path(split[1], "availableQuantity") {
		t.Errorf("filter: %v", one)
	}

	// Levels follow stock: our own GREEN/ORANGE/RED convention.
	h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": cats[0], "quantity": 0})
	h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": cats[1], "quantity": 1})
	split = rows([]int64{-1})
	if path(split[0], "level") != "RED" || num(path(split[0], "availableQuantity")) != 0 || path(split[1], "level") != "ORANGE" {
		t.Errorf("levels: %v", split)
	}

	for name, body := range map[string]map[string]any{
		"no pointOfSalesId":    {"performanceIds": []int64{perf.ID}},
		"wrong pointOfSalesId": {"pointOfSalesId": 1, "performanceIds": []int64{perf.ID}},
		"no performanceIds":    {"pointOfSalesId": f.PosID},
		"empty performanceIds": {"pointOfSalesId": f.PosID, "performanceIds": []int64{}},
	} {
		r := h.call("availabilityService/getEventAvailability", body)
		if m := r.json(t); r.status != 200 || m["statusCode"] != "error" || m["statusDetail"] == nil || m["eventAvailabilityData"] != nil {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
}

func TestOtherAvailabilities(t *testing.T) {
	h := newSim(t, nil)
	f := h.fixtures()
	p := f.Products[0]
	perf := p.Performances[0]
	h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 3})

	m := h.ok("availabilityService/getPerformanceAvailability", map[string]any{"pointOfSalesId": f.PosID, "performanceIds": []int64{perf.ID, 12345}})
	pa := path(m, "performanceAvailabilityData", "performanceAvailabilities").([]any)
	if len(pa) != 1 || num(path(pa[0], "performanceId")) != perf.ID || num(path(pa[0], "productId")) != p.ID || num(path(pa[0], "availableQuantity")) < 3 {
		t.Errorf("getPerformanceAvailability: %v", pa)
	}

	m = h.ok("availabilityService/getProductAvailability", map[string]any{"pointOfSalesId": f.PosID, "productIds": []int64{p.ID}})
	pr := path(m, "productAvailabilityData", "productAvailabilities").([]any)
	if len(pr) != 1 || num(path(pr[0], "productId")) != p.ID || num(path(pr[0], "availableQuantity")) < num(path(pa[0], "availableQuantity")) {
		t.Errorf("getProductAvailability: %v", pr)
	}
	if r := h.call("availabilityService/getProductAvailability", map[string]any{"pointOfSalesId": f.PosID}); r.json(t)["statusCode"] != "error" {
		t.Errorf("productIds missing: %s", r.body)
	}

	m = h.ok("availabilityService/getSeatsAvailability", map[string]any{"pointOfSalesId": f.PosID, "performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0]})
	seats := path(m, "seatsAvailabilityData", "seats").([]any)
	if len(seats) != 3 || num(path(seats[0], "seatId")) < 1e13 || num(path(seats[0], "row")) < 1 {
		t.Errorf("getSeatsAvailability: %v", seats)
	}
	if r := h.call("availabilityService/getSeatsAvailability", map[string]any{"pointOfSalesId": f.PosID, "performanceId": perf.ID}); r.json(t)["statusCode"] != "error" {
		t.Errorf("seatCategoryId missing: %s", r.body)
	}
}

func TestUpdatedAvailabilities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, nil)
		f := h.fixtures()
		ids := []int64{f.Products[0].ID, f.Products[2].ID, f.Products[4].ID}
		updated := func(ref string) []any {
			m := h.ok("availabilityService/getUpdatedAvailabilities", map[string]any{"pointOfSalesId": f.PosID, "productIds": ids, "referenceDate": ref})
			return m["availabilityUpdateData"].([]any)
		}
		if got := updated("2025-01-01T00:00:00.000Z"); len(got) != 3 {
			t.Errorf("everything changed since the start: %v", got)
		}
		ref := "2025-11-10T10:00:00.000+01:00" // t0
		if got := updated(ref); len(got) != 0 {
			t.Errorf("nothing changed strictly after t0: %v", got)
		}
		time.Sleep(time.Minute)
		h.ok("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(2)))
		got := updated(ref)
		if len(got) != 1 || num(path(got[0], "productId")) != ids[0] || path(got[0], "lastUpdate") != "2025-11-10T10:01:00.000+01:00" {
			t.Errorf("after an order: %v", got)
		}
		if got := updated("2025-11-10T09:01:00.000Z"); len(got) != 0 {
			t.Errorf("lastUpdate as referenceDate: %v", got)
		}
		time.Sleep(time.Minute)
		perf := f.Products[2].Performances[0]
		h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 5})
		if got := updated("2025-11-10T09:01:00.000Z"); len(got) != 1 || num(path(got[0], "productId")) != ids[1] {
			t.Errorf("after /_sim/stock: %v", got)
		}
		for _, body := range []map[string]any{
			{"pointOfSalesId": f.PosID, "productIds": ids},
			{"pointOfSalesId": f.PosID, "productIds": ids, "referenceDate": "yesterday"},
			{"pointOfSalesId": f.PosID, "referenceDate": ref},
			{"productIds": ids, "referenceDate": ref},
		} {
			if m := h.call("availabilityService/getUpdatedAvailabilities", body).json(t); m["statusCode"] != "error" {
				t.Errorf("%v: %v", body, m)
			}
		}
	})
}

func TestOrder(t *testing.T) {
	h := newSim(t, nil)
	f := h.fixtures()
	perf := f.Products[0].Performances[0]
	h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 5})

	body := orderBody(f.PosID, f.firstLine(2))
	body["externalReference"] = "ext-1"
	m := h.ok("externalOrderFacade/createOrUpdateOrder", body)
	d := m["orderUpdateData"].(map[string]any)
	orderID := num(d["orderId"])
	if orderID < 1e10 || orderID > 1e11 || len(d["orderSecretId"].(string)) != 20 || m["expectedException"] != false ||
		num(d["mainOperationId"]) < 1e13 || path(d, "catalogCurrency", "currencyCode") != "EUR" ||
		len(d["movementDataUpdates"].([]any)) != 0 || len(d["removeOperationIds"].([]any)) != 0 || len(d["removeMovementIds"].([]any)) != 0 {
		t.Fatalf("order: %v", m)
	}
	op := path(d, "operationDataUpdates", 0).(map[string]any)
	if num(op["quantity"]) != 2 || num(op["unitPrice"]) < 1000 || num(op["productId"]) != f.Products[0].ID || num(op["performanceId"]) != perf.ID ||
		num(op["operationId"]) != num(d["mainOperationId"]) {
		t.Errorf("operation: %v", op)
	}

	// A second order gets a larger id; passing orderId appends.
	m2 := h.ok("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(1)))
	if id2 := num(path(m2, "orderUpdateData", "orderId")); id2 <= orderID {
		t.Errorf("second order id %d after %d", id2, orderID)
	}
	upd := orderBody(f.PosID, f.firstLine(1))
	upd["orderId"] = orderID
	m3 := h.ok("externalOrderFacade/createOrUpdateOrder", upd)
	if num(path(m3, "orderUpdateData", "orderId")) != orderID || path(m3, "orderUpdateData", "orderSecretId") != d["orderSecretId"] ||
		len(path(m3, "orderUpdateData", "operationDataUpdates").([]any)) != 1 {
		t.Errorf("update: %v", m3)
	}

	// One seat left: an order of two fails as a whole, stock untouched.
	second := line(perf.ID, perf.SeatCategoryIDs[1], perf.AudienceSubCategoryIDs[0], 1)
	r := h.call("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, second, f.firstLine(2)))
	short := r.json(t)
	if r.status != 200 || short["statusCode"] != "error" || short["statusDetail"] != "error.order.availability" ||
		short["statusMessage"] != "No more tickets available" || short["expectedException"] != true ||
		short["orderUpdateData"] != nil || short["requestId"] != nil {
		t.Errorf("short stock: %d %v", r.status, short)
	}
	ev := h.ok("availabilityService/getEventAvailability", map[string]any{"pointOfSalesId": f.PosID,
		"performanceIds": []int64{perf.ID}, "seatCategoryIds": []int64{perf.SeatCategoryIDs[0]}})
	if q := num(path(ev, "eventAvailabilityData", "eventAvailabilities", 0, "availableQuantity")); q != 1 {
		t.Errorf("stock after 4 sold of 5 and a failed order: %d", q)
	}

	var orders []order
	if r := h.do("GET", "/_sim/orders", ""); r.status != 200 || jsonInto(r.body, &orders) != nil || len(orders) != 2 ||
		len(orders[0].Lines) != 2 || orders[0].ExternalReference != "ext-1" || orders[0].Total != 3*orders[0].Lines[0].UnitPrice {
		t.Errorf("/_sim/orders: %s", r.body)
	}
}

func TestOrderValidation(t *testing.T) {
	h := newSim(t, func(c *Config) { c.ErrorField = "statusMessage" })
	f := h.fixtures()
	good := f.firstLine(1)
	closed := -1
	for i, p := range f.Products {
		if p.State == "CLOSED" || p.State == "CANCELED" {
			closed = i
			break
		}
	}
	with := func(k string, v any) map[string]any {
		b := orderBody(f.PosID, good)
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	cases := map[string]map[string]any{
		"no pointOfSalesId":      with("pointOfSalesId", nil),
		"wrong pointOfSalesId":   with("pointOfSalesId", 1),
		"no orderType":           with("orderType", nil),
		"unknown orderType":      with("orderType", "BARTER"),
		"no resume option flag":  with("isResumeAllOptionOperations", nil),
		"no resume reservation":  with("isResumeAllReservationOperations", nil),
		"no operations":          with("singleEntryAttributionOperations", nil),
		"empty operations":       with("singleEntryAttributionOperations", []any{}),
		"only composed products": with("singleEntryAttributionOperations", nil),
		"zero quantity":          orderBody(f.PosID, line(num(good["performanceId"]), num(good["seatCategoryId"]), num(good["audienceSubCategoryId"]), 0)),
		"unknown performance":    orderBody(f.PosID, line(1, 2, 3, 1)),
		"unknown seat category":  orderBody(f.PosID, line(num(good["performanceId"]), 2, num(good["audienceSubCategoryId"]), 1)),
		"unknown order":          with("orderId", 42),
	}
	cases["only composed products"]["composedProductOperations"] = []any{map[string]any{}}
	if closed >= 0 {
		p := f.Products[closed].Performances[0]
		cases["closed performance"] = orderBody(f.PosID, line(p.ID, p.SeatCategoryIDs[0], p.AudienceSubCategoryIDs[0], 1))
	}
	for name, body := range cases {
		r := h.call("externalOrderFacade/createOrUpdateOrder", body)
		m := r.json(t)
		code, _ := m["statusMessage"].(string)
		if r.status != 200 || m["statusCode"] != "error" || m["expectedException"] != true || len(code) < 6 || code[:6] != "error." ||
			m["statusDetail"] == nil || m["orderUpdateData"] != nil {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	var orders []order
	if r := h.do("GET", "/_sim/orders", ""); jsonInto(r.body, &orders) != nil || len(orders) != 0 {
		t.Errorf("orders after invalid requests: %s", r.body)
	}
}

// TestNoOversell: 50 buyers race for 20 seats.
func TestNoOversell(t *testing.T) {
	h := newSim(t, nil)
	f := h.fixtures()
	perf := f.Products[0].Performances[0]
	h.control("POST", "/_sim/stock", map[string]any{"performanceId": perf.ID, "seatCategoryId": perf.SeatCategoryIDs[0], "quantity": 20})
	h.login()
	var wg sync.WaitGroup
	results := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			r := h.call("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(1)))
			m := r.json(t)
			if m["statusCode"] == "success" {
				results <- "sold"
			} else {
				results <- m["statusDetail"].(string)
			}
		})
	}
	wg.Wait()
	close(results)
	count := map[string]int{}
	for r := range results {
		count[r]++
	}
	if count["sold"] != 20 || count["error.order.availability"] != 30 {
		t.Errorf("outcomes %v", count)
	}
	ev := h.ok("availabilityService/getEventAvailability", map[string]any{"pointOfSalesId": f.PosID,
		"performanceIds": []int64{perf.ID}, "seatCategoryIds": []int64{perf.SeatCategoryIDs[0]}})
	if q := num(path(ev, "eventAvailabilityData", "eventAvailabilities", 0, "availableQuantity")); q != 0 {
		t.Errorf("left %d", q)
	}
}
