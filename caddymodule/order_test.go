package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/upstream"
)

const (
	orderPath = "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder"
	cart      = "https://pfx-x.shop.secutix.com/api/1/redirect/cart"
)

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
		{"nested and case-variant redirects are dropped", `{"statusCode":"success","RedirectURL":"https://evil.example/a","orderUpdateData":{"orderId":7,"redirectUrl":"https://evil.example/b","items":[{"REDIRECTURL":"https://evil.example/c"}]}}`, 200, api, "", 200, "", ""},
		{"a refusal passed through carries no redirect", `{"statusCode":"error","details":{"redirectUrl":"https://evil.example/"}}`, 400, api, "", 400, "", ""},
		{"sold out is 409", `{"orderUpdateData":null,"expectedException":true,"statusCode":"error","statusMessage":"No more tickets available","statusDetail":"error.order.availability"}`, 200, api, "", 409, "", "not_available"},
		{"other business failure is 409", `{"statusCode":"error","statusMessage":"bad","statusDetail":"error.parameter.mandatory"}`, 200, browser, "", 409, "", "order_failed"},
		{"cut JSON: the order may exist", `{"statusCode":"success",`, 200, api, "", 502, cart, "order_unknown"},
		{"HTML page: the order may exist", `<html>{"statusCode":"success"}</html>`, 200, browser, "", 502, cart, "order_unknown"},
		{"success without order id: the order may exist", `{"statusCode":"success","orderUpdateData":{}}`, 200, browser, "", 502, cart, "order_unknown"},
		{"two redirectUrl keys: the order may exist", `{"statusCode":"success","redirectUrl":"https://pfx-x.shop.secutix.com/","orderUpdateData":{"orderId":7},"redirectUrl":"https://evil.example/"}`, 200, api, "", 502, cart, "order_unknown"},
		{"a duplicate key deep inside: the order may exist", `{"statusCode":"success","orderUpdateData":{"orderId":7,"x":[{"a":1,"a":2}]}}`, 200, api, "?lang=de", 502, cart + "?lang=de", "order_unknown"},
		{"upstream 5xx: the order may exist", `boom`, 500, api, "", 502, cart, "order_unknown"},
		{"rate limited before running", `slow down`, 509, api, "", 429, "", "upstream_rate_limited"},
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
			if c.want == 200 && (out["redirectUrl"] != cart+"?orderId=7" || strings.Count(w.Body.String(), `"redirectUrl"`) != 1) {
				t.Fatalf("want exactly one redirectUrl, to the cart: %s", w.Body)
			}
			if strings.Contains(w.Body.String(), "evil.example") || strings.Count(strings.ToLower(w.Body.String()), `"redirecturl"`) > 1 {
				t.Fatalf("an upstream redirect reached the website: %s", w.Body)
			}
			if c.code == "order_unknown" {
				if out["redirectUrl"] != c.location || !strings.Contains(w.Header().Get("Link"), "<"+c.location+">") ||
					!strings.Contains(out["message"].(string), "may exist") {
					t.Fatalf("order_unknown must point to the cart and say the order may exist: %s Link=%q", w.Body, w.Header().Get("Link"))
				}
			}
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("%d order calls upstream, want 1: an order is never retried", n)
			}
		})
	}
}

