package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// serve calls the handler directly, so that a panic fails the test.
func serve(s *Server, method, target, body string, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for _, hv := range headers {
		k, v, _ := strings.Cut(hv, ": ")
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func garbageBodies(pos int64) []string {
	p := fmt.Sprint(pos)
	return []string{
		`{}`, `{"requestId":"abc"}`, `{"requestId":{"x":[1]}}`, `{"requestId":1e999}`,
		`{"pointOfSalesId":null}`, `{"pointOfSalesId":"x"}`, `{"pointOfSalesId":1e400}`, `{"pointOfSalesId":-1}`,
		`{"pointOfSalesId":` + p + `,"performanceIds":[null,"a",{}]}`,
		`{"pointOfSalesId":` + p + `,"performanceIds":[0,-1,9223372036854775807],"seatCategoryIds":[-1,-1,0]}`,
		`{"pointOfSalesId":` + p + `,"performanceIds":[1],"seatCategoryIds":null}`,
		`{"pointOfSalesId":` + p + `,"productIds":{}}`, `{"pointOfSalesId":` + p + `,"productIds":[-9]}`,
		`{"pointOfSalesId":` + p + `,"performanceId":-5,"seatCategoryId":-1}`,
		`{"pointOfSalesId":` + p + `,"productIds":[1],"referenceDate":"9999-99-99T99:99:99Z"}`,
		`{"pointOfSalesId":` + p + `,"productIds":[1],"referenceDate":12}`,
		`{"seasonCode":"` + strings.Repeat("é", 300) + `","productCode":"\u0000","scope":"EXTENDED"}`,
		`{"scope":["EXTENDED"]}`,
		`{"pointOfSalesId":` + p + `,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,` +
			`"singleEntryAttributionOperations":[null,{},{"quantity":9223372036854775807},{"quantity":-3}]}`,
		`{"pointOfSalesId":` + p + `,"orderType":"SALE","isResumeAllOptionOperations":"no","isResumeAllReservationOperations":0}`,
		`{"pointOfSalesId":` + p + `,"orderId":-1,"orderType":"SALE","isResumeAllOptionOperations":false,"isResumeAllReservationOperations":false,"singleEntryAttributionOperations":[{"quantity":1}]}`,
		`{"singleEntryAttributionOperations":"all"}`, `{"composedProductOperations":[1,2]}`,
		`{"operator":["MOSA_WEB"],"secret":{"a":1}}`,
		strings.Repeat(`{"a":`, 20000) + strings.Repeat(`}`, 20000),
		"{\"a\":\"\xff\xfe\"}", "\x00\x01", `{"a":1,"a":2}`, `  {}  `, `{} {}`,
	}
}

func TestGarbage(t *testing.T) {
	s := New(Config{Products: 30, RateLimit: 0})
	tok := s.forge(claims{Sub: "MOSA", Exp: s.now().Unix() + 3600})
	keys := []string{"auth", "nope/nope", "catalogService/nope"}
	for k := range methods {
		keys = append(keys, k)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	bodies := garbageBodies(s.posID)
	for range 30 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		bodies = append(bodies, string(b))
	}
	for _, key := range keys {
		path := "/tnai/backend-apis/v1/auth"
		if service, method, ok := strings.Cut(key, "/"); ok {
			path = "/tnseb/backend-apis/" + service + "/v1_33/" + method
		}
		for _, body := range bodies {
			rec := serve(s, "POST", path, body, "Content-Type: application/json", "Authorization: Bearer "+tok)
			if rec.Code >= 500 || !json.Valid(rec.Body.Bytes()) {
				t.Errorf("%s %.60q: %d %.200s", key, body, rec.Code, rec.Body.Bytes())
			}
		}
	}
	if rec := serve(s, "POST", "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", `{"a":"`+strings.Repeat("x", 2<<20)+`"}`,
		"Content-Type: application/json"); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d", rec.Code)
	}

	for _, target := range []string{
		"/tnseb/backend-apis/a/v1_/b", "/tnseb/backend-apis/a/v_1/b", "/tnseb/backend-apis//v1_1/b", "/tnseb/backend-apis/a/v1_1/b/c",
		"/tnseb/", "/tnai/backend-apis/v1/auth/x", "/api/1/redirect/cart?orderId=99999999999999999999999",
		"/api/1/redirect/cart?orderId=%ZZ", "/api/1/redirect/", "/shop/cart?orderId=-1", "/shop/", "/shop/checkout",
		"/_sim/nope", "/%2e%2e/etc/passwd",
	} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			if rec := serve(s, m, target, "{}", "Content-Type: application/json"); rec.Code >= 500 {
				t.Errorf("%s %s: %d", m, target, rec.Code)
			}
		}
	}
	for _, target := range []string{"/_sim/stock", "/_sim/faults", "/_sim/clock", "/_sim/setup", "/_sim/reset"} {
		for _, body := range slices.Concat(bodies[:10], []string{`{"advance":"-1h"}`, `{"advance":"1000000000h"}`, `{"quantity":-1}`, `{"rateWindow":"1ns"}`}) {
			if rec := serve(s, "POST", target, body); rec.Code >= 500 {
				t.Errorf("POST %s %.60q: %d", target, body, rec.Code)
			}
		}
	}
}

// FuzzAPI: `go test -fuzz FuzzAPI ./sim` explores further; plain test runs the seeds.
func FuzzAPI(f *testing.F) {
	s := New(Config{Products: 5, RateLimit: 0})
	tok := s.forge(claims{Sub: "MOSA", Exp: s.now().Unix() + 3600})
	for _, b := range garbageBodies(s.posID)[:20] {
		f.Add("availabilityService/getEventAvailability", b)
		f.Add("externalOrderFacade/createOrUpdateOrder", b)
	}
	f.Fuzz(func(t *testing.T, key, body string) {
		service, method, _ := strings.Cut(key, "/")
		rec := serve(s, "POST", "/tnseb/backend-apis/"+url.PathEscape(service)+"/v1_2/"+url.PathEscape(method), body, "Content-Type: application/json", "Authorization: Bearer "+tok)
		if rec.Code >= 500 {
			t.Errorf("%d", rec.Code)
		}
	})
}

// TestCatalogSize: -products 3000 gives a body of about 10 MiB, and
// ProductsForMB agrees.
func TestCatalogSize(t *testing.T) {
	n := ProductsForMB(10, 1)
	if n < 2400 || n > 3300 {
		t.Errorf("ProductsForMB(10) = %d", n)
	}
	s := New(Config{Products: 3000, RateLimit: 0, CatalogFloor: 0})
	tok := s.forge(claims{Sub: "MOSA", Exp: s.now().Unix() + 3600})
	rec := serve(s, "POST", "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", "{}",
		"Content-Type: application/json", "Authorization: Bearer "+tok)
	size := float64(rec.Body.Len()) / (1 << 20)
	t.Logf("3000 products: %.2f MiB; ProductsForMB(10) = %d", size, n)
	if rec.Code != 200 || size < 8 || size > 14 || !bytes.Contains(rec.Body.Bytes(), []byte(`"statusCode":"success"`)) {
		t.Errorf("status %d, %.2f MiB", rec.Code, size)
	}
}
