package s360

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	cl := Classifier{Extra: []string{"externalOrderHistoryService/listTicketsByCriteria", "contactService/*"}}
	cases := []struct {
		name  string
		path  string
		ok    bool
		class Class
	}{
		{"catalog", "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", true, Catalog},
		{"pos config", "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", true, Catalog},
		{"setup feed", "/tnseb/backend-apis/catalogService/v1_33/getLastSetupUpdate", true, Uncached},
		{"health", "/tnseb/backend-apis/catalogService/v1_33/isCatalogServiceAlive", true, Uncached},
		{"availability", "/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability", true, Availability},
		{"availability feed", "/tnseb/backend-apis/availabilityService/v1_19/getUpdatedAvailabilities", true, Uncached},
		{"order", "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder", true, Order},
		{"setup read", "/tnseb/backend-apis/setupService/v1_33/listSeasons", true, Catalog},
		{"operator allowed", "/tnseb/backend-apis/externalOrderHistoryService/v1_34/listTicketsByCriteria", true, Uncached},
		{"operator wildcard", "/tnseb/backend-apis/contactService/v2_21/anything", true, Uncached},
		{"other write", "/tnseb/backend-apis/externalOrderFacade/v1_33/createPaymentsAndCloseOrder", true, Denied},
		{"catalog wildcard gone", "/tnseb/backend-apis/catalogService/v1_33/deleteEverything", true, Denied},
		{"availability wildcard gone", "/tnseb/backend-apis/availabilityService/v1_33/setStock", true, Denied},
		{"setup write", "/tnseb/backend-apis/setupService/v1_33/updateSeason", true, Denied},
		{"unnamed setup read", "/tnseb/backend-apis/setupService/v1_33/listEverything", true, Denied},
		{"version without minor", "/tnseb/backend-apis/catalogService/v1/getCatalog", true, Denied},
		{"version with suffix", "/tnseb/backend-apis/catalogService/v1_33x/getCatalog", true, Denied},
		{"version without digits", "/tnseb/backend-apis/catalogService/v_33/getCatalog", true, Denied},
		{"version twice split", "/tnseb/backend-apis/catalogService/v1_3_3/getCatalog", true, Denied},
		{"version named", "/tnseb/backend-apis/catalogService/latest/getCatalog", true, Denied},
		{"odd version of allowed name", "/tnseb/backend-apis/contactService/V1_1/anything", true, Denied},
		{"version with dot", "/tnseb/backend-apis/catalogService/v1.33/getCatalog", false, Denied},
		{"no method", "/tnseb/backend-apis/catalogService/v1_33", false, Denied},
		{"extra segment", "/tnseb/backend-apis/catalogService/v1_33/getCatalog/extra", false, Denied},
		{"dot dot", "/tnseb/backend-apis/catalogService/v1_33/../../x/v1_1/y", false, Denied},
		{"dot dot to allowed", "/tnseb/backend-apis/x/v1_33/../../catalogService/v1_33/getCatalog", false, Denied},
		{"dot segment", "/tnseb/backend-apis/./catalogService/v1_33/getCatalog", false, Denied},
		{"double slash", "/tnseb/backend-apis//catalogService/v1_33/getCatalog", false, Denied},
		{"trailing slash", "/tnseb/backend-apis/catalogService/v1_33/getCatalog/", false, Denied},
		{"encoded slash kept", "/tnseb/backend-apis/catalog%2FService/v1_33/getCatalog", false, Denied},
		{"website path", "/index.html", false, Denied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			call, ok := cl.Classify(c.path)
			if ok != c.ok || call.Class != c.class {
				t.Errorf("Classify(%q) = %v %v, want %v %v", c.path, call.Class, ok, c.class, c.ok)
			}
			if ok && call.Path() != c.path {
				t.Errorf("Path() = %q, want %q", call.Path(), c.path)
			}
		})
	}
}

