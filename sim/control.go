package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// routeControl registers the control API under /_sim/ (no auth, see doc.go).
func (s *Server) routeControl() {
	m := s.mux
	m.HandleFunc("GET /_sim/counters", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, s.counters())
	})
	m.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, r *http.Request) {
		s.resetCounters()
		writeJSON(w, r, http.StatusOK, map[string]bool{"ok": true})
	})
	m.HandleFunc("POST /_sim/setup", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, map[string]string{"lastSetupUpdate": s.bumpSetup()})
	})
	m.HandleFunc("POST /_sim/stock", s.postStock)
	m.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ctl.Lock()
		f := s.faults
		s.ctl.Unlock()
		writeJSON(w, r, http.StatusOK, f)
	})
	m.HandleFunc("POST /_sim/faults", s.postFaults)
	m.HandleFunc("POST /_sim/corrupt", s.postCorrupt)
	m.HandleFunc("GET /_sim/clock", s.serveClock)
	m.HandleFunc("POST /_sim/clock", s.serveClock)
	m.HandleFunc("GET /_sim/fixtures", s.fixtures)
	m.HandleFunc("GET /_sim/orders", func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		b, err := json.Marshal(s.orderList) // under the lock: orders grow in place
		s.mu.RUnlock()
		writeRaw(w, r, b, err)
	})
	m.HandleFunc("GET /_sim/redirects", func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		b, err := json.Marshal(s.redirects)
		s.mu.RUnlock()
		writeRaw(w, r, b, err)
	})
}

func writeRaw(w http.ResponseWriter, r *http.Request, b []byte, err error) {
	if err != nil || bytes.Equal(b, []byte("null")) {
		b = []byte("[]")
	}
	writeJSON(w, r, http.StatusOK, json.RawMessage(b))
}

// decodeStrict reads a control body, rejecting unknown fields to catch typos.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		writeError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return false
	}
	return true
}

func (s *Server) postStock(w http.ResponseWriter, r *http.Request) {
	var in struct {
		PerformanceID  int64 `json:"performanceId"`
		SeatCategoryID int64 `json:"seatCategoryId"`
		Quantity       *int  `json:"quantity"`
	}
	if !decodeStrict(w, r, &in) {
		return
	}
	if in.Quantity == nil || *in.Quantity < 0 {
		writeError(w, r, http.StatusBadRequest, "bad_request", "quantity must be given and not negative")
		return
	}
	now := s.now().Truncate(time.Millisecond)
	s.mu.Lock()
	perf := s.cat.perfByID[in.PerformanceID]
	ok := perf != nil && perf.capacity[in.SeatCategoryID] > 0
	if ok {
		perf.stock[in.SeatCategoryID] = *in.Quantity
		perf.capacity[in.SeatCategoryID] = max(perf.capacity[in.SeatCategoryID], *in.Quantity)
		perf.product.lastUpdate = now
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, r, http.StatusNotFound, "not_found", "unknown performance or seat category")
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"performanceId": in.PerformanceID,
		"seatCategoryId": in.SeatCategoryID, "quantity": *in.Quantity, "lastUpdate": iso(now)})
}

// postFaults applies the fields sent, under the lock so that a call
// consuming a one-shot fault meanwhile is not undone.
func (s *Server) postFaults(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, r, http.StatusRequestEntityTooLarge, "too_large", "request body too large")
		return
	}
	s.ctl.Lock()
	f := s.faults
	in := struct {
		*faults
		ExpireTokens bool `json:"expireTokens"`
	}{faults: &f}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err = d.Decode(&in); err == nil {
		err = f.validate()
	}
	if err == nil {
		s.faults = f
		if in.ExpireTokens {
			s.minToken = s.tokenSeq + 1
		}
	}
	s.ctl.Unlock()
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, f)
}

func (s *Server) serveClock(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var in struct {
			Advance duration `json:"advance"`
		}
		if !decodeStrict(w, r, &in) {
			return
		}
		s.offset.Add(int64(in.Advance))
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"now": iso(s.now())})
}

type fixturePerformance struct {
	ID                     int64   `json:"id"`
	State                  string  `json:"state"`
	SeatCategoryIDs        []int64 `json:"seatCategoryIds"`
	AudienceSubCategoryIDs []int64 `json:"audienceSubCategoryIds"`
}

type fixtureProduct struct {
	ID           int64                `json:"id"`
	Code         string               `json:"code"`
	Name         string               `json:"name"`
	State        string               `json:"state"`
	SeasonCode   string               `json:"seasonCode"`
	Performances []fixturePerformance `json:"performances"`
}

// fixtures lets tests build valid requests without parsing the catalog.
func (s *Server) fixtures(w http.ResponseWriter, r *http.Request) {
	pm := []int{}
	for _, m := range paymentMethods {
		pm = append(pm, m["id"].(int))
	}
	s.mu.RLock()
	products := []fixtureProduct{}
	for _, p := range s.cat.products {
		fp := fixtureProduct{p.ID, p.Code, p.name, p.State, p.season.Code, []fixturePerformance{}}
		for _, perf := range p.Event.Performances {
			fperf := fixturePerformance{ID: perf.ID, State: perf.State}
			for _, sc := range perf.SeatCategories {
				fperf.SeatCategoryIDs = append(fperf.SeatCategoryIDs, sc.ID)
			}
			for _, ac := range p.season.AudienceCategories {
				for _, sub := range ac.AudienceSubCategories {
					fperf.AudienceSubCategoryIDs = append(fperf.AudienceSubCategoryIDs, sub.ID)
				}
			}
			fp.Performances = append(fp.Performances, fperf)
		}
		products = append(products, fp)
	}
	s.mu.RUnlock()
	writeJSON(w, r, http.StatusOK, map[string]any{"institution": s.cfg.Institution, "posId": s.posID,
		"paymentMethodIds": pm, "products": products})
}
