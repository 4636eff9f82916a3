package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// serveAPI answers one S-360 REST-RPC call. Nothing reaches the upstream
// before the request is known to be allowed and well-formed. Orders take
// their own path (serveOrder); the edge answers cacheable calls and the
// feeds (serveCached); the other allowed calls pass through (servePass).
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request) error {
	ph := placeholdersOf(w, r)
	call, ok := h.classifier.Classify(r.URL.Path)
	ph.setCall(call)
	if aerr := checkCall(w, r, call, ok); aerr != nil {
		return writeError(w, r, aerr)
	}
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		return writeError(w, r, aerr)
	}
	switch {
	case call.Class == s360.Order:
		return h.serveOrder(w, r, call, body, ph)
	case call.Class.Cacheable() || edge.Feed(call):
		return h.serveCached(w, r, call, body, ph)
	}
	return h.servePass(w, r, call, body, ph)
}

// checkCall refuses what is not an allowed S-360 call (ok: the path is
// one), or not sent as S-360 takes it.
func checkCall(w http.ResponseWriter, r *http.Request, call s360.Call, ok bool) *apiError {
	if !ok {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "not an S-360 web service path: want /tnseb/backend-apis/<service>/<version>/<method>"}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "S-360 web services take POST only"}
	}
	if call.Class == s360.Denied {
		msg := fmt.Sprintf("%s is not on this sidecar's allow-list", call.Name())
		if !s360.ValidVersion(call.Version) {
			msg = fmt.Sprintf("%s is not an S-360 version: want v<digits>_<digits>, such as v1_33", call.Version)
		}
		return &apiError{Status: http.StatusForbidden, Code: "method_denied", Message: msg}
	}
	return checkContentType(r.Header.Get("Content-Type"))
}

// serveCached answers a cacheable call or a feed from the edge. What goes
// upstream is the canonical body, so every request sharing an entry asked
// S-360 the same question.
func (h *Handler) serveCached(w http.ResponseWriter, r *http.Request, call s360.Call, body []byte, ph *placeholders) error {
	canonical, err := h.canon.Canonical(body)
	if err != nil {
		return writeError(w, r, bodyError(err))
	}
	start := time.Now()
	// Fair shares and the client quota count the upstream calls each
	// client causes.
	res := h.edge.Serve(r.Context(), h.client, call, canonical, clientIP(r))
	waited := time.Since(start)
	if !res.Waited() {
		waited = 0 // the store answered
	}
	ph.setUpstream(waited)
	return h.writeResult(w, r, call, res)
}

// servePass passes an allowed uncached call to S-360 as the website sent
// it.
func (h *Handler) servePass(w http.ResponseWriter, r *http.Request, call s360.Call, body []byte, ph *placeholders) error {
	if err := s360.Check(body); err != nil {
		return writeError(w, r, bodyError(err))
	}
	resp, err := h.forward(w, r, upstream.CallOf(call, clientIP(r), edge.PriorityForeground), body, ph)
	if err != nil {
		return writeError(w, r, h.upstreamError(call, err))
	}
	return h.writeUpstream(w, r, call, resp)
}

// forward sends an uncached call's body to S-360 as it is, through the
// edge (its gate, its statistics), for the placeholders' timing; the
// answer bypasses the cache.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, c upstream.Call, body []byte, ph *placeholders) (*upstream.Response, error) {
	start := time.Now()
	resp, err := h.edge.Forward(r.Context(), h.client, c, body)
	ph.setUpstream(time.Since(start))
	w.Header().Set("Cache-Status", "s360edge; fwd=bypass")
	return resp, err
}

// writeResult writes what the edge answered for a cacheable call.
func (h *Handler) writeResult(w http.ResponseWriter, r *http.Request, call s360.Call, res edge.Result) error {
	if res.CacheStatus != "" {
		w.Header().Set("Cache-Status", res.CacheStatus)
	}
	switch {
	case res.Entry != nil:
		hdr := w.Header()
		for k, v := range res.Entry.Header {
			hdr[k] = v
		}
		if res.Hit {
			age := max(time.Since(res.Entry.StoredAt), 0)
			hdr.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
		}
		hdr.Set("Content-Length", strconv.Itoa(len(res.Entry.Body)))
		w.WriteHeader(res.Entry.Status)
		// The body is shared by every reader of the entry: written as
		// is, never copied per request.
		writeBody(w, res.Entry.Body)
		return nil
	case res.Resp != nil:
		return h.writeUpstream(w, r, call, res.Resp)
	}
	var fe *edge.FloorError
	if errors.As(res.Err, &fe) {
		return writeError(w, r, &apiError{Status: http.StatusTooManyRequests, Code: "min_interval", Message: fe.Error(), RetryAfter: fe.Wait})
	}
	return writeError(w, r, h.upstreamError(call, res.Err))
}

// readBody reads the request's body, which must not be empty: S-360
// methods take a JSON object (Canonical or Check tell whether it is one).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := readAtMost(w, r, h.MaxBodySize)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: fmt.Sprintf("the request body exceeds %d bytes", h.MaxBodySize)}
	case err != nil:
		return nil, &apiError{Status: http.StatusBadRequest, Code: "bad_body", Message: "the request body could not be read"}
	case len(body) == 0:
		return nil, &apiError{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the request body is empty: S-360 methods take a JSON object, {} when they have no parameter"}
	}
	return body, nil
}

