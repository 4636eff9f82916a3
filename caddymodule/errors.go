package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/s360edge/s360edge/session"
)

// apiError is the sidecar's own error answer:
// {"error": "<code>", "message": "<human sentence>"} (session.ErrorBody).
type apiError struct {
	Status     int           `json:"-"`
	Code       string        `json:"error"`
	Message    string        `json:"message"`
	RetryAfter time.Duration `json:"-"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// writeError answers e, with its Retry-After, as JSON (session.WriteError).
// A 429 or a 5xx that an error route of the site (handle_errors) answers
// is returned to Caddy as a caddyhttp.Error instead, for that route to
// write: its Retry-After and Cache-Control are set, as is the answer's
// Cache-Status, and the route restyles the rest.
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) error {
	hdr := w.Header()
	if e.RetryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
		if err := routedError(r, e); err != nil {
			hdr.Set("Cache-Control", "no-store")
			return err
		}
	}
	session.WriteError(w, e.Status, e.Code, e.Message)
	return nil
}

// routedError is e as a caddyhttp.Error when r's server has an error route
// that answers it, as Caddy's server will look for one: a route whose
// matchers match r with the error set, down the subroutes the Caddyfile
// makes of handle_errors (the site's host, then its status codes). nil
// when Caddy would answer the status alone, with an empty body.
func routedError(r *http.Request, e *apiError) error {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if _, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); !ok || srv == nil || srv.Errors == nil {
		return nil
	}
	err := caddyhttp.Error(e.Status, e)
	if !answers(srv.Errors.Routes, srv.Errors.WithError(r, err)) {
		return nil
	}
	return err
}

// answers reports whether one of routes matches r and has a handler that
// is not a subroute, or a subroute that answers r.
func answers(routes caddyhttp.RouteList, r *http.Request) bool {
	for _, rt := range routes {
		if ok, err := rt.MatcherSets.AnyMatchWithError(r); !ok || err != nil {
			continue
		}
		for _, h := range rt.Handlers {
			if sr, ok := h.(*caddyhttp.Subroute); !ok || answers(sr.Routes, r) {
				return true
			}
		}
	}
	return false
}
