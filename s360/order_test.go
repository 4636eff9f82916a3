package s360

import (
	"errors"
	"testing"
)

func TestParseOrder(t *testing.T) {
	ok := `{"statusCode":"success","orderUpdateData":{"orderId":10000702652,"orderSecretId":"a8f3"}}`
	r, err := ParseOrder([]byte(ok))
	if err != nil || !r.Success || r.OrderID != "10000702652" {
		t.Fatalf("success: %+v %v", r, err)
	}
	fail := `{"orderUpdateData":null,"expectedException":true,"statusCode":"error","statusMessage":"No more tickets available","statusDetail":"error.order.availability"}`
	r, err = ParseOrder([]byte(fail))
	if err != nil || r.Success || !r.NotAvailable() || r.StatusMessage != "No more tickets available" {
		t.Fatalf("failure: %+v %v", r, err)
	}
	other := `{"statusCode":"error","statusDetail":"error.parameter.mandatory"}`
	if r, _ := ParseOrder([]byte(other)); r.Success || r.NotAvailable() {
		t.Fatalf("other failure: %+v", r)
	}
	for _, bad := range []string{``, `nope`, `[1]`, `"x"`, `{"statusCode":"success"}`,
		`{"statusCode":"success","orderUpdateData":{"orderId":"10000702652"}}`,
		`{"statusCode":"success","orderUpdateData":{"orderId":-1}}`,
		`{"statusCode":"success","orderUpdateData":{"orderId":1e5}}`,
		`{"statusCode":"success","orderUpdateData":{"orderId":12},`} {
		if _, err := ParseOrder([]byte(bad)); !errors.Is(err, ErrBadOrderAnswer) {
			t.Errorf("ParseOrder(%q) = %v, want ErrBadOrderAnswer", bad, err)
		}
	}
}

func TestCartURL(t *testing.T) {
	cases := []struct{ shop, target, id, lang, want string }{
		{"https://pfx-x.shop.secutix.com", "cart", "42", "en", "https://pfx-x.shop.secutix.com/api/1/redirect/cart?lang=en&orderId=42"},
		{"https://pfx-x.shop.secutix.com/", "checkout", "42", "", "https://pfx-x.shop.secutix.com/api/1/redirect/checkout?orderId=42"},
		{"https://s", "cart", "42", "en&x=//evil.com", "https://s/api/1/redirect/cart?orderId=42"},
		{"https://s", "cart", "42", "EN", "https://s/api/1/redirect/cart?orderId=42"},
	}
	for _, c := range cases {
		if got := CartURL(c.shop, c.target, c.id, c.lang); got != c.want {
			t.Errorf("CartURL(%q,%q,%q,%q) = %q, want %q", c.shop, c.target, c.id, c.lang, got, c.want)
		}
	}
}
