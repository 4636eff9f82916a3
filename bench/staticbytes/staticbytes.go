// Package staticbytes is a bench-only Caddy handler, http.handlers.static_bytes:
// it loads one file into memory at Provision and writes it on every request
// with Content-Type application/json and Content-Length. It is the baseline
// a cache hit is compared with: the least work a Caddy handler can do to
// send the same bytes.
package staticbytes

import (
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("static_bytes", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		var s Handler
		return &s, s.UnmarshalCaddyfile(h.Dispenser)
	})
}

// Handler writes File's bytes, read once at Provision.
type Handler struct {
	File string `json:"file"`

	body []byte
	clen string
}

func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.static_bytes", New: func() caddy.Module { return new(Handler) }}
}

func (h *Handler) Provision(caddy.Context) error {
	b, err := os.ReadFile(h.File)
	if err != nil {
		return fmt.Errorf("reading static_bytes file: %w", err)
	}
	h.body, h.clen = b, strconv.Itoa(len(b))
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, _ *http.Request, _ caddyhttp.Handler) error {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", h.clen)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(h.body)
	return err
}

// UnmarshalCaddyfile reads
//
//	static_bytes {
//		file <path>
//	}
//
// (a block, because an argument starting with / would be taken for a path
// matcher).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.File = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown subdirective %q", d.Val())
		}
	}
	if h.File == "" {
		return d.Err("static_bytes needs a file")
	}
	return nil
}

var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
