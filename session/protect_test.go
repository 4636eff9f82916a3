package session

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestProtectMatch(t *testing.T) {
	p, err := NewProtect([]string{"/account*", "/orders/*", "/checkout"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, target string
		want         bool
	}{
		{"prefix", "/account", true},
		{"prefix below", "/account/settings", true},
		{"double slash", "//account", true},
		{"dot segment", "/./account", true},
		{"dot-dot segment", "/x/../account", true},
		{"encoded slash", "/x%2F..%2Faccount", true},
		{"encoded dot", "/%2E/account", true},
		{"encoded dot-dot", "/x/%2E%2E/account", true},
		{"lower-case encoding", "/x/%2e%2e/account", true},
		{"encoded letter", "/%61ccount", true},
		{"double encoded slash", "/x%252F..%252Faccount", true},
		{"double encoded letter", "/%2561ccount", true},
		{"backslash", `/x\..\account`, true},
		{"encoded backslash", "/x%5C..%5Caccount", true},
		{"path parameter", "/x;y/../account", true},
		{"dot-dot-semicolon", "/..;/account", true},
		{"upper case", "/ACCOUNT", true},
		{"query does not matter", "/account?x=1", true},
		{"dir prefix without slash", "/orders", true},
		{"dir prefix below", "/x/../orders/7", true},
		{"exact", "/checkout", true},
		{"exact trailing slash", "/checkout/", true},
		{"exact double slash", "//checkout", true},
		{"exact param", "/checkout;jsessionid=1", true},
		{"exact below is not", "/checkout/x", false},
		{"other page", "/shop", false},
		{"lookalike", "/accoun", false},
		// A website that does not clean paths may route it to /account.
		{"raw form inside the area", "/account/../shop", true},
		{"cleaned form outside the area", "/shop/../shop", false},
		{"orders lookalike", "/ordersx", false},
		{"root", "/", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://site"+tc.target, nil)
			if got := p.Match(r.URL); got != tc.want {
				t.Errorf("Match(%q) = %v, want %v (path %q, raw %q)", tc.target, got, tc.want, r.URL.Path, r.URL.RawPath)
			}
		})
	}
}

func TestNewProtectValidates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pattern string
		ok      bool
	}{
		{"exact", "/a", true},
		{"prefix", "/a*", true},
		{"everything", "/*", true},
		{"relative", "a*", false},
		{"star inside", "/a*/b", false},
		{"two stars", "/a**", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewProtect([]string{tc.pattern})
			if (err == nil) != tc.ok {
				t.Errorf("NewProtect(%q) error = %v, want ok=%v", tc.pattern, err, tc.ok)
			}
		})
	}
}

func TestProtectOr(t *testing.T) {
	a, _ := NewProtect([]string{"/account*"})
	b, _ := NewProtect([]string{"/checkout"})
	both := a.Or(b)
	at := func(p string) *url.URL { return &url.URL{Path: p} }
	if !both.Match(at("/account/x")) || !both.Match(at("/checkout")) || both.Match(at("/shop")) {
		t.Error("a.Or(b) does not protect what a or b protects, and only that")
	}
	if a.Match(at("/checkout")) {
		t.Error("Or changed its receiver")
	}
	if !(Protect{}).Or(Protect{}).Empty() {
		t.Error("two empty lists protect something")
	}
}
