package sim

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// newSimWithIdP is newSim with the shop's IdP in front, as s360sim
// -saml-sp-metadata serves it.
func newSimWithIdP(t *testing.T) *harness {
	t.Helper()
	h := newMemSim(t, nil)
	h.srv = httptest.NewUnstartedServer(nil)
	idp, err := NewIdP(IdPConfig{URL: "http://" + h.srv.Listener.Addr().String() + "/saml"})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Config.Handler = idp.Wrap(h.s.Handler())
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

// TestCartKnowsShopLogin: the buyer's login session at the shop's IdP is
// the shop's session, so the cart page names the buyer; without a valid
// session cookie it shows a guest.
func TestCartKnowsShopLogin(t *testing.T) {
	h := newSimWithIdP(t)
	f := h.fixtures()
	d := h.ok("externalOrderFacade/createOrUpdateOrder", orderBody(f.PosID, f.firstLine(1)))["orderUpdateData"].(map[string]any)
	cart := "/shop/cart?lang=en&orderId=" + jsonNum(num(d["orderId"]))

	login := func(password string) string {
		t.Helper()
		form := url.Values{"user": {BuyerLogin}, "password": {password}, "back": {"/saml/sso?SAMLRequest=x"}}
		r := h.do("POST", "/saml/signin", form.Encode(), "Content-Type: application/x-www-form-urlencoded")
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == "session" {
				return c.Value
			}
		}
		return ""
	}
	if v := login("wrong"); v != "" {
		t.Fatalf("a wrong password got an IdP session cookie %q", v)
	}
	session := login(BuyerPassword)
	if session == "" {
		t.Fatal("the buyer's login at the shop set no session cookie")
	}

	known := `<strong id="shop-buyer">` + BuyerName + `</strong> <span id="shop-buyer-email">&lt;` + BuyerEmail + `&gt;</span>`
	for _, tc := range []struct {
		name, cookie string
		known        bool
	}{
		{"logged in at the shop", session, true},
		{"no session cookie", "", false},
		{"unknown session", "bm90LWEtc2Vzc2lvbg==", false},
		{"cookie naming another store record", "../users/" + BuyerLogin, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.cookie != "" {
				hdr = append(hdr, "Cookie: "+(&http.Cookie{Name: "session", Value: tc.cookie}).String())
			}
			r := h.do("GET", cart, "", hdr...)
			body := string(r.body)
			if r.status != http.StatusOK || !strings.Contains(body, `<span id="order-id">`) {
				t.Fatalf("cart page: %d %s", r.status, body)
			}
			if got := strings.Contains(body, known); got != tc.known {
				t.Errorf("cart shows the buyer: %v, want %v:\n%s", got, tc.known, body)
			}
			if got := strings.Contains(body, `id="shop-guest"`); got == tc.known {
				t.Errorf("cart shows the guest note: %v, want %v", got, !tc.known)
			}
		})
	}
}
