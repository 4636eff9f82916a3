package sim

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/s360edge/s360edge/internal/wait"
)

// Server is one simulated S-360 institution: web services, ticket shop and
// control API on a single handler.
type Server struct {
	cfg    Config
	key    []byte       // HMAC key of issued tokens
	offset atomic.Int64 // clock advance in nanoseconds (/_sim/clock)
	mux    *http.ServeMux

	mu          sync.RWMutex // guards the catalog, stock, orders and redirects
	cat         *catalog
	setupAt     time.Time
	setupN      int
	posID       int64
	orders      map[int64]*order
	orderList   []*order
	nextOrderID int64
	nextOpID    int64
	redirects   []redirect

	ctl       sync.Mutex // guards everything below
	faults    faults
	tokenSeq  int64 // id of the last issued token
	minToken  int64 // tokens with a smaller id count as expired
	calls     map[string]int
	statuses  map[string]int
	limited   int
	limitedBy map[string]int // rate-status answers by the limit hit (rateScope*)
	total     int
	perMinute map[time.Time]int
	// perEndpoint counts the calls not rate-limited per window, by
	// endpoint (the service, or auth).
	perEndpoint map[string]map[time.Time]int
	window      time.Time            // start of the current rate-limit window
	windowN     map[string]int       // calls counted in it: "" the institution's, "/<endpoint>" each endpoint's
	floors      map[string]time.Time // floor key → last accepted call
	// floorRefused counts, per "service/method", the calls refused by a
	// per-key floor (they also count in limited).
	floorRefused map[string]int

	corrupt corruptState // /_sim/corrupt, see corrupt.go
}

// New returns a simulator with the generated catalog of cfg.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, key: make([]byte, 32), mux: http.NewServeMux(),
		posID: 10228100000100, orders: map[int64]*order{}, nextOrderID: 10000702651, nextOpID: 10228310724400,
		faults: faults{Latency: duration(cfg.Latency), CatalogLatency: duration(cfg.CatalogLatency),
			InProgress: cfg.InProgress, RateStatus: cfg.RateStatus, RateLimit: cfg.RateLimit,
			RateWindow: duration(cfg.RateWindow), LimitScope: cfg.LimitScope, CatalogFloor: duration(cfg.CatalogFloor),
			AvailabilityFloor: duration(cfg.AvailabilityFloor), TokenTTL: duration(cfg.TokenTTL)},
	}
	_, _ = rand.Read(s.key)
	s.resetCounters()
	now := s.now()
	s.cat = generate(cfg.Products, cfg.Seed, now)
	s.setupAt = now.Truncate(time.Second)

	s.mux.HandleFunc("/tnseb/", s.serveAPI)
	s.mux.HandleFunc("/tnai/backend-apis/v1/auth", s.serveAPI)
	s.mux.HandleFunc("/tnco/backend-apis/v1/auth", s.serveAPI)
	s.mux.HandleFunc("GET /api/1/redirect/{page...}", s.serveRedirect)
	s.mux.HandleFunc("GET /shop/{page...}", s.serveShop)
	s.routeControl()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return s
}

// Handler returns the simulator's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) now() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }

// envelope is a JSON answer of a tnseb method.
type envelope map[string]any

type method func(s *Server, body []byte) (envelope, error)

var methods = map[string]method{
	"catalogService/getCatalogDetailed":                 (*Server).getCatalogDetailed,
	"catalogService/getCatalog":                         (*Server).getCatalog,
	"catalogService/getLastSetupUpdate":                 (*Server).getLastSetupUpdate,
	"catalogService/getPOSConfig":                       (*Server).getPOSConfig,
	"catalogService/isCatalogServiceAlive":              (*Server).isCatalogServiceAlive,
	"availabilityService/getEventAvailability":          (*Server).getEventAvailability,
	"availabilityService/getPerformanceAvailability":    (*Server).getPerformanceAvailability,
	"availabilityService/getProductAvailability":        (*Server).getProductAvailability,
	"availabilityService/getSeatsAvailability":          (*Server).getSeatsAvailability,
	"availabilityService/getUpdatedAvailabilities":      (*Server).getUpdatedAvailabilities,
	"availabilityService/getAvailableThemeAndLanguage":  (*Server).getAvailableThemeAndLanguage,
	"externalOrderFacade/createOrUpdateOrder":           (*Server).createOrUpdateOrder,
	"setupService/listSeasons":                          (*Server).listSeasons,
	"setupService/listAudienceSubCategories":            (*Server).listAudienceSubCategories,
	"setupService/listPriceLevels":                      (*Server).listPriceLevels,
	"setupService/listVatCodes":                         (*Server).listVatCodes,
	"setupService/searchProductsByCriteria":             (*Server).searchProductsByCriteria,
	"externalOrderHistoryService/listTicketsByCriteria": (*Server).listTicketsByCriteria,
}

func success(kv ...any) envelope {
	e := envelope{"statusCode": "success", "statusDetail": nil}
	for i := 0; i+1 < len(kv); i += 2 {
		e[kv[i].(string)] = kv[i+1]
	}
	return e
}

// failure is a business error: HTTP 200, statusCode "error", and the code in
// the configured error field (docs/S360.md, "Answers": that field is unknown).
func (s *Server) failure(code, message string) envelope {
	e := envelope{"statusCode": "error", "statusMessage": message, "statusDetail": message}
	e[s.cfg.ErrorField] = code
	return e
}