// TestDefaultAllowList pins the built-in list: each read method docs/S360.md
// names ("Methods"), and the order, is allowed with its class, and nothing
// else is.
func TestDefaultAllowList(t *testing.T) {
	want := map[string]Class{
		"catalogService/getCatalog":                        Catalog,
		"catalogService/getCatalogDetailed":                Catalog,
		"catalogService/getPOSConfig":                      Catalog,
		"catalogService/getLastSetupUpdate":                Uncached,
		"catalogService/isCatalogServiceAlive":             Uncached,
		"setupService/listSeasons":                         Catalog,
		"setupService/listAudienceSubCategories":           Catalog,
		"setupService/listPriceLevels":                     Catalog,
		"setupService/listVatCodes":                        Catalog,
		"setupService/searchProductsByCriteria":            Catalog,
		"availabilityService/getEventAvailability":         Availability,
		"availabilityService/getPerformanceAvailability":   Availability,
		"availabilityService/getProductAvailability":       Availability,
		"availabilityService/getSeatsAvailability":         Availability,
		"availabilityService/getAvailableThemeAndLanguage": Availability,
		"availabilityService/getUpdatedAvailabilities":     Uncached,
		"externalOrderFacade/createOrUpdateOrder":          Order,
	}
	for name, class := range want {
		t.Run(name, func(t *testing.T) {
			service, method, _ := strings.Cut(name, "/")
			c, ok := Classifier{}.Classify(APIPrefix + service + "/v1_33/" + method)
			if !ok || c.Class != class {
				t.Errorf("got %v %v, want %v", c.Class, ok, class)
			}
		})
	}
	got := DefaultMethods()
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is on the built-in list but not in this test", name)
		}
		if strings.Contains(name, "*") {
			t.Errorf("wildcard %s on the built-in list", name)
		}
	}
	for _, name := range []string{"externalOrderHistoryService/listTicketsByCriteria", "catalogService/deleteEverything", "availabilityService/setStock"} {
		service, method, _ := strings.Cut(name, "/")
		if c, _ := (Classifier{}).Classify(APIPrefix + service + "/v1_33/" + method); c.Class != Denied {
			t.Errorf("%s: %v by default, want denied", name, c.Class)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"*", "a/b", "a/*", "setupService/listSeasons"} {
		if !ValidPattern(p) {
			t.Errorf("ValidPattern(%q) = false", p)
		}
	}
	for _, p := range []string{"", "a", "a/", "/b", "a/b/c", "*/b", "a b/c"} {
		if ValidPattern(p) {
			t.Errorf("ValidPattern(%q) = true", p)
		}
	}
}

func TestCanonical(t *testing.T) {
	same := []string{
		`{"b":1,"a":[1,2,{"y":"x","x":null}],"requestId":7}`,
		"{ \"a\" : [ 1 , 2 , { \"x\" : null , \"y\" : \"x\" } ] ,\n\t\"b\" : 1 }",
		`{"requestId":99,"a":[1,2,{"x":null,"y":"\u0078"}],"b":1}`,
	}
	want := `{"a":[1,2,{"x":null,"y":"x"}],"b":1}`
	for _, s := range same {
		got, err := Canonical([]byte(s))
		if err != nil || string(got) != want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", s, got, err, want)
		}
	}
	differ := []string{`{"a":[2,1,{"x":null,"y":"x"}],"b":1}`, `{"a":[1,2,{"x":null,"y":"x"}],"b":1.0}`, `{"a":[1,2,{"y":"x"}],"b":1}`, `{"a":[1,2,{"x":null,"y":"x","requestId":1}],"b":1}`}
	for _, s := range differ {
		got, err := Canonical([]byte(s))
		if err != nil || string(got) == want {
			t.Errorf("Canonical(%s) = %s, %v; want something else than %s", s, got, err, want)
		}
	}
	if got, _ := Canonical([]byte(`{"html":"<a&b>"}`)); string(got) != `{"html":"<a&b>"}` {
		t.Errorf("HTML escaped: %s", got)
	}
	for _, bad := range []string{``, `{`, `[]`, `"x"`, `12`, `null`, `{"a":1} {"b":2}`, `{"a":1}x`, "\xff"} {
		if _, err := Canonical([]byte(bad)); err == nil {
			t.Errorf("Canonical(%q) accepted", bad)
		}
	}
}

