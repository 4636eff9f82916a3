package s360

import (
	"strconv"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	cl := Classifier{Extra: []string{"setupService/listSeasons", "contactService/*"}}
	cases := []struct {
		path  string
		ok    bool
		class Class
	}{
		{"/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", true, Catalog},
		{"/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", true, Catalog},
		{"/tnseb/backend-apis/catalogService/v1_33/getLastSetupUpdate", true, Uncached},
		{"/tnseb/backend-apis/catalogService/v1_33/isCatalogServiceAlive", true, Uncached},
		{"/tnseb/backend-apis/availabilityService/v1_33/getEventAvailability", true, Availability},
		{"/tnseb/backend-apis/availabilityService/v1_19/getUpdatedAvailabilities", true, Uncached},
		{"/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder", true, Order},
		{"/tnseb/backend-apis/externalOrderFacade/v1_33/createPaymentsAndCloseOrder", true, Denied},
		{"/tnseb/backend-apis/externalOrderHistoryService/v1_34/listTicketsByCriteria", true, Denied},
		{"/tnseb/backend-apis/setupService/v1_33/listSeasons", true, Uncached},
		{"/tnseb/backend-apis/setupService/v1_33/listVatCodes", true, Denied},
		{"/tnseb/backend-apis/contactService/v2_21/anything", true, Uncached},
		{"/tnseb/backend-apis/catalogService/latest/getCatalog", false, Denied},
		{"/tnseb/backend-apis/catalogService/v1_33", false, Denied},
		{"/tnseb/backend-apis/catalogService/v1_33/getCatalog/extra", false, Denied},
		{"/tnseb/backend-apis/catalogService/v1_33/../../x/v1_1/y", false, Denied},
		{"/tnseb/backend-apis/catalog%2FService/v1_33/getCatalog", false, Denied},
		{"/index.html", false, Denied},
	}
	for _, c := range cases {
		call, ok := cl.Classify(c.path)
		if ok != c.ok || call.Class != c.class {
			t.Errorf("Classify(%q) = %v %v, want %v %v", c.path, call.Class, ok, c.class, c.ok)
		}
		if ok && call.Path() != c.path {
			t.Errorf("Path() = %q, want %q", call.Path(), c.path)
		}
	}
	var zero Classifier
	if c, _ := zero.Classify("/tnseb/backend-apis/setupService/v1_33/listSeasons"); c.Class != Denied {
		t.Errorf("default allow-list lets setupService through: %v", c.Class)
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
