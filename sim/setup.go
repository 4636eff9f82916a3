package sim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// The setupService reads and the order history (docs/S360.md, "Methods"), answered
// from the same generated catalog as getCatalogDetailed, so ids agree.

// seasonRequest is the body of listAudienceSubCategories and listPriceLevels.
type seasonRequest struct {
	SeasonID *int64 `json:"seasonId"`
}

// forSeason answers a request naming a season (listAudienceSubCategories,
// listPriceLevels) with answer's envelope for that season, called under
// s.mu; a missing or unknown season is a business error.
func (s *Server) forSeason(body []byte, answer func(*season) envelope) (envelope, error) {
	var req seasonRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if req.SeasonID == nil {
		return s.failure("error.parameter.mandatory", "seasonId is mandatory"), nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, se := range s.cat.Seasons {
		if se.ID == *req.SeasonID {
			return answer(se), nil
		}
	}
	return s.failure("error.season.unknown", fmt.Sprintf("unknown season %d", *req.SeasonID)), nil
}

// listSeasons answers every season; like S-360 it leaves the priceLevels and
// audienceCategories arrays empty here.
func (s *Server) listSeasons([]byte) (envelope, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []map[string]any{}
	for _, se := range s.cat.Seasons {
		out = append(out, map[string]any{"id": se.ID, "code": se.Code, "state": "RUNNING",
			"start": iso(se.start), "end": iso(se.end), "externalName": se.ExternalName,
			"priceLevels": []any{}, "audienceCategories": []any{}})
	}
	return success("seasons", out), nil
}

func (s *Server) listAudienceSubCategories(body []byte) (envelope, error) {
	return s.forSeason(body, func(se *season) envelope {
		out := []map[string]any{}
		for _, ac := range se.AudienceCategories {
			for _, sub := range ac.AudienceSubCategories {
				out = append(out, map[string]any{"id": sub.ID, "code": sub.Code, "externalName": sub.ExternalName,
					"audienceCategoryKind": sub.AudienceCategoryKind, "requiredAudienceSubCategoryIds": []int64{},
					"crossSeatCategory": false})
			}
		}
		return success("audienceSubCategories", out)
	})
}

func (s *Server) listPriceLevels(body []byte) (envelope, error) {
	return s.forSeason(body, func(se *season) envelope { return success("priceLevels", se.PriceLevels) })
}

// listVatCodes answers the one VAT code every product uses. currentRate is
// in hundred-thousandths (5.5 % = 5500), as S-360 writes rates.
func (s *Server) listVatCodes([]byte) (envelope, error) {
	s.mu.RLock()
	id := s.cat.vatCodeID
	s.mu.RUnlock()
	return success("vatCodes", []map[string]any{{"id": id, "code": "FR_CULTURE", "currentRate": 5500, "country": "FR"}}), nil
}

type searchProductsRequest struct {
	Criteria struct {
		SeasonIDs          []int64  `json:"seasonIds"`
		ProductFamilyTypes []string `json:"productFamilyTypes"`
	} `json:"searchProductsCriteria"`
	Granularity  string `json:"granularity"`
	MinIndex     int    `json:"minIndex"`
	NbMaxResults *int   `json:"nbMaxResults"`
}

// searchedProduct is a product as searchProductsByCriteria writes it: the
// catalog's shape without the performances' state. The outer Event field
// hides the embedded product's.
type searchedProduct struct {
	product
	Event *searchedEvent `json:"event,omitempty"`
}

type searchedEvent struct {
	ID           int64                 `json:"id"`
	Performances []searchedPerformance `json:"performances"`
}

// searchedPerformance is a performance without its state: the outer State,
// always empty, hides the embedded performance's.
type searchedPerformance struct {
	performance
	State string `json:"state,omitempty"`
}

// searchMaxResults is S-360's page size limit for searchProductsByCriteria.
const searchMaxResults = 100

// searchProductsByCriteria pages through every product of any state,
// oldest (smallest id) first, filtered by season and family type.
func (s *Server) searchProductsByCriteria(body []byte) (envelope, error) {
	var req searchProductsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	limit := searchMaxResults
	if req.NbMaxResults != nil {
		limit = min(max(*req.NbMaxResults, 0), searchMaxResults)
	}
	if req.MinIndex < 0 {
		return s.failure("error.parameter.invalid", "minIndex must not be negative"), nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var matched []*product
	for _, p := range s.cat.products {
		if len(req.Criteria.SeasonIDs) > 0 && !slices.Contains(req.Criteria.SeasonIDs, p.season.ID) ||
			len(req.Criteria.ProductFamilyTypes) > 0 && !slices.Contains(req.Criteria.ProductFamilyTypes, p.ProductFamilyType) {
			continue
		}
		matched = append(matched, p)
	}
	slices.SortFunc(matched, func(a, b *product) int { return cmp.Compare(a.ID, b.ID) })
	start := min(req.MinIndex, len(matched))
	out := []searchedProduct{}
	for _, p := range matched[start:min(start+limit, len(matched))] {
		ev := &searchedEvent{ID: p.Event.ID, Performances: []searchedPerformance{}}
		for _, perf := range p.Event.Performances {
			ev.Performances = append(ev.Performances, searchedPerformance{performance: *perf})
		}
		out = append(out, searchedProduct{product: *p, Event: ev})
	}
	return success("products", out), nil
}

type ticketsRequest struct {
	Criteria *struct {
		ProductID      *int64 `json:"productId"`
		StartDate      string `json:"startDate"`
		EndDate        string `json:"endDate"`
		PointOfSalesID *int64 `json:"pointOfSalesId"`
	} `json:"ticketFilterCriteria"`
	Pagination struct {
		StartPosition int  `json:"startPosition"`
		MaxResult     *int `json:"maxResult"`
	} `json:"paginationParameter"`
}

// parseDate reads the dates clients send: S-360's format, RFC 3339 or a day.
func parseDate(v string) (time.Time, bool) {
	for _, layout := range []string{isoLayout, time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// listTicketsByCriteria lists the tickets of the simulator's orders created
// within the date range, one summary per ticket. As observed on S-360,
// passing pointOfSalesId yields an empty list.
func (s *Server) listTicketsByCriteria(body []byte) (envelope, error) {
	var req ticketsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	c := req.Criteria
	if c == nil || c.StartDate == "" || c.EndDate == "" {
		return s.failure("error.parameter.mandatory", "ticketFilterCriteria with startDate and endDate is mandatory"), nil
	}
	from, ok1 := parseDate(c.StartDate)
	to, ok2 := parseDate(c.EndDate)
	if !ok1 || !ok2 || req.Pagination.StartPosition < 0 {
		return s.failure("error.parameter.invalid", "startDate and endDate must be ISO-8601 dates, startPosition not negative"), nil
	}
	limit := 5000
	if m := req.Pagination.MaxResult; m != nil && *m >= 0 {
		limit = min(*m, 5000)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	all := []map[string]any{}
	for _, o := range s.orderList {
		created, _ := parseDate(o.Created)
		if c.PointOfSalesID != nil || created.Before(from) || created.After(to) {
			continue
		}
		for _, l := range o.Lines {
			if c.ProductID != nil && l.ProductID != *c.ProductID {
				continue
			}
			t := s.ticketSummary(l)
			for range l.Quantity {
				all = append(all, t)
			}
		}
	}
	start := min(req.Pagination.StartPosition, len(all))
	end := min(start+limit, len(all))
	return success("truncated", end < len(all), "ticketSummaries", all[start:end]), nil
}

// ticketSummary describes one ticket of an order line. Called under s.mu.
func (s *Server) ticketSummary(l orderLine) map[string]any {
	t := map[string]any{"ticketState": "VALID", "performanceId": l.PerformanceID, "seatCategoryId": l.SeatCategoryID,
		"audienceSubCategoryId": l.AudienceSubCategoryID, "price": l.UnitPrice}
	perf := s.cat.perfByID[l.PerformanceID]
	for _, ac := range perf.product.season.AudienceCategories {
		for _, sub := range ac.AudienceSubCategories {
			if sub.ID == l.AudienceSubCategoryID {
				t["audienceSubCategory"] = sub.Code
			}
		}
	}
	for _, pr := range perf.Prices {
		if pr.SeatCatID == l.SeatCategoryID && pr.AudSubCatID == l.AudienceSubCategoryID {
			t["priceLevelId"] = pr.PriceLevelID
		}
	}
	return t
}
