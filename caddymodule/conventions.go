package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/s360edge/s360edge/edge"
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

// placeholders sets the handler's placeholders (see the Handler doc) on
// the request's replacer; a nil one (a request that did not come through
// Caddy's server) is skipped.
type placeholders struct{ repl *caddy.Replacer }

func placeholdersOf(r *http.Request) placeholders {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return placeholders{repl}
}

func (p placeholders) call(c s360.Call) {
	if p.repl != nil {
		p.repl.Set("http.s360.method", c.Name())
		p.repl.Set("http.s360.class", c.Class.String())
	}
}

func (p placeholders) upstream(d time.Duration) {
	if p.repl != nil {
		p.repl.Set("http.s360.upstream_duration", d)
	}
}

func (p placeholders) done(w http.ResponseWriter) {
	if p.repl != nil {
		p.repl.Set("http.s360.cache_status", w.Header().Get("Cache-Status"))
	}
}

// calledFor is how long a request answered by the edge waited for S-360:
// took, unless the store answered without a call (a fresh or
// stale-while-revalidate hit, a feed copy, a generation or purged hit).
func calledFor(res edge.Result, took time.Duration) time.Duration {
	for _, d := range []string{"stale-timeout", "stale-if-error", "stale-throttled"} {
		if strings.HasSuffix(res.CacheStatus, "detail="+d) {
			return took
		}
	}
	if res.Hit {
		return 0
	}
	return took
}

func jsonEncode(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	writeBody(w, append(b, '\n'))
	return nil
}
