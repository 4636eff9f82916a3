package s360

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestValid(t *testing.T) {
	cases := []struct {
		name, body string
		valid      bool
	}{
		{"success", `{"statusCode":"success","data":[1,2]}`, true},
		{"business error", `{"statusCode":"error","statusDetail":"error.order.availability"}`, true},
		{"whitespace around", " \n{\"statusCode\":\"in_progress\"}\n ", true},
		{"cut body", `{"statusCode":"success","catalogData":{"code":"TRUNC`, false},
		{"cut after the object's last value", `{"statusCode":"success"`, false},
		{"HTML holding the text", `<html>{"statusCode":"success"}</html>`, false},
		{"array of answers", `[{"statusCode":"success"}]`, false},
		{"string", `"statusCode"`, false},
		{"empty", ``, false},
		{"no statusCode", `{"catalogData":{}}`, false},
		{"statusCode not a string", `{"statusCode":1}`, false},
		{"two objects", `{"statusCode":"success"}{"statusCode":"success"}`, false},
		{"trailing garbage", `{"statusCode":"success"} x`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Valid([]byte(c.body)); got != c.valid {
				t.Errorf("Valid(%q) = %v, want %v", c.body, got, c.valid)
			}
			if Success(200, []byte(c.body)) && !c.valid {
				t.Errorf("Success accepted %q", c.body)
			}
		})
	}
}

// TestValidDoesNotCopyTheBody: a catalog's answer is 10 MB, and every miss
// checks it more than once; a check that copies it (gjson.ParseBytes did)
// doubles the memory a miss takes.
func TestValidDoesNotCopyTheBody(t *testing.T) {
	body := []byte(`{"data":"` + strings.Repeat("x", 4<<20) + `","statusCode":"success"}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ok := Success(200, body)
	runtime.ReadMemStats(&after)
	if !ok {
		t.Fatal("not a success")
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("checking a %d-byte answer allocated %d bytes", len(body), n)
	}
}

func TestCheckNoDuplicates(t *testing.T) {
	cases := []struct {
		name, body string
		dup        bool
	}{
		{"plain", `{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, false},
		{"same key in sibling objects", `[{"k":1},{"k":2}]`, false},
		{"string value equal to a key", `{"a":"a","b":"a"}`, false},
		{"top level", `{"redirectUrl":"x","redirectUrl":"y"}`, true},
		{"after a nested object", `{"a":{"x":1},"b":2,"a":3}`, true},
		{"nested in an array", `{"d":[1,{"x":1,"y":[],"x":2}]}`, true},
		{"escaped spelling", `{"redirectUrl":"x","redirect\u0055rl":"y"}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckNoDuplicates([]byte(c.body))
			if got := errors.Is(err, ErrDuplicateKey); got != c.dup || (!c.dup && err != nil) {
				t.Errorf("CheckNoDuplicates(%s) = %v, want duplicate=%v", c.body, err, c.dup)
			}
		})
	}
}

func TestWithRedirectSetsExactlyOne(t *testing.T) {
	out, err := WithRedirect([]byte(`{"statusCode":"success","redirectUrl":"https://evil.example/","orderUpdateData":{"orderId":7}}`), "https://shop/api/1/redirect/cart?lang=fr&orderId=7")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"orderUpdateData":{"orderId":7},"redirectUrl":"https://shop/api/1/redirect/cart?lang=fr&orderId=7","statusCode":"success"}`
	if string(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}

func TestWithRedirectDropsEveryUpstreamRedirect(t *testing.T) {
	body := `{"statusCode":"success","RedirectURL":"https://evil.example/1","orderUpdateData":{"orderId":12345678901234567890,"redirectUrl":"https://evil.example/2",` +
		`"lines":[{"REDIRECTURL":"https://evil.example/3","price":45000.50},{"x":{"redirecturl":"https://evil.example/4"}}]},"note":"redirectUrl stays as text"}`
	target := "https://shop/api/1/redirect/cart?lang=fr&orderId=12345678901234567890"
	out, err := WithRedirect([]byte(body), target)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "evil.example") {
		t.Fatalf("an upstream redirect is left: %s", out)
	}
	if strings.Count(strings.ToLower(string(out)), `"redirecturl":`) != 1 || gjson.GetBytes(out, "redirectUrl").String() != target {
		t.Fatalf("want exactly the sidecar's redirectUrl: %s", out)
	}
	for _, keep := range []string{`"orderId":12345678901234567890`, `"price":45000.50`, `"note":"redirectUrl stays as text"`} {
		if !strings.Contains(string(out), keep) {
			t.Errorf("%s lost from %s", keep, out)
		}
	}
	for _, bad := range []string{`[1]`, `{"a":1} {"b":2}`, `{"a":`} {
		if _, err := WithRedirect([]byte(bad), target); err == nil {
			t.Errorf("WithRedirect(%s) took a body that is not one JSON object", bad)
		}
	}
	if out, err := DropRedirects([]byte(`{"error":"x","details":[{"redirectUrl":"https://evil.example/"}]}`)); err != nil || string(out) != `{"details":[{}],"error":"x"}` {
		t.Fatalf("DropRedirects: %s %v", out, err)
	}
}
