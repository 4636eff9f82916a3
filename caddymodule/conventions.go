package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/s360"
)

// writeBody writes b once the headers are out. A failed write means the
// client is gone: abort as Caddy's reverse_proxy does, rather than return
// an error that makes Caddy log a 500 and try to write an error page on
// the same response.
func writeBody(w http.ResponseWriter, b []byte) {
	if _, err := w.Write(b); err != nil {
		panic(http.ErrAbortHandler)
	}
}

// placeholders are the handler's placeholders (see the Handler doc), given
// to the request's replacer as one provider that answers when asked (an
// access log's format, a later handler): a hit pays no map writes for
// them. A request that did not come through Caddy's server has no
// replacer: nil, and every method is a no-op.
type placeholders struct {
	w        http.ResponseWriter
	call     s360.Call
	upstream time.Duration
	called   bool // upstream is set
}

func placeholdersOf(w http.ResponseWriter, r *http.Request) *placeholders {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return nil
	}
	p := &placeholders{w: w}
	repl.Map(p.get)
	return p
}

func (p *placeholders) get(key string) (any, bool) {
	switch key {
	case "http.s360.method":
		return p.call.Name(), true
	case "http.s360.class":
		return p.call.Class.String(), true
	case "http.s360.upstream_duration":
		return p.upstream, p.called
	case "http.s360.cache_status":
		return p.w.Header().Get("Cache-Status"), true
	}
	return nil, false
}

func (p *placeholders) setCall(c s360.Call) {
	if p != nil {
		p.call = c
	}
}

func (p *placeholders) setUpstream(d time.Duration) {
	if p != nil {
		p.upstream, p.called = d, true
	}
}
