package s360

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"strings"

	"github.com/tidwall/gjson"
)

// OrderResult is what the sidecar needs of a createOrUpdateOrder answer.
type OrderResult struct {
	Success       bool
	OrderID       string // digits only
	StatusCode    string
	StatusDetail  string
	StatusMessage string
}

// ErrBadOrderAnswer is returned for an answer that is not a valid S-360
// answer (see Valid), holds a key twice anywhere, or is a success without a
// usable orderId. The order may nevertheless exist.
var ErrBadOrderAnswer = errors.New("S-360 order answer is not usable")

var digits = regexp.MustCompile(`^[0-9]{1,20}$`)

// ParseOrder reads an OrderUpdateResult (docs/S360.md, "Answers").
func ParseOrder(body []byte) (OrderResult, error) {
	if !Valid(body) || CheckNoDuplicates(body) != nil {
		return OrderResult{}, ErrBadOrderAnswer
	}
	r := OrderResult{
		StatusCode:    gjson.GetBytes(body, "statusCode").String(),
		StatusDetail:  gjson.GetBytes(body, "statusDetail").String(),
		StatusMessage: gjson.GetBytes(body, "statusMessage").String(),
	}
	if r.StatusCode != "success" {
		return r, nil
	}
	id := gjson.GetBytes(body, "orderUpdateData.orderId")
	if id.Type != gjson.Number || !digits.MatchString(id.Raw) {
		return r, ErrBadOrderAnswer
	}
	r.Success, r.OrderID = true, id.Raw
	return r, nil
}

// NotAvailable reports whether the failure is S-360's
// error.order.availability, wherever the envelope carries the code
// (docs/S360.md, "Answers": the field is not documented).
func (r OrderResult) NotAvailable() bool {
	for _, s := range []string{r.StatusCode, r.StatusDetail, r.StatusMessage} {
		if strings.Contains(s, "error.order.availability") {
			return true
		}
	}
	return false
}

var lang = regexp.MustCompile(`^[a-z]{2}$`)

// ValidLang reports whether s is an ISO 639-1 code as the shop takes it.
func ValidLang(s string) bool { return lang.MatchString(s) }

// CartURL is the ticket shop redirect for an order (docs/S360.md, "Ticket shop"):
// <shop>/api/1/redirect/<target>?orderId=<id>[&lang=<lang>]. The host is
// always the configured shop: nothing of the request or the upstream answer
// but the numeric order id and a checked language code goes into it. An
// empty orderID (the outcome is unknown) gives the plain cart, whose
// orderId parameter is optional.
func CartURL(shop, target, orderID, language string) string {
	q := url.Values{}
	if orderID != "" {
		q.Set("orderId", orderID)
	}
	if ValidLang(language) {
		q.Set("lang", language)
	}
	u := strings.TrimRight(shop, "/") + "/api/1/redirect/" + target
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// WithRedirect rebuilds an order answer (checked by ParseOrder) with every
// redirect URL it had dropped (see DropRedirects) and exactly one,
// top-level redirectUrl set to target: a browser must not find an upstream
// one.
func WithRedirect(body []byte, target string) ([]byte, error) {
	v, err := decodeDropping(body)
	if err != nil {
		return nil, err
	}
	fields, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("the order answer is not a JSON object")
	}
	fields["redirectUrl"] = target
	return encodeJSON(fields)
}

// DropRedirects rebuilds a JSON answer without any key that case-folds to
// "redirecturl", at any depth (redirectUrl, RedirectURL, a nested
// orderUpdateData.redirectUrl…): the only redirect a website gets with an
// order answer is the one the sidecar builds to the configured shop.
// Numbers keep their exact text.
func DropRedirects(body []byte) ([]byte, error) {
	v, err := decodeDropping(body)
	if err != nil {
		return nil, err
	}
	return encodeJSON(v)
}

func decodeDropping(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	dropRedirects(v)
	return v, nil
}

func dropRedirects(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if strings.EqualFold(k, "redirecturl") {
				delete(v, k)
				continue
			}
			dropRedirects(x)
		}
	case []any:
		for _, x := range v {
			dropRedirects(x)
		}
	}
}

// encodeJSON encodes without HTML escaping, so that the URL's & and the
// upstream's own strings keep their bytes.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}