// bodyError is the answer to a body that s360.Canonical or s360.Check
// refused.
func bodyError(err error) *apiError {
	if errors.Is(err, s360.ErrShape) {
		return &apiError{Status: http.StatusBadRequest, Code: "invalid_json", Message: fmt.Sprintf("%v; the sidecar accepts at most %d levels of nesting, %d digits in a number and %d members or items in an object or array", err, s360.MaxDepth, s360.MaxDigits, s360.MaxContainer)}
	}
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the request body must be a JSON object: " + err.Error()}
}

// readAtMost reads r's body, failing with *http.MaxBytesError beyond limit.
// A body of known length is read into a buffer of that length in one go:
// io.ReadAll's growing buffer took several reads, and each read sets the
// connection's deadline again (a system call), a few per cent of a hit.
func readAtMost(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	switch n := r.ContentLength; {
	case n > limit:
		return nil, &http.MaxBytesError{Limit: limit}
	case n >= 0:
		// net/http ends the body at Content-Length, and reports a shorter
		// one as io.ErrUnexpectedEOF.
		body := make([]byte, n)
		_, err := io.ReadFull(r.Body, body)
		return body, err
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

// checkContentType accepts JSON only, as S-360 does: application/json, with
// parameters, and a charset if any of utf-8. Refusing other types also keeps
// cross-site HTML forms (which cannot send application/json without a CORS
// preflight) from placing orders with a buyer's cookies.
func checkContentType(ct string) *apiError {
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "S-360 web services take a JSON body: send Content-Type: application/json (charset utf-8, if any)"}
}

// writeUpstream relays an upstream answer, mapping S-360's failure statuses
// to the sidecar's JSON errors.
func (h *Handler) writeUpstream(w http.ResponseWriter, r *http.Request, call s360.Call, resp *upstream.Response) error {
	switch {
	case resp.Status == 509 || resp.Status == http.StatusTooManyRequests:
		return writeError(w, r, &apiError{Status: http.StatusTooManyRequests, Code: "upstream_rate_limited", Message: "S-360 refused the call: the institution's rate limit is reached", RetryAfter: h.retryAfter(resp)})
	case resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden:
		h.logger.Error("S-360 refused the operator's token", zap.String("method", call.Name()), zap.Int("status", resp.Status))
		return writeError(w, r, &apiError{Status: http.StatusBadGateway, Code: "upstream_auth_failed", Message: "S-360 refused the sidecar's credentials"})
	case resp.Status >= 500:
		return writeError(w, r, &apiError{Status: http.StatusBadGateway, Code: "upstream_error", Message: fmt.Sprintf("S-360 answered HTTP %d", resp.Status)})
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(resp.Status)
	writeBody(w, resp.Body)
	return nil
}

func (h *Handler) upstreamError(call s360.Call, err error) *apiError {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return &apiError{Status: http.StatusBadGateway, Code: "upstream_error", Message: "the call to S-360 failed"}
	}
	switch ue.Kind {
	case upstream.Canceled:
		return &apiError{Status: 499, Code: "client_closed_request", Message: "the client went away"}
	case upstream.Timeout:
		return &apiError{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Message: fmt.Sprintf("S-360 did not answer %s in time", call.Name())}
	case upstream.AuthFailed:
		h.logger.Error("cannot get an S-360 token: check operator and secret", zap.Error(err))
		return &apiError{Status: http.StatusBadGateway, Code: "upstream_auth_failed", Message: "the sidecar could not authenticate with S-360"}
	case upstream.TooLarge:
		return &apiError{Status: http.StatusBadGateway, Code: "upstream_too_large", Message: "S-360's answer exceeded the sidecar's size limit"}
	case upstream.Invalid:
		h.logger.Warn("S-360 answered with a cut or non-JSON body", zap.String("method", call.Name()), zap.Error(err))
		return &apiError{Status: http.StatusBadGateway, Code: "upstream_invalid", Message: "S-360's answer was cut or is not a JSON object with a statusCode"}
	case upstream.Refused:
		retry := time.Duration(h.RateLimit.Window) / time.Duration(h.RateLimit.Calls)
		var we *budget.WaitError
		if errors.As(err, &we) && we.RetryIn > 0 {
			retry = we.RetryIn
		}
		retry = max(retry, time.Second)
		switch {
		case errors.Is(err, budget.ErrClientQuota):
			return &apiError{Status: http.StatusTooManyRequests, Code: "client_quota", Message: "this client has caused its quota or, while other clients need theirs, its share of S-360 calls for now; try again later", RetryAfter: retry}
		case errors.Is(err, budget.ErrMonthQuota):
			return &apiError{Status: http.StatusTooManyRequests, Code: "quota", Message: "at this pace the institution's monthly quota of S-360 calls would not last the month: the sidecar holds calls back for now; try again later", RetryAfter: retry}
		case errors.Is(err, budget.ErrPaused):
			return &apiError{Status: http.StatusTooManyRequests, Code: "upstream_paused", Message: "S-360 refused recent calls like this one; the sidecar holds them back for now; try again later", RetryAfter: retry}
		}
		return &apiError{Status: http.StatusTooManyRequests, Code: "budget_exhausted", Message: "the institution's S-360 call budget is spent for now; try again later", RetryAfter: retry}
	}
	h.logger.Warn("S-360 unreachable", zap.String("method", call.Name()), zap.Error(err))
	return &apiError{Status: http.StatusBadGateway, Code: "upstream_unreachable", Message: "S-360 could not be reached"}
}

// retryAfter honours the upstream's Retry-After (seconds) when it sends
// one, which S-360 is not known to do; else one rate window.
func (h *Handler) retryAfter(resp *upstream.Response) time.Duration {
	if d := edge.RetryAfter(resp.Header); d > 0 {
		return d
	}
	return time.Duration(h.RateLimit.Window)
}
