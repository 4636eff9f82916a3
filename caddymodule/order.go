package caddymodule

import (
	"mime"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/session"
	"github.com/s360edge/s360edge/upstream"
)

// serveOrder passes an order (createOrUpdateOrder) to S-360 as the
// buyer's page sent it, never cached nor coalesced, and hands the buyer on
// to the shop's cart (writeOrder). With the order queue on (the default)
// it waits its turn in the line (queueOrder); else it goes with order
// priority through the edge's gate like every call.
func (h *Handler) serveOrder(w http.ResponseWriter, r *http.Request, call s360.Call, body []byte, ph *placeholders) error {
	if err := s360.Check(body); err != nil {
		return writeError(w, r, bodyError(err))
	}
	if h.queueOn() {
		return h.queueOrder(w, r, call, body)
	}
	resp, err := h.forward(w, r, upstream.CallOf(call, clientIP(r), edge.PriorityOrder), body, ph)
	if err != nil {
		return h.writeOrderFailure(w, r, call, err)
	}
	return h.writeOrder(w, r, call, resp)
}

// writeOrder turns a createOrUpdateOrder answer into the hand-off to the
// ticket shop: a 303 to the cart for a browser navigation, the upstream
// JSON rebuilt with one redirectUrl for an API client, or a clear error.
func (h *Handler) writeOrder(w http.ResponseWriter, r *http.Request, call s360.Call, resp *upstream.Response) error {
	switch {
	case resp.Status >= 500 && resp.Status != 509:
		// S-360 may have failed after creating the order.
		h.logger.Error("S-360 answered an order with an error status; the order may exist", zap.Int("status", resp.Status))
		return h.writeOrderUnknown(w, r)
	case resp.Status != http.StatusOK:
		// Refused before running: rate limit, credentials, bad request.
		// What passes through carries no redirect of S-360's.
		if body, err := s360.DropRedirects(resp.Body); err == nil {
			c := *resp
			c.Body = body
			resp = &c
		}
		return h.writeUpstream(w, r, call, resp)
	}
	res, err := s360.ParseOrder(resp.Body)
	if err != nil {
		h.logger.Error("S-360 answered an order with a body the sidecar cannot trust; the order may exist", zap.Int("bytes", len(resp.Body)))
		return h.writeOrderUnknown(w, r)
	}
	if !res.Success {
		e := &orderError{apiError: apiError{Status: http.StatusConflict, Code: "order_failed", Message: "S-360 refused the order"},
			StatusCode: res.StatusCode, StatusDetail: res.StatusDetail, StatusMessage: res.StatusMessage}
		if res.NotAvailable() {
			e.Code, e.Message = "not_available", "not enough tickets are left for this order"
		} else if res.StatusMessage != "" {
			e.Message += ": " + res.StatusMessage
		}
		return writeOrderError(w, e)
	}
	target := s360.CartURL(h.Shop, h.CartTarget, res.OrderID, r.URL.Query().Get("lang"))
	w.Header().Set("Cache-Control", "no-store")
	if prefersHTML(r.Header.Get("Accept")) {
		http.Redirect(w, r, target, http.StatusSeeOther)
		return nil
	}
	body, err := s360.WithRedirect(resp.Body, target)
	if err != nil { // ParseOrder accepted it: cannot happen, but fail as unknown
		return h.writeOrderUnknown(w, r)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	writeBody(w, body)
	return nil
}

// writeOrderFailure answers an order call that got no answer. Once the
// request may have reached S-360 the order may exist, whatever the error;
// only a failure before it left may say the order was not created.
func (h *Handler) writeOrderFailure(w http.ResponseWriter, r *http.Request, call s360.Call, err error) error {
	if upstream.Sent(err) {
		h.logger.Error("an order call failed after it was sent; the order may exist", zap.Error(err))
		return h.writeOrderUnknown(w, r)
	}
	e := h.upstreamError(call, err)
	if e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout {
		e.Message += "; the order was not sent, so it was not created"
	}
	return writeError(w, r, e)
}

// orderUnknown is the answer when an order may or may not exist.
type orderUnknown struct {
	apiError
	RedirectURL string `json:"redirectUrl"`
}

// writeOrderUnknown answers 502 order_unknown with the shop's cart, which
// shows what exists, for API clients and navigations alike: a redirect
// would read as success to a buyer who might then order again, and the
// cart without an order id may not show an order made through the API.
// The cart is in redirectUrl, Location and a Link header.
func (h *Handler) writeOrderUnknown(w http.ResponseWriter, r *http.Request) error {
	cart := s360.CartURL(h.Shop, h.CartTarget, "", r.URL.Query().Get("lang"))
	w.Header().Set("Location", cart)
	w.Header().Set("Link", "<"+cart+`>; rel="related"`)
	return writeOrderError(w, &orderUnknown{
		apiError: apiError{Status: http.StatusBadGateway, Code: "order_unknown",
			Message: "S-360 did not answer the order clearly: the order may exist; check the cart before ordering again"},
		RedirectURL: cart,
	})
}

// orderError is an order failure with S-360's own status fields, so the
// website can show or log them.
type orderError struct {
	apiError
	StatusCode    string `json:"statusCode,omitempty"`
	StatusDetail  string `json:"statusDetail,omitempty"`
	StatusMessage string `json:"statusMessage,omitempty"`
}

func writeOrderError(w http.ResponseWriter, e interface{ status() int }) error {
	session.WriteJSON(w, e.status(), e)
	return nil
}

func (e *apiError) status() int { return e.Status }

// prefersHTML reports whether an Accept header ranks text/html above
// application/json: a browser navigation, not a fetch() call.
func prefersHTML(accept string) bool {
	qHTML, qJSON, htmlFirst := -1.0, -1.0, false
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, err := strconv.ParseFloat(params["q"], 64); err == nil {
			q = v
		}
		switch mt {
		case "text/html":
			if qHTML < 0 && qJSON < 0 {
				htmlFirst = true
			}
			qHTML = max(qHTML, q)
		case "application/json", "*/*", "application/*":
			qJSON = max(qJSON, q)
		}
	}
	return qHTML > 0 && (qHTML > qJSON || (qHTML == qJSON && htmlFirst))
}