// parseAPIPath returns the counter key ("service/method" or "auth") of an API path.
func parseAPIPath(path string) (key string, ok bool) {
	if path == "/tnai/backend-apis/v1/auth" || path == "/tnco/backend-apis/v1/auth" {
		return "auth", true
	}
	parts := strings.Split(strings.TrimPrefix(path, "/tnseb/backend-apis/"), "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" || !validVersion(parts[1]) {
		return "unknown", false
	}
	return parts[0] + "/" + parts[2], true
}

// validVersion accepts S-360 version segments such as v1_33.
func validVersion(v string) bool {
	major, minor, ok := strings.Cut(strings.TrimPrefix(v, "v"), "_")
	digits := func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
	return ok && strings.HasPrefix(v, "v") && digits(major) && digits(minor)
}

// serveAPI runs the pipeline shared by the auth endpoint and every tnseb call.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	key, ok := parseAPIPath(r.URL.Path)
	if cw, cr := s.takeCorrupt(w, r, key); cw != nil {
		defer cw.finish()
		w, r = cw, cr
	}
	sw := &StatusWriter{ResponseWriter: w}
	limited, recorded := "", false // limited: the limit a rate-status answer says was hit
	defer func() {
		if !recorded {
			s.record(key, sw.Code, limited)
		}
	}()
	if !ok {
		writeError(sw, r, http.StatusNotFound, "not_found", "no such service, version or method")
		return
	}
	if r.Method != http.MethodPost {
		sw.Header().Set("Allow", http.MethodPost)
		writeError(sw, r, http.StatusMethodNotAllowed, "method_not_allowed", "only POST is supported")
		return
	}
	f := s.takeFault(key)
	switch {
	case f.down:
		recorded = true
		s.record(key, 0, "")
		abort(w)
		return
	case f.burst:
		limited = rateInjected
		writeRateLimited(sw, r, f.rateStatus, rateRefusal{Scope: rateInjected, Message: "rate limit exceeded (injected)"})
		return
	case f.fail:
		writeError(sw, r, http.StatusServiceUnavailable, "unavailable", "service unavailable (injected)")
		return
	}
	body, err := readBody(sw, r)
	if err != nil {
		writeError(sw, r, http.StatusRequestEntityTooLarge, "too_large", "request body too large")
		return
	}
	if refusal := s.allowRate(key); refusal != nil {
		limited = refusal.Scope
		writeRateLimited(sw, r, f.rateStatus, *refusal)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(sw, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil || obj == nil {
		writeError(sw, r, http.StatusBadRequest, "bad_request", "the body must be a JSON object")
		return
	}
	if key == "auth" {
		s.auth(sw, r, obj)
		return
	}
	if code, msg := s.checkBearer(r); code != "" {
		sw.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(sw, r, http.StatusUnauthorized, code, msg)
		return
	}
	h := methods[key]
	if h == nil {
		writeError(sw, r, http.StatusNotFound, "unknown_method", "unknown method "+key)
		return
	}
	delay := f.latency
	if key == "catalogService/getCatalogDetailed" || key == "catalogService/getCatalog" {
		delay += f.catalogLatency
	}
	var env envelope
	if key == "catalogService/getCatalogDetailed" && s.takeInProgress() {
		// The floor is not consumed: the caller is told to come back.
		env = envelope{"statusCode": "in_progress", "statusDetail": "Request is being processed, call again later",
			"requestState": "IN_PROGRESS"}
	} else if floor := s.floorFor(key); floor > 0 && !s.allowFloor(key, obj, floor) {
		limited = rateParameters
		writeRateLimited(sw, r, f.rateStatus, rateRefusal{Scope: rateParameters, Method: key, Interval: floor.String(),
			Message: key + " may be called once every " + floor.String() + " with the same parameters"})
		return
	} else if env, err = h(s, body); err != nil {
		writeError(sw, r, http.StatusBadRequest, "bad_request", "invalid parameters: "+err.Error())
		return
	}
	if delay > 0 && !wait.Sleep(r.Context(), delay) {
		return
	}
	env["requestId"] = nil
	if id, ok := obj["requestId"]; ok {
		env["requestId"] = id
	}
	writeJSON(sw, r, http.StatusOK, env)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<20))
	return buf.Bytes(), err
}

// abort closes the connection without an answer, like a host that is down.
func abort(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // net/http closes the connection quietly
	}
	_ = conn.Close()
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	writeJSON(w, r, status, map[string]string{"error": code, "message": message})
}

// writeJSON writes v, gzipped when the client accepts it (docs/S360.md,
// "Transport").
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"cannot encode the answer"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Add("Vary", "Accept-Encoding")
	if !acceptsGzip(r) {
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
		return
	}
	h.Set("Content-Encoding", "gzip")
	w.WriteHeader(status)
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	_, _ = zw.Write(b)
	_ = zw.Close()
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// StatusWriter remembers the status written, for the counters and the
// request log; Code stays 0 when the connection closed without an answer.
type StatusWriter struct {
	http.ResponseWriter
	Code int
}

func (w *StatusWriter) WriteHeader(code int) {
	if w.Code == 0 {
		w.Code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.Code == 0 {
		w.Code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
