package sim

import (
	"encoding/json"
	"fmt"
	"time"
)

type availabilityRequest struct {
	PointOfSalesID  *int64  `json:"pointOfSalesId"`
	PerformanceIDs  []int64 `json:"performanceIds"`
	SeatCategoryIDs []int64 `json:"seatCategoryIds"`
	ProductIDs      []int64 `json:"productIds"`
	PerformanceID   int64   `json:"performanceId"`
	SeatCategoryID  int64   `json:"seatCategoryId"`
	ReferenceDate   string  `json:"referenceDate"`
}

// decodeAvailability parses the request and checks the mandatory point of
// sales, then the mandatory list of ids named by list ("performanceIds" or
// "productIds"; "" for none). A non-nil envelope is a business error to
// return as is.
func (s *Server) decodeAvailability(body []byte, list string) (*availabilityRequest, envelope, error) {
	var req availabilityRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, err
	}
	if req.PointOfSalesID == nil {
		return nil, s.failure("error.parameter.mandatory", "pointOfSalesId is mandatory"), nil
	}
	if *req.PointOfSalesID != s.posID {
		return nil, s.failure("error.pointofsales.unknown", fmt.Sprintf("unknown point of sales %d", *req.PointOfSalesID)), nil
	}
	ids := map[string][]int64{"performanceIds": req.PerformanceIDs, "productIds": req.ProductIDs}
	if list != "" && len(ids[list]) == 0 {
		return nil, s.failure("error.parameter.mandatory", list+" is mandatory"), nil
	}
	return &req, nil, nil
}

// level is OUR assumption, not S-360's: no public source documents an
// availability colour (docs/S360.md, "Methods"). RED when sold out, ORANGE when less
// than 20 % of the seats put on sale remain, GREEN otherwise.
func level(available, capacity int) string {
	switch {
	case available <= 0:
		return "RED"
	case available*5 < capacity:
		return "ORANGE"
	}
	return "GREEN"
}

type quantity struct {
	AvailableQuantity int    `json:"availableQuantity"`
	Level             string `json:"level"`
}

func qty(available, capacity int) quantity { return quantity{available, level(available, capacity)} }

func (p *performance) total() (available, capacity int) {
	for id, n := range p.stock {
		available += n
		capacity += p.capacity[id]
	}
	return available, capacity
}

// total sums the seats of every performance of p.
func (p *product) total() (available, capacity int) {
	for _, perf := range p.Event.Performances {
		a, c := perf.total()
		available, capacity = available+a, capacity+c
	}
	return available, capacity
}

type eventAvailability struct {
	PerformanceID  int64  `json:"performanceId"`
	SeatCategoryID *int64 `json:"seatCategoryId,omitempty"`
	quantity
}

