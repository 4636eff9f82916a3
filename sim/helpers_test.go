package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// t0 is the simulated start time of every test simulator.
var t0 = time.Date(2025, 11, 10, 9, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	s     *Server
	srv   *httptest.Server // nil: requests are served in memory
	token string
}

// newSim starts a simulator on a loopback port without limits or floors, with
// day-long tokens, unless mod says otherwise. Its clock is the real one.
func newSim(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	h := newMemSim(t, mod)
	h.srv = httptest.NewServer(h.s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

// newMemSim is newSim serving requests in memory, for tests inside a
// synctest bubble: its clock starts at t0 and time.Sleep moves it exactly,
// which network I/O would prevent (it does not count as durably blocked).
func newMemSim(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RateLimit, cfg.CatalogFloor, cfg.AvailabilityFloor = 0, 0, 0
	cfg.TokenTTL = 24 * time.Hour // tests advance the clock; TestAuth sets 30s
	if mod != nil {
		mod(&cfg)
	}
	time.Sleep(time.Until(t0)) // a bubble starts in 2000; its fake time gets there at once
	return &harness{t: t, s: New(cfg)}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body is not a JSON object: %v: %.200s", r.status, err, r.body)
	}
	return m
}

// do sends a raw request; headers are "Name: value" strings.
func (h *harness) do(method, path, body string, headers ...string) response {
	h.t.Helper()
	base := "http://sim.test"
	if h.srv != nil {
		base = h.srv.URL
	}
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for _, hv := range headers {
		k, v, _ := strings.Cut(hv, ": ")
		req.Header.Set(k, v)
	}
	if h.srv == nil {
		w := httptest.NewRecorder()
		h.s.Handler().ServeHTTP(w, req)
		return response{w.Code, w.Result().Header, w.Body.Bytes()}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func mustJSON(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (h *harness) login() string {
	h.t.Helper()
	r := h.do("POST", "/tnai/backend-apis/v1/auth", `{"operator":"MOSA_WEB","partner":"test","secret":"sim-secret"}`,
		"Content-Type: application/json")
	if r.status != 200 {
		h.t.Fatalf("auth: %d %s", r.status, r.body)
	}
	h.token = r.json(h.t)["token"].(string)
	return h.token
}

// call posts body to a tnseb method ("service/method"), logging in first if needed.
func (h *harness) call(key string, body any) response {
	h.t.Helper()
	if h.token == "" {
		h.login()
	}
	service, method, _ := strings.Cut(key, "/")
	return h.do("POST", "/tnseb/backend-apis/"+service+"/v1_33/"+method, mustJSON(body),
		"Content-Type: application/json", "Authorization: Bearer "+h.token)
}

// ok calls and requires an HTTP 200 success envelope.
func (h *harness) ok(key string, body any) map[string]any {
	h.t.Helper()
	r := h.call(key, body)
	m := r.json(h.t)
	if r.status != 200 || m["statusCode"] != "success" {
		h.t.Fatalf("%s: %d %.300s", key, r.status, r.body)
	}
	return m
}

func (h *harness) control(method, path string, body any) map[string]any {
	h.t.Helper()
	r := h.do(method, path, mustJSON(body), "Content-Type: application/json")
	if r.status != 200 {
		h.t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	var m map[string]any
	if bytes.HasPrefix(r.body, []byte("{")) {
		m = r.json(h.t)
	}
	return m
}

type fixtures struct {
	Institution      string  `json:"institution"`
	PosID            int64   `json:"posId"`
	PaymentMethodIDs []int64 `json:"paymentMethodIds"`
	Products         []struct {
		ID           int64  `json:"id"`
		Code         string `json:"code"`
		Name         string `json:"name"`
		State        string `json:"state"`
		SeasonCode   string `json:"seasonCode"`
		Performances []struct {
			ID                     int64   `json:"id"`
			State                  string  `json:"state"`
			SeatCategoryIDs        []int64 `json:"seatCategoryIds"`
			AudienceSubCategoryIDs []int64 `json:"audienceSubCategoryIds"`
		} `json:"performances"`
	} `json:"products"`
}

func (h *harness) fixtures() fixtures {
	h.t.Helper()
	r := h.do("GET", "/_sim/fixtures", "")
	var f fixtures
	if err := json.Unmarshal(r.body, &f); err != nil || r.status != 200 {
		h.t.Fatalf("fixtures: %d %v", r.status, err)
	}
	return f
}

// line is one singleEntryAttributionOperation.
func line(perf, seatCat, audSub int64, n int) map[string]any {
	return map[string]any{"performanceId": perf, "seatCategoryId": seatCat, "audienceSubCategoryId": audSub, "quantity": n}
}

func orderBody(pos int64, lines ...map[string]any) map[string]any {
	return map[string]any{"pointOfSalesId": pos, "orderType": "SALE", "isResumeAllOptionOperations": false,
		"isResumeAllReservationOperations": false, "singleEntryAttributionOperations": lines}
}

// firstLine is a valid order line on product 0 (always RUNNING).
func (f fixtures) firstLine(n int) map[string]any {
	p := f.Products[0].Performances[0]
	return line(p.ID, p.SeatCategoryIDs[0], p.AudienceSubCategoryIDs[0], n)
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func path(m any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			mm, _ := m.(map[string]any)
			m = mm[k]
		case int:
			a, _ := m.([]any)
			if k >= len(a) {
				return nil
			}
			m = a[k]
		}
	}
	return m
}

func jsonInto(b []byte, v any) error { return json.Unmarshal(b, v) }
