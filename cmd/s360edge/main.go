// Command s360edge is Caddy with the modules a sidecar in front of a website
// needs, plus the s360 edge cache. Every Caddy standard module not listed
// here only added pages to the idle process (BENCHMARKS.md, footprint);
// `make xcaddy` builds the same module into Caddy with all of them.
package main

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"go.uber.org/zap"

	// The http app and server, with the handlers and matchers of its own
	// package (route, handle, respond, redir, vars, error, abort, invoke…).
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	// The Caddyfile adapter and its built-in directives and global options
	// (admin, bind, root, tls, log, servers, order, persist_config…).
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	// TLS's default session-ticket key source: without it every HTTPS
	// site (automatic HTTPS, `tls internal`) fails to provision.
	_ "github.com/caddyserver/caddy/v2/modules/caddytls/standardstek"
	// `encode zstd gzip`, which README advises for compressed answers.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/zstd"
	// `file_server` and `try_files`: the site of `make run` and of the
	// integration tests.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	// `reverse_proxy` to the existing website (README's Caddyfile).
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	// `header` and `request_header`, which a site in front of a website
	// commonly sets (HSTS, CORS, cache headers).
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	// `handle_path`, `rewrite`, `uri` and `method`, for sites that mount the
	// website under a path.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	// `log_append`, which README uses to put {http.s360.*} in access logs.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/logging"
	// Log writers and encoders (`log { output file … format json }`).
	_ "github.com/caddyserver/caddy/v2/modules/logging"
	// The admin API's /metrics, where the caddy_s360_* metrics are scraped
	// (docs/OPERATIONS.md, deploy/prometheus), and the `metrics` directive.
	_ "github.com/caddyserver/caddy/v2/modules/metrics"

	_ "github.com/s360edge/s360edge/caddymodule"
	"github.com/s360edge/s360edge/exepages"
)

func main() {
	go releaseStartupPages()
	caddycmd.Main()
}

// releaseStartupPages gives back the executable's pages that starting used
// (see package exepages) each time a config starts running: the first one,
// and each reload, which adapts and provisions again. Caddy has no hook for
// "config running", so it polls the active context.
func releaseStartupPages() {
	var last context.Context
	for range time.Tick(time.Second) {
		ctx := caddy.ActiveContext()
		if ctx.Context == nil {
			last = nil // keeps no stopped config alive
			continue
		}
		if ctx.Context == last {
			continue
		}
		last = ctx.Context
		n, err := exepages.Release()
		if err != nil {
			caddy.Log().Warn("releasing the executable's startup pages", zap.Error(err))
		}
		caddy.Log().Debug("released the executable's startup pages", zap.Int64("bytes", n))
	}
}