func TestKey(t *testing.T) {
	c := Call{Service: "catalogService", Version: "v1_33", Method: "getCatalogDetailed"}
	k1 := Key("MOSA", c, []byte(`{}`))
	c.Version = "v1_34"
	if k2 := Key("MOSA", c, []byte(`{}`)); k1 == k2 {
		t.Error("version not in key")
	}
	if Key("PLAY", c, []byte(`{}`)) == Key("MOSA", c, []byte(`{}`)) {
		t.Error("institution not in key")
	}
}

func TestParseKeyRoundTrip(t *testing.T) {
	c := Call{Service: "availabilityService", Version: "v1_33", Method: "getEventAvailability", Class: Availability}
	body := []byte(`{"a":"x|y"}`)
	inst, got, ok := ParseKey(Key("mosa.ws.secutix.com", c, body))
	if !ok || inst != "mosa.ws.secutix.com" || got != c {
		t.Fatalf("ParseKey = %q %+v %v", inst, got, ok)
	}
	for _, bad := range []string{"", "mosa", "mosa|catalogService/getCatalog", "mosa|catalogService/getCatalog|{}",
		"mosa|catalogService/v1_33/getCatalog|{}", // the format before the hash
		"mosa|catalogService/v1_33/getCatalog|" + strings.Repeat("A", 64)} {
		if _, _, ok := ParseKey(bad); ok {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestKeyIsFixedSize(t *testing.T) {
	c := Call{Service: "catalogService", Version: "v1_33", Method: "getCatalogDetailed", Class: Catalog}
	const want = len("mosa|catalogService/v1_33/getCatalogDetailed|") + 64
	for name, body := range map[string][]byte{
		"empty":        []byte(`{}`),
		"1 MiB":        []byte(`{"x":"` + strings.Repeat("y", 1<<20) + `"}`),
		"key-like bar": []byte(`{"a":"|b|c"}`),
	} {
		t.Run(name, func(t *testing.T) {
			if k := Key("mosa", c, body); len(k) != want {
				t.Errorf("len(Key) = %d, want %d", len(k), want)
			}
		})
	}
	if Key("mosa", c, []byte(`{"a":1}`)) == Key("mosa", c, []byte(`{"a":2}`)) {
		t.Error("different bodies share a key")
	}
}

func TestSuccess(t *testing.T) {
	if !Success(200, []byte(`{"statusCode":"success"}`)) {
		t.Error("success not recognised")
	}
	for _, b := range []string{`{"statusCode":"in_progress"}`, `{"statusCode":"error"}`, `{}`, `not json`} {
		if Success(200, []byte(b)) {
			t.Errorf("%s counted as success", b)
		}
	}
	if Success(509, []byte(`{"statusCode":"success"}`)) {
		t.Error("509 counted as success")
	}
}

func TestCanonicalMemo(t *testing.T) {
	var m CanonicalMemo
	for range 2 {
		got, err := m.Canonical([]byte(`{"b":1,"a":2,"requestId":3}`))
		if err != nil || string(got) != `{"a":2,"b":1}` {
			t.Fatalf("memo: %s %v", got, err)
		}
	}
	if _, err := m.Canonical([]byte(`{"a":`)); err == nil {
		t.Fatal("invalid body accepted")
	}
	if _, err := m.Canonical([]byte(`{"a":`)); err == nil {
		t.Fatal("invalid body accepted from the memo")
	}
	// Filling the memo past its bound keeps answers right and memory bounded.
	for i := range memoMaxEntries + 10 {
		body := []byte(`{"n":` + strconv.Itoa(i) + `}`)
		if got, _ := m.Canonical(body); string(got) != string(body) {
			t.Fatalf("entry %d: %s", i, got)
		}
	}
	if n := len(m.m); n > memoMaxEntries {
		t.Fatalf("memo holds %d entries", n)
	}
	if got, err := m.Canonical([]byte(`{"requestId":9,"z":1}`)); err != nil || string(got) != `{"z":1}` {
		t.Fatalf("body with requestId: %s %v", got, err)
	}
	if _, ok := m.m[`{"requestId":9,"z":1}`]; ok {
		t.Fatal("a body with a requestId was memoized")
	}
	big := []byte(`{"pad":"` + strings.Repeat("x", memoMaxBody) + `"}`)
	if got, err := m.Canonical(big); err != nil || string(got) != string(big) {
		t.Fatalf("big body: %v", err)
	}
	if _, ok := m.m[string(big)]; ok {
		t.Fatal("big body memoized")
	}
}

func TestCanonicalFastTakesOrdinaryBodies(t *testing.T) {
	for _, b := range []string{
		`{"pointOfSalesId":10228100000100,"performanceIds":[10228231109243,10228231109244],"seatCategoryIds":[-1],"requestId":7}`,
		`{"scope":"EXTENDED","seasonCode":"S2025","nested":{"b":[1.5e3,true,null],"a":"é"}}`,
	} {
		fast, err := canonicalFast([]byte(b))
		ref, _ := canonicalRef([]byte(b))
		if err != nil || string(fast) != string(ref) {
			t.Errorf("%s: fast %s (%v), reference %s", b, fast, err, ref)
		}
	}
}

func TestCanonicalShapeLimits(t *testing.T) {
	nest := func(n int) string { return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1) }
	nestArrays := func(n int) string { return `{"a":` + strings.Repeat(`[`, n-1) + strings.Repeat(`]`, n-1) + `}` }
	members := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"k` + strconv.Itoa(i) + `":0`)
		}
		return b.String() + "}"
	}
	items := func(n int) string { return `{"a":[` + strings.TrimSuffix(strings.Repeat("1,", n), ",") + `]}` }
	number := func(digits int) string { return `{"n":-` + strings.Repeat("9", digits) + `}` }
	cases := []struct {
		name string
		body string
		ok   bool
	}{
		{"objects nested 32", nest(32), true},
		{"objects nested 33", nest(33), false},
		{"arrays nested 32", nestArrays(32), true},
		{"arrays nested 33", nestArrays(33), false},
		{"1000 members", members(1000), true},
		{"1001 members", members(1001), false},
		{"1001 members, duplicates", `{` + strings.Repeat(`"a":1,`, 1000) + `"a":2}`, false},
		{"1000 items", items(1000), true},
		{"1001 items", items(1001), false},
		{"1001 items nested", `{"a":[[` + strings.TrimSuffix(strings.Repeat("1,", 1001), ",") + `]]}`, false},
		{"32 digits", number(32), true},
		{"33 digits", number(33), false},
		{"32 digits with fraction and exponent", `{"n":1234567890.1234567890e123456789012}`, true},
		{"33 digits with fraction and exponent", `{"n":1234567890.1234567890e1234567890123}`, false},
		{"long string is no number", `{"s":"` + strings.Repeat("9", 100) + `"}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check := func(b []byte) ([]byte, error) { return nil, Check(b) }
			for name, f := range map[string]func([]byte) ([]byte, error){"Canonical": Canonical, "reference": canonicalRef, "Check": check} {
				_, err := f([]byte(c.body))
				if c.ok && err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if !c.ok && !errors.Is(err, ErrShape) {
					t.Errorf("%s: err %v, want a shape error", name, err)
				}
			}
			if out, err := canonicalFast([]byte(c.body)); !c.ok && err == nil {
				t.Errorf("fast path accepted it: %.80s", out)
			}
		})
	}
}
