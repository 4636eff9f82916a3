package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestAuth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, func(c *Config) { c.TokenTTL = 30 * time.Second })
		tok := h.login()
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("token %q is not a JWT", tok)
		}
		var hdr, c map[string]any
		for i, v := range []*map[string]any{&hdr, &c} {
			b, err := base64.RawURLEncoding.DecodeString(parts[i])
			if err != nil || json.Unmarshal(b, v) != nil {
				t.Fatalf("part %d: %v", i, err)
			}
		}
		if hdr["alg"] != "HS256" || c["sub"] != "MOSA" || c["aud"] != "MOSA_WEB" || c["iss"] != "test" ||
			num(c["iat"]) != t0.Unix() || num(c["exp"]) != t0.Add(30*time.Second).Unix() {
			t.Errorf("header %v claims %v", hdr, c)
		}
		h.ok("catalogService/isCatalogServiceAlive", "{}")

		// The older /tnco path and a missing partner are accepted.
		r := h.do("POST", "/tnco/backend-apis/v1/auth", `{"operator":"MOSA_WEB","secret":"sim-secret"}`, "Content-Type: application/json")
		if r.status != 200 {
			t.Errorf("tnco auth: %d %s", r.status, r.body)
		}
		for _, body := range []string{`{"operator":"MOSA_WEB","secret":"nope"}`, `{"operator":"OTHER","secret":"sim-secret"}`, `{}`, `{"operator":1}`} {
			r := h.do("POST", "/tnai/backend-apis/v1/auth", body, "Content-Type: application/json")
			if m := r.json(t); r.status != 401 || m["error"] != "invalid_credentials" {
				t.Errorf("%s: %d %s", body, r.status, r.body)
			}
		}

		bearer := func(auth string) response {
			return h.do("POST", "/tnseb/backend-apis/catalogService/v1_33/isCatalogServiceAlive", "{}",
				"Content-Type: application/json", "Authorization: "+auth)
		}
		foreign := h.s.forge(claims{Sub: "OTHER", Exp: t0.Add(time.Hour).Unix()})
		for name, auth := range map[string]string{
			"missing": "", "basic": "Basic " + tok, "garbage": "Bearer abc", "bad signature": "Bearer " + tok[:len(tok)-2] + "xx",
			"foreign institution": "Bearer " + foreign, "other simulator": "Bearer " + newMemSim(t, nil).login(),
		} {
			if r := bearer(auth); r.status != 401 || r.json(t)["error"] != "invalid_token" {
				t.Errorf("%s: %d %s", name, r.status, r.body)
			}
		}

		time.Sleep(29 * time.Second)
		if r := bearer("Bearer " + tok); r.status != 200 {
			t.Errorf("token before exp: %d", r.status)
		}
		time.Sleep(time.Second)
		if r := bearer("Bearer " + tok); r.status != 401 || r.json(t)["error"] != "token_expired" {
			t.Errorf("expired token: %d %s", r.status, r.body)
		}
	})
}

// forge signs claims with the simulator's key, for tests.
func (s *Server) forge(c claims) string {
	payload, _ := json.Marshal(c)
	unsigned := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	return unsigned + "." + s.sign(unsigned)
}

func TestTransport(t *testing.T) {
	h := newSim(t, nil)
	tok := h.login()
	const alive = "/tnseb/backend-apis/catalogService/v1_33/isCatalogServiceAlive"
	ct, auth := "Content-Type: application/json", "Authorization: Bearer "+tok
	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		errCode                  string
	}{
		{"GET", "GET", alive, "", []string{auth}, 405, "method_not_allowed"},
		{"PUT", "PUT", alive, "{}", []string{ct, auth}, 405, "method_not_allowed"},
		{"no content type", "POST", alive, "{}", []string{auth}, 415, "unsupported_media_type"},
		{"text content type", "POST", alive, "{}", []string{"Content-Type: text/plain", auth}, 415, "unsupported_media_type"},
		{"empty body", "POST", alive, "", []string{ct, auth}, 400, "bad_request"},
		{"array body", "POST", alive, "[]", []string{ct, auth}, 400, "bad_request"},
		{"null body", "POST", alive, "null", []string{ct, auth}, 400, "bad_request"},
		{"broken JSON", "POST", alive, "{", []string{ct, auth}, 400, "bad_request"},
		{"unknown method", "POST", "/tnseb/backend-apis/catalogService/v1_33/nope", "{}", []string{ct, auth}, 404, "unknown_method"},
		{"bad version", "POST", "/tnseb/backend-apis/catalogService/latest/getPOSConfig", "{}", []string{ct, auth}, 404, "not_found"},
		{"short path", "POST", "/tnseb/backend-apis/catalogService", "{}", []string{ct, auth}, 404, "not_found"},
		{"elsewhere", "GET", "/nothing", "", nil, 404, "not_found"},
		{"wrong type", "POST", "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", `{"seasonCode":5}`, []string{ct, auth}, 400, "bad_request"},
		{"old version, charset", "POST", "/tnseb/backend-apis/catalogService/v1_16/isCatalogServiceAlive", "{}", []string{"Content-Type: application/json; charset=utf-8", auth}, 200, ""},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, c.body, c.headers...)
		if r.status != c.status || (c.errCode != "" && r.json(t)["error"] != c.errCode) {
			t.Errorf("%s: got %d %s, want %d %s", c.name, r.status, r.body, c.status, c.errCode)
		}
	}

	// requestId is echoed in every envelope, as sent.
	if m := h.ok("catalogService/getPOSConfig", `{"requestId": 42}`); num(m["requestId"]) != 42 {
		t.Errorf("requestId: %v", m["requestId"])
	}
	if m := h.ok("catalogService/getPOSConfig", `{}`); m["requestId"] != nil {
		t.Errorf("requestId without one: %v", m["requestId"])
	}
}

