package caddymodule

import (
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// writeOrder turns a createOrUpdateOrder answer into the hand-off to the
// ticket shop: a 303 to the cart for a browser navigation, the upstream
// JSON plus redirectUrl for an API client, or a clear error.
func (h *Handler) writeOrder(w http.ResponseWriter, r *http.Request, call s360.Call, resp *upstream.Response) error {
	if resp.Status != http.StatusOK {
		return h.writeUpstream(w, call, resp)
	}
	res, err := s360.ParseOrder(resp.Body)
	if err != nil {
		h.logger.Error("S-360 answered an order with a body the sidecar cannot read", zap.Int("bytes", len(resp.Body)))
		return writeError(w, &apiError{Status: http.StatusBadGateway, Code: "upstream_invalid", Message: "S-360's answer to the order could not be read; the order may or may not exist, check before retrying"})
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
	body, err := sjson.SetBytes(resp.Body, "redirectUrl", target)
	if err != nil {
		return writeError(w, &apiError{Status: http.StatusBadGateway, Code: "upstream_invalid", Message: "S-360's answer to the order could not be extended"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, err = w.Write(body)
	return err
}

// orderError is an order failure with S-360's own status fields, so the
// website can show or log them.
type orderError struct {
	apiError
	StatusCode    string `json:"statusCode,omitempty"`
	StatusDetail  string `json:"statusDetail,omitempty"`
	StatusMessage string `json:"statusMessage,omitempty"`
}

func writeOrderError(w http.ResponseWriter, e *orderError) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	return jsonEncode(w, e)
}

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
