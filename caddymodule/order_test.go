package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

const orderPath = "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder"

func TestOrderRewrite(t *testing.T) {
	browser := map[string]string{"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "Host": "evil.example"}
	api := map[string]string{"Accept": "application/json"}
	cases := []struct {
		name     string
		upstream string
		status   int
		hdr      map[string]string
		query    string
		want     int
		location string
		code     string
	}{
		{"browser gets 303 to the cart", `{"statusCode":"success","orderUpdateData":{"orderId":10000702652}}`, 200, browser, "?lang=fr", 303,
			"https://pfx-x.shop.secutix.com/api/1/redirect/cart?lang=fr&orderId=10000702652", ""},
		{"bad lang is dropped", `{"statusCode":"success","orderUpdateData":{"orderId":7}}`, 200, browser, "?lang=//evil", 303,
			"https://pfx-x.shop.secutix.com/api/1/redirect/cart?orderId=7", ""},
		{"api client gets redirectUrl", `{"statusCode":"success","redirectUrl":"https://evil.example/","orderUpdateData":{"orderId":7}}`, 200, api, "", 200, "", ""},
		{"sold out is 409", `{"orderUpdateData":null,"expectedException":true,"statusCode":"error","statusMessage":"No more tickets available","statusDetail":"error.order.availability"}`, 200, api, "", 409, "", "not_available"},
		{"other business failure is 409", `{"statusCode":"error","statusMessage":"bad","statusDetail":"error.parameter.mandatory"}`, 200, browser, "", 409, "", "order_failed"},
		{"malformed JSON is 502", `{"statusCode":"success",`, 200, api, "", 502, "", "upstream_invalid"},
		{"success without order id is 502", `{"statusCode":"success","orderUpdateData":{}}`, 200, browser, "", 502, "", "upstream_invalid"},
		{"upstream 5xx is 502", `boom`, 500, api, "", 502, "", "upstream_error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(c.status)
				io.WriteString(w, c.upstream)
			}}
			h := newTestHandler(t, f, time.Second)
			h.Shop, h.CartTarget = "https://pfx-x.shop.secutix.com", "cart"
			w, _ := serve(h, "POST", orderPath+c.query, `{"pointOfSalesId":1}`, c.hdr)
			if w.Code != c.want || w.Header().Get("Location") != c.location {
				t.Fatalf("got %d Location=%q %s", w.Code, w.Header().Get("Location"), w.Body)
			}
			var out map[string]any
			json.Unmarshal(w.Body.Bytes(), &out)
			if c.code != "" && out["error"] != c.code {
				t.Fatalf("error code %v, want %s: %s", out["error"], c.code, w.Body)
			}
			if c.want == 409 && (out["statusCode"] != "error" || out["statusDetail"] == nil) {
				t.Fatalf("409 lacks the upstream status fields: %s", w.Body)
			}
			if c.want == 200 && out["redirectUrl"] != "https://pfx-x.shop.secutix.com/api/1/redirect/cart?orderId=7" {
				t.Fatalf("redirectUrl %v", out["redirectUrl"])
			}
		})
	}
}

func TestCheckoutTarget(t *testing.T) {
	f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"statusCode":"success","orderUpdateData":{"orderId":5}}`)
	}}
	h := newTestHandler(t, f, time.Second)
	h.Shop, h.CartTarget = "https://shop", "checkout"
	w, _ := serve(h, "POST", orderPath, `{}`, map[string]string{"Accept": "text/html"})
	if w.Header().Get("Location") != "https://shop/api/1/redirect/checkout?orderId=5" {
		t.Fatalf("Location %q", w.Header().Get("Location"))
	}
}

func TestPrefersHTML(t *testing.T) {
	cases := map[string]bool{
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true,
		"text/html":                         true,
		"*/*":                               false,
		"":                                  false,
		"application/json":                  false,
		"application/json, text/html":       false,
		"text/html;q=0.5, application/json": false,
		"text/html, application/json":       true,
		"garbage;;;":                        false,
	}
	for accept, want := range cases {
		if got := prefersHTML(accept); got != want {
			t.Errorf("prefersHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}