func TestGzip(t *testing.T) {
	h := newSim(t, nil)
	h.login()
	path := "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed"
	plain := h.do("POST", path, "{}", "Content-Type: application/json", "Authorization: Bearer "+h.token)
	zipped := h.do("POST", path, "{}", "Content-Type: application/json", "Authorization: Bearer "+h.token,
		"Accept-Encoding: gzip, deflate")
	if plain.header.Get("Content-Encoding") != "" || zipped.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding plain %q zipped %q", plain.header.Get("Content-Encoding"), zipped.header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped.body))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, plain.body) || len(zipped.body) >= len(plain.body) {
		t.Errorf("gzip body: err %v, %d zipped bytes, %d plain bytes, equal %v", err, len(zipped.body), len(plain.body), bytes.Equal(unzipped, plain.body))
	}
	if r := h.do("POST", path, "{}", "Content-Type: application/json", "Authorization: Bearer "+h.token, "Accept-Encoding: gzip;q=0"); r.header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 must not be gzipped")
	}
}

func TestCatalog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemSim(t, func(c *Config) { c.Products = 40; c.SetupField = "lastUpdate" })
		f := h.fixtures()
		states := map[string]int{}
		for _, p := range f.Products {
			states[p.State]++
		}
		if states["RUNNING"] == 0 || states["CLOSED"]+states["CANCELED"] == 0 {
			t.Fatalf("want running and closed products in 40, got %v", states)
		}
		products := func(m map[string]any) map[string]map[string]any {
			out := map[string]map[string]any{}
			for _, se := range path(m, "catalogData", "seasons").([]any) {
				for _, p := range path(se, "products").([]any) {
					out[path(p, "code").(string)] = p.(map[string]any)
				}
			}
			return out
		}

		std := products(h.ok("catalogService/getCatalogDetailed", "{}"))
		ext := products(h.ok("catalogService/getCatalogDetailed", `{"scope":"EXTENDED"}`))
		if len(ext) != 40 || len(std) != states["RUNNING"]+states["SUSPENDED"] {
			t.Errorf("standard scope %d products, extended %d, states %v", len(std), len(ext), states)
		}
		for code, p := range std {
			if st := p["state"]; st != "RUNNING" && st != "SUSPENDED" {
				t.Errorf("%s in standard scope with state %v", code, st)
			}
		}

		// Shape of §5.1.
		p := std[f.Products[0].Code]
		if num(p["id"]) != f.Products[0].ID || p["productFamilyType"] != "SINGLE_ENTRY" || num(p["vatCodeId"]) < 1e13 ||
			path(p, "externalName", "translations", 0, "locale") != "en" || path(p, "externalName", "translations", 1, "locale") != "fr" ||
			path(p, "externalName", "translations", 0, "value") != f.Products[0].Name {
			t.Errorf("product 0: %v", p)
		}
		perf := path(p, "event", "performances", 0)
		start, err := time.Parse(time.RFC3339, path(perf, "start").(string))
		if err != nil || !start.After(t0) || num(path(perf, "duration")) < 3600 || num(path(perf, "id")) != f.Products[0].Performances[0].ID {
			t.Errorf("performance: %v (%v)", perf, err)
		}
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0[12]:00$`).MatchString(path(perf, "start").(string)) {
			t.Errorf("start %v: want milliseconds and the Paris offset", path(perf, "start"))
		}
		pr := path(perf, "prices", 0).(map[string]any)
		if num(pr["amount"]) < 1000 || num(pr["amount"])%500 != 0 || num(pr["seatCatId"]) == 0 || num(pr["audSubCatId"]) == 0 || num(pr["priceLevelId"]) == 0 {
			t.Errorf("price %v", pr)
		}
		if path(perf, "seatCategories", 0, "code") != "CAT1" {
			t.Errorf("seat categories %v", path(perf, "seatCategories"))
		}
		m := h.ok("catalogService/getCatalogDetailed", map[string]any{"seasonCode": f.Products[1].SeasonCode})
		if se := path(m, "catalogData", "seasons").([]any); len(se) != 1 || len(path(se[0], "audienceCategories", 0, "audienceSubCategories").([]any)) == 0 ||
			len(path(se[0], "priceLevels").([]any)) == 0 {
			t.Errorf("seasonCode filter: %v seasons", len(se))
		}
		m = h.ok("catalogService/getCatalogDetailed", map[string]any{"productCode": f.Products[3].Code, "scope": "EXTENDED"})
		if got := products(m); len(got) != 1 || got[f.Products[3].Code] == nil {
			t.Errorf("productCode filter: %v", got)
		}
		if got := products(h.ok("catalogService/getCatalogDetailed", `{"productCode":"NOPE"}`)); len(got) != 0 {
			t.Errorf("unknown productCode: %v", got)
		}

		xml := h.ok("catalogService/getCatalog", "{}")["catalogData"].(string)
		if !strings.HasPrefix(xml, "<?xml") || !strings.Contains(xml, f.Products[0].Code) {
			t.Errorf("getCatalog: %.200s", xml)
		}

		pos := h.ok("catalogService/getPOSConfig", "{}")["posConfigData"].(map[string]any)
		if num(pos["posId"]) != f.PosID || pos["currencyCode"] != "EUR" || pos["organizationTimeZone"] != "Europe/Paris" ||
			num(path(pos, "paymentMethods", 0, "id")) != f.PaymentMethodIDs[0] {
			t.Errorf("getPOSConfig: %v", pos)
		}

		// /_sim/setup changes the catalog and moves getLastSetupUpdate.
		before := h.ok("catalogService/getLastSetupUpdate", "{}")["lastUpdate"].(string)
		if before != "2025-11-10T10:00:00.000+01:00" {
			t.Errorf("lastSetupUpdate %q", before)
		}
		bumped := h.control("POST", "/_sim/setup", "")["lastSetupUpdate"]
		after := h.ok("catalogService/getLastSetupUpdate", "{}")["lastUpdate"]
		if after == before || after != bumped {
			t.Errorf("lastSetupUpdate before %v after %v bumped %v", before, after, bumped)
		}
		p2 := products(h.ok("catalogService/getCatalogDetailed", "{}"))[f.Products[0].Code]
		if path(p2, "externalName", "translations", 0, "value") != f.Products[0].Name+" v2" ||
			num(path(p2, "event", "performances", 0, "prices", 0, "amount")) != num(pr["amount"])+1000 {
			t.Errorf("after setup: %v", path(p2, "externalName"))
		}
		h.control("POST", "/_sim/setup", "")
		if name := h.fixtures().Products[0].Name; name != f.Products[0].Name+" v3" {
			t.Errorf("second setup: %q", name)
		}
	})
}

func TestInProgress(t *testing.T) {
	h := newSim(t, func(c *Config) { c.InProgress = 1; c.CatalogFloor = 10 * time.Minute })
	h.control("POST", "/_sim/faults", `{"inProgress": 2}`)
	for i := range 2 {
		m := h.call("catalogService/getCatalogDetailed", `{"requestId": 7}`).json(t)
		if m["statusCode"] != "in_progress" || m["catalogData"] != nil || num(m["requestId"]) != 7 {
			t.Fatalf("call %d: %v", i, m)
		}
	}
	// in_progress answers do not use up the floor.
	h.ok("catalogService/getCatalogDetailed", "{}")
	if r := h.call("catalogService/getCatalogDetailed", "{}"); r.status != 509 {
		t.Errorf("floor after success: %d", r.status)
	}
}

func TestLatency(t *testing.T) {
	h := newSim(t, func(c *Config) { c.CatalogLatency = 30 * time.Millisecond })
	h.login()
	start := time.Now()
	h.ok("catalogService/getPOSConfig", "{}")
	fast := time.Since(start)
	start = time.Now()
	h.ok("catalogService/getCatalogDetailed", "{}")
	if slow := time.Since(start); slow < 30*time.Millisecond {
		t.Errorf("catalog latency: %v (getPOSConfig %v)", slow, fast)
	}
	h.control("POST", "/_sim/faults", `{"latency": "20ms", "catalogLatency": "0s"}`)
	start = time.Now()
	h.ok("catalogService/getPOSConfig", "{}")
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("latency fault: %v", d)
	}
}