// An order call that failed without an answer: once it may have reached
// S-360 the order may exist; only a failure before it left may say the
// order was not created.
func TestOrderFailuresBeforeAndAfterSending(t *testing.T) {
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close()
	cases := []struct {
		name    string
		answer  func(w http.ResponseWriter, r *http.Request) // nil: nothing listens
		status  int
		code    string
		message string
	}{
		{"connection refused: not created", nil, 502, "upstream_unreachable", "not created"},
		{"closed after reading the order: unknown", func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, 502, "order_unknown", "may exist"},
		{"no answer in time: unknown", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, 502, "order_unknown", "may exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeUpstream{answer: c.answer}
			h := newTestHandler(t, f, 300*time.Millisecond)
			if c.answer == nil {
				h.client = upstream.New(upstream.Config{BaseURL: refused.URL, Operator: "X_WEB", Secret: "s"})
			}
			h.Shop, h.CartTarget = "https://pfx-x.shop.secutix.com", "cart"
			w, _ := serve(h, "POST", orderPath, `{"pointOfSalesId":1}`, map[string]string{"Accept": "application/json"})
			var out map[string]any
			json.Unmarshal(w.Body.Bytes(), &out)
			msg, _ := out["message"].(string)
			if w.Code != c.status || out["error"] != c.code || !strings.Contains(msg, c.message) {
				t.Fatalf("got %d %s, want %d %s saying %q", w.Code, w.Body, c.status, c.code, c.message)
			}
			if c.code == "order_unknown" && (out["redirectUrl"] != cart || w.Header().Get("Location") != cart) {
				t.Fatalf("order_unknown without the cart: %s Location=%q", w.Body, w.Header().Get("Location"))
			}
			if n := f.calls.Load(); c.answer != nil && n != 1 {
				t.Fatalf("%d order calls upstream, want 1: never retried", n)
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

// recordingGate is a budget that records the calls it is asked for.
type recordingGate struct {
	*budget.Budget
	mu    sync.Mutex
	calls []budget.Call
}

func (g *recordingGate) AcquireCall(ctx context.Context, c budget.Call) error {
	g.mu.Lock()
	g.calls = append(g.calls, c)
	g.mu.Unlock()
	return g.Budget.AcquireCall(ctx, c)
}

// An order goes to S-360 as the page sent it (no canonical form: key order,
// spaces and requestId kept), through the edge's gate for the buyer's
// address; nothing is cached. Through the order queue (the default) its
// slot is taken in its turn at queued priority, before the token's own
// call; with order_queue off it goes at order priority after it.
func TestOrderPassesTheGateAsSent(t *testing.T) {
	const method = "externalOrderFacade/createOrUpdateOrder"
	for _, tc := range []struct {
		queue bool
		want  []budget.Call
	}{
		{true, []budget.Call{
			{Priority: budget.Queued, Method: method, Client: "192.0.2.1"},
			{Priority: budget.Order, Method: "auth"},
			{Priority: budget.Queued, Method: method, Client: "192.0.2.1"},
		}},
		{false, []budget.Call{
			{Priority: budget.Order, Method: "auth"},
			{Priority: budget.Order, Method: method, Client: "192.0.2.1"},
			{Priority: budget.Order, Method: method, Client: "192.0.2.1"},
		}},
	} {
		f := &fakeUpstream{answer: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"statusCode":"success","orderUpdateData":{"orderId":7}}`)
		}}
		h := newTestHandler(t, f, time.Second)
		h.Shop, h.CartTarget, h.OrderQueue = "https://pfx-x.shop.secutix.com", "cart", &tc.queue
		g := &recordingGate{Budget: budget.New(budget.Config{})}
		useEdge(t, h, edge.Options{Dir: t.TempDir(), Institution: "x", Gate: g})
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		h.client = upstream.New(upstream.Config{BaseURL: srv.URL, Operator: "X_WEB", Secret: "s", Gate: h.edge})
		const body = `{ "requestId":"r1", "b":1,"a":2 }`
		for range 2 {
			w, _ := serve(h, "POST", orderPath, body, map[string]string{"Accept": "application/json"})
			if w.Code != 200 || w.Header().Get("Cache-Status") != "s360edge; fwd=bypass" {
				t.Fatalf("queue %v: got %d %q %s", tc.queue, w.Code, w.Header().Get("Cache-Status"), w.Body)
			}
			if got := f.lastReq.Load().(string); got != "Bearer operator-token "+body {
				t.Fatalf("S-360 got %q, want the body as sent", got)
			}
		}
		g.mu.Lock()
		if !slices.Equal(g.calls, tc.want) || f.calls.Load() != 2 {
			t.Fatalf("queue %v: the gate saw %+v (%d calls), want %+v", tc.queue, g.calls, f.calls.Load(), tc.want)
		}
		g.mu.Unlock()
	}
}