// getEventAvailability honours the seatCategoryIds semantics of §6.1: empty
// sums the categories, [-1] lists each, explicit ids filter.
// contingentIds are not simulated.
func (s *Server) getEventAvailability(body []byte) (envelope, error) {
	req, fail, err := s.decodeAvailability(body, "performanceIds")
	if req == nil {
		return fail, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows := []eventAvailability{}
	for _, id := range req.PerformanceIDs {
		perf := s.cat.perfByID[id]
		if perf == nil {
			continue
		}
		if len(req.SeatCategoryIDs) == 0 {
			rows = append(rows, eventAvailability{PerformanceID: id, quantity: qty(perf.total())})
			continue
		}
		all := len(req.SeatCategoryIDs) == 1 && req.SeatCategoryIDs[0] == -1
		for _, sc := range perf.SeatCategories {
			if all || contains(req.SeatCategoryIDs, sc.ID) {
				rows = append(rows, eventAvailability{PerformanceID: id, SeatCategoryID: &sc.ID,
					quantity: qty(perf.stock[sc.ID], perf.capacity[sc.ID])})
			}
		}
	}
	return success("eventAvailabilityData", map[string]any{"eventAvailabilities": rows}), nil
}

func contains(ids []int64, id int64) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

func (s *Server) getPerformanceAvailability(body []byte) (envelope, error) {
	req, fail, err := s.decodeAvailability(body, "performanceIds")
	if req == nil {
		return fail, err
	}
	type row struct {
		PerformanceID int64 `json:"performanceId"`
		ProductID     int64 `json:"productId"`
		quantity
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows := []row{}
	for _, id := range req.PerformanceIDs {
		if perf := s.cat.perfByID[id]; perf != nil {
			rows = append(rows, row{id, perf.product.ID, qty(perf.total())})
		}
	}
	return success("performanceAvailabilityData", map[string]any{"performanceAvailabilities": rows}), nil
}

func (s *Server) getProductAvailability(body []byte) (envelope, error) {
	req, fail, err := s.decodeAvailability(body, "productIds")
	if req == nil {
		return fail, err
	}
	type row struct {
		ProductID int64 `json:"productId"`
		quantity
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows := []row{}
	for _, id := range req.ProductIDs {
		if p := s.cat.prodByID[id]; p != nil {
			rows = append(rows, row{id, qty(p.total())})
		}
	}
	return success("productAvailabilityData", map[string]any{"productAvailabilities": rows}), nil
}

type seat struct {
	SeatID int64  `json:"seatId"`
	Block  string `json:"block"`
	Row    int    `json:"row"`
	Number int    `json:"number"`
}

// getSeatsAvailability lists free seats of one category: a made-up plan of
// rows of 20, sold from the front.
func (s *Server) getSeatsAvailability(body []byte) (envelope, error) {
	req, fail, err := s.decodeAvailability(body, "")
	if req == nil {
		return fail, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	perf := s.cat.perfByID[req.PerformanceID]
	if perf == nil {
		return s.failure("error.performance.unknown", "performanceId is mandatory and must exist"), nil
	}
	capacity, ok := perf.capacity[req.SeatCategoryID]
	if !ok {
		return s.failure("error.seatcategory.unknown", "seatCategoryId is mandatory and must belong to the performance"), nil
	}
	seats := []seat{}
	for n := capacity - perf.stock[req.SeatCategoryID]; n < capacity; n++ {
		seats = append(seats, seat{10229000000000 + perf.ID%100000*1000 + int64(n),
			fmt.Sprintf("B%d", req.SeatCategoryID%10), n/20 + 1, n%20 + 1})
	}
	return success("seatsAvailabilityData", map[string]any{"performanceId": perf.ID, "seatCategoryId": req.SeatCategoryID,
		"availableQuantity": len(seats), "seats": seats}), nil
}

// getUpdatedAvailabilities lists the given products whose stock changed
// strictly after referenceDate (docs/S360.md, "Change detection").
func (s *Server) getUpdatedAvailabilities(body []byte) (envelope, error) {
	req, fail, err := s.decodeAvailability(body, "productIds")
	if req == nil {
		return fail, err
	}
	ref, err := time.Parse(time.RFC3339Nano, req.ReferenceDate)
	if err != nil {
		return s.failure("error.parameter.invalid", "referenceDate must be an ISO-8601 datetime"), nil
	}
	type row struct {
		ProductID  int64  `json:"productId"`
		LastUpdate string `json:"lastUpdate"`
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows := []row{}
	for _, id := range req.ProductIDs {
		if p := s.cat.prodByID[id]; p != nil && p.lastUpdate.After(ref) {
			rows = append(rows, row{id, iso(p.lastUpdate)})
		}
	}
	return success("availabilityUpdateData", rows), nil
}

// getAvailableThemeAndLanguage answers for visit passes with themes and
// languages (docs/S360.md, "Methods"). The generated catalog has single entries only,
// so the list is always empty; the method exists so that clients calling it
// get S-360's shape.
func (s *Server) getAvailableThemeAndLanguage(body []byte) (envelope, error) {
	var req struct {
		PassID      *int64  `json:"passId"`
		TimeslotIDs []int64 `json:"timeslotIds"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if req.PassID == nil {
		return s.failure("error.parameter.mandatory", "passId is mandatory"), nil
	}
	return success("listThemeAndLanguage", []any{}), nil
}
