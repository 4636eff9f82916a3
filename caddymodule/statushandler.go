package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(StatusHandler{})
	httpcaddyfile.RegisterHandlerDirective("s360_status", parseStatusHandler)
	httpcaddyfile.RegisterDirectiveOrder("s360_status", httpcaddyfile.Before, "reverse_proxy")
}

// StatusHandler is the http.handlers.s360_status module: the status page
// of every s360 cache of the process, wherever it is mounted. It exists
// beside the admin endpoint's /s360/ because Caddy's admin endpoint
// refuses browser navigations. Mount it on a protected path or a loopback
// site: the page holds no secret, but it tells traffic and store paths.
type StatusHandler struct{}

// CaddyModule returns the Caddy module information.
func (StatusHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.s360_status",
		New: func() caddy.Module { return new(StatusHandler) },
	}
}

// ServeHTTP serves the page on GET and HEAD of any path it is matched on.
func (StatusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return writeError(w, r, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "the status page answers GET"})
	}
	return serveStatus(w, r)
}

// parseStatusHandler parses `s360_status`, which takes no arguments.
func parseStatusHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	for h.Next() {
		if h.NextArg() || h.NextBlock(0) {
			return nil, h.Errf("s360_status takes no arguments and no block")
		}
	}
	return StatusHandler{}, nil
}

// Interface guards
var _ caddyhttp.MiddlewareHandler = (*StatusHandler)(nil)
