package caddymodule

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// edgeStats is one edge's statistics: its counters, its budget's, the
// budget's use per minute over the last hour, the ages of its catalog and
// its cluster's state. /s360/stats serves it as JSON, /s360/ as the status
// page.
func edgeStats(p pooledEdge) statsView {
	e := p.Edge
	ages, err := e.Store().ClassAges(cachestore.Catalog)
	v := statsView{Snapshot: e.Stats(), Budget: budgetStats(e), PerMinute: e.BudgetHistory(), Catalog: ages, Quota: e.Quota(), Queue: p.queue.Stats()}
	if err != nil {
		v.CatalogErr = err.Error()
	}
	if p.cluster != nil {
		st := p.cluster.Status()
		v.Cluster = &st
	}
	return v
}

func allStats() []statsView {
	out := []statsView{}
	eachPooled(func(p pooledEdge) { out = append(out, edgeStats(p)) })
	slices.SortFunc(out, func(a, b statsView) int { return strings.Compare(a.Dir, b.Dir) })
	return out
}

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"ago":   ago,
}).Parse(statusHTML))

// statusRefresh is how often the page reloads itself, in seconds.
const statusRefresh = 5

type statusPage struct {
	Now     time.Time
	Refresh int
	Edges   []statusEdge
}

// statusEdge is what the template shows of one edge; numbers the page
// derives (shares, ages, the chart) are computed here, not in the template.
type statusEdge struct {
	statsView
	Now            time.Time
	Paused         bool
	UsePct         float64 // calls in the window against the effective limit
	BytesPct       float64
	HitPct         float64 // fresh hits among cacheable requests
	Requests       uint64
	Classes        []classRow
	HistoryCalls   int
	PerMinuteLimit float64 // the effective limit over one minute
	Chart          chart
}

type classRow struct {
	Class                       string
	Hit, Miss, Coalesced, Stale uint64
}

// chart is the inline SVG of the calls per minute against the limit.
type chart struct {
	W, H, LimitY, LabelY float64
	Bars                 []bar
}

type bar struct {
	X, Y, W, H float64
	Title      string
}

const chartW, chartH = 600.0, 120.0

func newStatusEdge(v statsView, now time.Time) statusEdge {
	s := statusEdge{statsView: v, Now: now, Paused: v.Budget.PausedUntil.After(now)}
	if v.Budget.EffectiveLimit > 0 {
		s.UsePct = 100 * float64(v.Budget.Calls) / float64(v.Budget.EffectiveLimit)
	}
	if v.Store.MaxBytes > 0 {
		s.BytesPct = 100 * float64(v.Store.Bytes) / float64(v.Store.MaxBytes)
	}
	rows := map[string]*classRow{}
	var hits uint64
	for _, c := range v.Requests {
		r := rows[c.Class]
		if r == nil {
			r = &classRow{Class: c.Class}
			rows[c.Class] = r
		}
		switch c.Outcome {
		case "hit":
			r.Hit += c.Value
			hits += c.Value
		case "miss":
			r.Miss += c.Value
		case "coalesced":
			r.Coalesced += c.Value
		case "stale":
			r.Stale += c.Value
		}
		s.Requests += c.Value
	}
	for _, r := range rows {
		s.Classes = append(s.Classes, *r)
	}
	slices.SortFunc(s.Classes, func(a, b classRow) int { return strings.Compare(a.Class, b.Class) })
	if s.Requests > 0 {
		s.HitPct = 100 * float64(hits) / float64(s.Requests)
	}
	if w := v.Budget.Window; w > 0 {
		s.PerMinuteLimit = float64(v.Budget.EffectiveLimit) * float64(time.Minute) / float64(w)
	}
	s.Chart, s.HistoryCalls = newChart(v.PerMinute, s.PerMinuteLimit)
	return s
}

func newChart(minutes []edge.Minute, limit float64) (chart, int) {
	c := chart{W: chartW, H: chartH}
	top, total := limit, 0
	for _, m := range minutes {
		top = max(top, float64(m.Calls))
		total += m.Calls
	}
	top = max(top*1.1, 1)
	scale := func(v float64) float64 { return chartH - v*chartH/top }
	c.LimitY = scale(limit)
	c.LabelY = max(c.LimitY-3, 10)
	if n := len(minutes); n > 0 {
		w := chartW / float64(n)
		for i, m := range minutes {
			y := scale(float64(m.Calls))
			c.Bars = append(c.Bars, bar{X: float64(i) * w, Y: y, W: math.Max(w-1, 1), H: chartH - y,
				Title: fmt.Sprintf("%s UTC: %d calls", m.Start.Format("15:04"), m.Calls)})
		}
	}
	return c, total
}

// wantsHTML reports whether the client prefers text/html to JSON, as a
// browser navigation does; curl's */* gets JSON.
func wantsHTML(r *http.Request) bool {
	best := func(typ string) float64 {
		q := -1.0
		for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
			media, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(media), typ) {
				continue
			}
			v := 1.0
			for _, p := range strings.Split(params, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
					fmt.Sscan(val, &v)
				}
			}
			q = max(q, v)
		}
		return q
	}
	h := best("text/html")
	return h > 0 && h >= best("application/json")
}

// handleStatus serves /s360/ on the admin endpoint. Caddy's admin endpoint
// refuses a browser's navigation that carries no Origin or Referer (its
// cross-site protection), so browsers mostly reach the page through the
// s360_status handler; curl and API clients get the JSON here.
func handleStatus(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Path != "/s360/" {
		return adminError(w, http.StatusNotFound, "not_found", "no such s360 admin route: "+r.URL.Path)
	}
	if r.Method != http.MethodGet {
		return adminError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
	}
	return serveStatus(w, r)
}

// serveStatus writes the status page, or the stats as JSON when the client
// does not prefer HTML.
func serveStatus(w http.ResponseWriter, r *http.Request) error {
	stats := allStats()
	if !wantsHTML(r) {
		return writeJSON(w, map[string]any{"edges": stats})
	}
	now := time.Now().UTC()
	page := statusPage{Now: now, Refresh: statusRefresh}
	for _, v := range stats {
		page.Edges = append(page.Edges, newStatusEdge(v, now))
	}
	var buf bytes.Buffer // rendered whole first, so a template error is a clean 500
	if err := statusTmpl.Execute(&buf, page); err != nil {
		return fmt.Errorf("rendering the status page: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, err := w.Write(buf.Bytes())
	return err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

// ago says how long before now t was, or "never" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}
