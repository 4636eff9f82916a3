package sim

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
)

// redirect is one call of the ticket shop's redirect API, as recorded for tests.
type redirect struct {
	Path    string     `json:"path"`
	OrderID string     `json:"orderId"`
	Lang    string     `json:"lang"`
	Secret  string     `json:"secret"`
	Query   url.Values `json:"query"`
	Status  int        `json:"status"`
}

// serveRedirect answers /api/1/redirect/* (docs/S360.md, "Ticket shop"). cart and checkout
// need a known orderId; a secret (or orderSecretId), when given, must match
// the order's. Other pages redirect blindly to a placeholder shop page.
func (s *Server) serveRedirect(w http.ResponseWriter, r *http.Request) {
	page, q := r.PathValue("page"), r.URL.Query()
	rec := redirect{Path: r.URL.Path, OrderID: q.Get("orderId"), Lang: q.Get("lang"), Query: q,
		Secret: q.Get("secret")}
	if rec.Secret == "" {
		rec.Secret = q.Get("orderSecretId")
	}
	target := "/shop/" + page + "?" + r.URL.RawQuery
	if page == "cart" || page == "checkout" {
		o := s.order(rec.OrderID)
		switch {
		case o == nil:
			rec.Status = http.StatusNotFound
		case rec.Secret != "" && rec.Secret != o.SecretID:
			rec.Status = http.StatusForbidden
		}
		v := url.Values{"orderId": {rec.OrderID}}
		if rec.Lang != "" {
			v.Set("lang", rec.Lang)
		}
		target = "/shop/" + page + "?" + v.Encode()
	}
	if rec.Status == 0 {
		rec.Status = http.StatusFound
	}
	s.mu.Lock()
	if len(s.redirects) >= 10000 {
		s.redirects = s.redirects[1:]
	}
	s.redirects = append(s.redirects, rec)
	s.mu.Unlock()
	switch rec.Status {
	case http.StatusNotFound:
		writeHTML(w, rec.Status, "Order not found", "", "No open order "+rec.OrderID+".")
	case http.StatusForbidden:
		writeHTML(w, rec.Status, "Forbidden", "", "The order secret does not match.")
	default:
		http.Redirect(w, r, target, http.StatusFound)
	}
}

// order returns a snapshot of an order, or nil.
func (s *Server) order(id string) *order {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o := s.orders[n]
	if o == nil {
		return nil
	}
	c := *o
	c.Lines = append([]orderLine(nil), o.Lines...)
	return &c
}

var cartPage = template.Must(template.New("cart").Funcs(template.FuncMap{"euros": euros}).Parse(`<!doctype html>
<html lang="{{.Lang}}"><head><meta charset="utf-8"><title>{{.Title}} · S-360 simulator</title></head>
<body>
<h1 id="cart-title">{{.Title}}</h1>
<p>Order <span id="order-id">{{.Order.ID}}</span></p>
<table id="cart-lines">
<tr><th>Product</th><th>Quantity</th><th>Unit price</th></tr>
{{range .Order.Lines}}<tr class="cart-line"><td class="product">{{.ProductName}}</td><td class="quantity">{{.Quantity}}</td><td class="price">{{euros .UnitPrice}}</td></tr>
{{end}}</table>
<p>Total: <span id="cart-total">{{euros .Order.Total}}</span></p>
{{with .Account}}<p id="shop-account">Signed in at the shop as <strong id="shop-buyer">{{.Name}}</strong> <span id="shop-buyer-email">&lt;{{.Email}}&gt;</span></p>
{{else}}<p id="shop-guest">Not signed in at the shop: you will be asked to log in at checkout.</p>
{{end}}</body></html>
`))

// shopAccount is the buyer the shop knows from its own login session. In
// S-360 the shop is the IdP, so a buyer who logged in to the website with
// the shop account arrives at the cart already known; the cart shows it.
type shopAccount struct{ Login, Email, Name string }

type shopAccountKey struct{}

// withShopAccount is how the shop's IdP (which owns the login session)
// tells the shop pages who is logged in.
func withShopAccount(ctx context.Context, a *shopAccount) context.Context {
	return context.WithValue(ctx, shopAccountKey{}, a)
}

var plainPage = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}} · S-360 simulator</title></head>
<body><h1 id="{{.ID}}">{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

func euros(thousandths int64) string { return fmt.Sprintf("%.2f €", float64(thousandths)/1000) }

func writeHTML(w http.ResponseWriter, status int, title, id, text string) {
	if id == "" {
		id = "page-title"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = plainPage.Execute(w, map[string]string{"Title": title, "ID": id, "Text": text})
}

// serveShop renders the fake shop pages the redirects lead to.
func (s *Server) serveShop(w http.ResponseWriter, r *http.Request) {
	page, q := r.PathValue("page"), r.URL.Query()
	if page != "cart" && page != "checkout" {
		writeHTML(w, http.StatusOK, "Shop: "+page, "shop-title", "Placeholder page of the simulated ticket shop.")
		return
	}
	o := s.order(q.Get("orderId"))
	if o == nil {
		writeHTML(w, http.StatusNotFound, "Order not found", "", "No open order "+q.Get("orderId")+".")
		return
	}
	title := map[string]string{"cart": "Cart", "checkout": "Checkout"}[page]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	account, _ := r.Context().Value(shopAccountKey{}).(*shopAccount)
	_ = cartPage.Execute(w, map[string]any{"Title": title, "Lang": q.Get("lang"), "Order": o, "Account": account})
}
