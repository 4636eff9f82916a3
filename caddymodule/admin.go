package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/orderq"
	"github.com/s360edge/s360edge/session"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin is the admin.api.s360 module: cache statistics and purges on
// Caddy's admin endpoint, under /s360/.
//
//	GET  /s360/             the status page (HTML when the client prefers it, else the stats)
//	GET  /s360/stats        every edge's counters, store size and generation
//	GET  /s360/generation   the catalog generation of every edge
//	POST /s360/purge        {} purges everything; {"class": "catalog"|"availability"},
//	                        {"key": "<canonical key>"} or {"tag": "product:<id>"} purge less;
//	                        "storage": "<dir>" picks one edge when there are several.
//	                        Soft by default: entries are marked stale, still served
//	                        (detail=purged) and refreshed; "hard": true deletes them
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.s360",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the admin routes.
func (Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/s360/", Handler: caddy.AdminHandlerFunc(handleStatus)},
		{Pattern: "/s360/stats", Handler: caddy.AdminHandlerFunc(handleStats)},
		{Pattern: "/s360/generation", Handler: caddy.AdminHandlerFunc(handleGeneration)},
		{Pattern: "/s360/purge", Handler: caddy.AdminHandlerFunc(handlePurge)},
	}
}

func handleStats(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return adminError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
	}
	return writeJSON(w, map[string]any{"edges": allStats()})
}

// statsView is one edge's statistics with its budget's.
type statsView struct {
	edge.Snapshot
	Budget     budget.Stats    `json:"budget"`
	PerMinute  []edge.Minute   `json:"budget_per_minute"` // the last hour, oldest first
	Catalog    cachestore.Ages `json:"catalog_ages"`
	CatalogErr string          `json:"catalog_error,omitempty"`
	// Cluster is absent without cluster mode.
	Cluster *cluster.Status `json:"cluster,omitempty"`
	// Quota is absent without a monthly quota.
	Quota *edge.QuotaStats `json:"quota,omitempty"`
	// Queue is the order queue's counts.
	Queue orderq.Stats `json:"order_queue"`
}

func budgetStats(e *edge.Edge) budget.Stats {
	if g := e.Gate(); g != nil {
		return g.Stats()
	}
	return budget.Stats{}
}

func handleGeneration(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return adminError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
	}
	out := map[string]uint64{}
	eachEdge(func(e *edge.Edge) { out[e.Store().Dir()] = e.Generation() })
	return writeJSON(w, map[string]any{"generations": out})
}

type purgeRequest struct {
	Storage string `json:"storage"`
	Class   string `json:"class"`
	Key     string `json:"key"`
	Tag     string `json:"tag"`
	// Hard deletes the entries; by default they are marked stale and
	// still served until refreshed, so no key is left without an answer.
	Hard bool `json:"hard"`
}

func handlePurge(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return adminError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
	}
	var req purgeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return adminError(w, http.StatusBadRequest, "invalid_request", "want a JSON object with optional storage, class, key, tag and hard: "+err.Error())
	}
	set := 0
	for _, s := range []string{req.Class, req.Key, req.Tag} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return adminError(w, http.StatusBadRequest, "invalid_request", "give at most one of class, key and tag")
	}
	var class cachestore.Class
	if req.Class != "" {
		c, err := cachestore.ParseClass(req.Class)
		if err != nil || c == cachestore.Other {
			return adminError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("class %q: want catalog or availability", req.Class))
		}
		class = c
	}
	purged, matched := 0, 0
	var failed error
	eachEdge(func(e *edge.Edge) {
		s := e.Store()
		if req.Storage != "" && s.Dir() != req.Storage {
			return
		}
		matched++
		n, err := e.Purge(r.Context(), edge.PurgeRequest{Class: class, Key: req.Key, Tag: req.Tag, Hard: req.Hard})
		purged += n
		failed = errors.Join(failed, err)
	})
	if failed != nil {
		caddy.Log().Named("admin.api.s360").Error("purge failed", zap.Error(failed))
		return adminError(w, http.StatusInternalServerError, "purge_failed", "purge failed: "+failed.Error())
	}
	if req.Storage != "" && matched == 0 {
		return adminError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no s360 cache open in %q", req.Storage))
	}
	return writeJSON(w, map[string]any{"purged": purged, "hard": req.Hard})
}

// adminError answers an admin request's error as s360edge answers all of
// its errors (session.WriteError).
func adminError(w http.ResponseWriter, status int, code, msg string) error {
	session.WriteError(w, status, code, msg)
	return nil
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = (*Admin)(nil)
