package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// duration is a time.Duration written as "1m30s" in JSON.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("durations are strings such as \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("bad duration %q", s)
	}
	*d = duration(v)
	return nil
}

// faults are the switches of /_sim/faults, seeded from Config.
// Fail5xx, Burst509 and InProgress count down as calls consume them.
type faults struct {
	Latency           duration `json:"latency"`
	CatalogLatency    duration `json:"catalogLatency"`
	Fail5xx           int      `json:"fail5xx"`
	Burst509          int      `json:"burst509"`
	InProgress        int      `json:"inProgress"`
	RateStatus        int      `json:"rateStatus"`
	RateLimit         int      `json:"rateLimit"`
	RateWindow        duration `json:"rateWindow"`
	LimitScope        string   `json:"limitScope"`
	CatalogFloor      duration `json:"catalogFloor"`
	AvailabilityFloor duration `json:"availabilityFloor"`
	TokenTTL          duration `json:"tokenTTL"`
	Down              bool     `json:"down"`
}

func (f faults) validate() error {
	switch {
	case f.Fail5xx < 0 || f.Burst509 < 0 || f.InProgress < 0 || f.RateLimit < 0:
		return fmt.Errorf("counts must not be negative")
	case f.RateStatus < 400 || f.RateStatus > 599:
		return fmt.Errorf("rateStatus must be an HTTP error status such as 509 or 429")
	case f.RateWindow <= 0 || f.TokenTTL <= 0:
		return fmt.Errorf("rateWindow and tokenTTL must be positive")
	case f.LimitScope != ScopeInstitution && f.LimitScope != ScopeEndpoint:
		return fmt.Errorf("limitScope must be %q or %q", ScopeInstitution, ScopeEndpoint)
	}
	return nil
}

// callFaults is what the faults mean for one call.
type callFaults struct {
	down, burst, fail       bool
	rateStatus              int
	latency, catalogLatency time.Duration
}

// takeFault consumes the one-shot faults that apply to a call of key.
func (s *Server) takeFault(key string) callFaults {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	f := &s.faults
	c := callFaults{down: f.Down, rateStatus: f.RateStatus,
		latency: time.Duration(f.Latency), catalogLatency: time.Duration(f.CatalogLatency)}
	if c.down {
		return c
	}
	if f.Burst509 > 0 {
		f.Burst509--
		c.burst = true
	} else if f.Fail5xx > 0 && key != "auth" {
		f.Fail5xx--
		c.fail = true
	}
	return c
}

func (s *Server) takeInProgress() bool {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.faults.InProgress > 0 {
		s.faults.InProgress--
		return true
	}
	return false
}

// What RateLimit counts (Config.LimitScope).
const (
	// ScopeInstitution: every call of the institution, summed over every
	// endpoint (platform.secutix.com/backend/api_rate_limits, 180 a minute).
	ScopeInstitution = "institution"
	// ScopeEndpoint: the calls of each endpoint (one published service;
	// auth is one too) separately (the older REST and SOAP standards
	// pages: 60 a minute per endpoint per institution).
	ScopeEndpoint = "endpoint"
)

// The limits a rate-status answer can say were hit: the rate limit's
// scope (ScopeInstitution, ScopeEndpoint), a method's per-parameters
// floor, or an injected burst.
const (
	rateParameters = "parameters"
	rateInjected   = "injected"
)

// rateRefusal is the body of a rate-status answer: which limit was hit.
type rateRefusal struct {
	Error    string `json:"error"`              // always rate_limited
	Scope    string `json:"scope"`              // institution, endpoint, parameters or injected
	Endpoint string `json:"endpoint,omitempty"` // with endpoint: the service (or auth)
	Method   string `json:"method,omitempty"`   // with parameters: service/method
	Limit    int    `json:"limit,omitempty"`    // with institution and endpoint: calls per window
	Window   string `json:"window,omitempty"`   // their window
	Interval string `json:"interval,omitempty"` // with parameters: the floor
	Message  string `json:"message"`
}

func writeRateLimited(w http.ResponseWriter, r *http.Request, status int, refusal rateRefusal) {
	refusal.Error = "rate_limited"
	writeJSON(w, r, status, refusal)
}

// endpointOf is the endpoint a call counts against in ScopeEndpoint: its
// service ("catalogService"), or the key itself ("auth", "unknown").
func endpointOf(key string) string {
	service, _, _ := strings.Cut(key, "/")
	return service
}

// allowRate counts a call of key in its fixed window, aligned on
// multiples of the window: the institution's (docs/S360.md, "Rate
// limits": every endpoint and operator shares it), or with ScopeEndpoint
// its endpoint's. Refused calls do not
// use up the quota. It returns nil when the call may go on.
func (s *Server) allowRate(key string) *rateRefusal {
	now := s.now()
	s.ctl.Lock()
	defer s.ctl.Unlock()
	f := &s.faults
	if f.RateLimit <= 0 {
		return nil
	}
	if start := now.Truncate(time.Duration(f.RateWindow)); !start.Equal(s.window) {
		s.window = start
		clear(s.windowN)
	}
	// Both counts are kept, so that switching the scope at run time
	// (/_sim/faults) starts from the window's calls.
	ep := endpointOf(key)
	counted := ""
	if f.LimitScope == ScopeEndpoint {
		counted = "/" + ep
	}
	if s.windowN[counted] < f.RateLimit {
		s.windowN[""]++
		s.windowN["/"+ep]++
		return nil
	}
	window := time.Duration(f.RateWindow).String()
	if counted == "" {
		return &rateRefusal{Scope: ScopeInstitution, Limit: f.RateLimit, Window: window,
			Message: fmt.Sprintf("rate limit of institution %s exceeded: %d calls per %s, summed over every endpoint", s.cfg.Institution, f.RateLimit, window)}
	}
	return &rateRefusal{Scope: ScopeEndpoint, Endpoint: ep, Limit: f.RateLimit, Window: window,
		Message: fmt.Sprintf("rate limit of endpoint %s of institution %s exceeded: %d calls per %s", ep, s.cfg.Institution, f.RateLimit, window)}
}

func (s *Server) floorFor(key string) time.Duration {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	switch {
	case key == "catalogService/getCatalogDetailed" || key == "catalogService/getCatalog":
		return time.Duration(s.faults.CatalogFloor)
	case strings.HasPrefix(key, "availabilityService/"):
		return time.Duration(s.faults.AvailabilityFloor)
	}
	return 0
}

// allowFloor enforces a method's minimum interval per identical body,
// requestId aside (docs/S360.md, "Rate limits": getCatalogDetailed and
// getCatalog, and availability methods, with the same parameters).
func (s *Server) allowFloor(key string, obj map[string]json.RawMessage, floor time.Duration) bool {
	fk := key + " " + canonical(obj)
	now := s.now()
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if last, ok := s.floors[fk]; ok && now.Sub(last) < floor {
		s.floorRefused[key]++
		return false
	}
	if len(s.floors) > 100000 { // a client spraying distinct bodies: forget old entries
		for k, t := range s.floors {
			if now.Sub(t) >= floor {
				delete(s.floors, k)
			}
		}
	}
	s.floors[fk] = now
	return true
}

// canonical renders a body with sorted keys and without requestId.
func canonical(obj map[string]json.RawMessage) string {
	m := make(map[string]any, len(obj))
	for k, raw := range obj {
		if k == "requestId" {
			continue
		}
		var v any
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.UseNumber()
		if d.Decode(&v) != nil {
			v = string(raw)
		}
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// record counts an API call; limited is the limit its rate-status answer
// said was hit, "" when it was not refused so.
func (s *Server) record(key string, status int, limited string) {
	now := s.now()
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.calls[key]++
	s.statuses[strconv.Itoa(status)]++
	s.total++
	if limited != "" {
		s.limited++
		s.limitedBy[limited]++
		return
	}
	window := time.Duration(s.faults.RateWindow)
	start := now.Truncate(window)
	if s.perMinute[start] == 0 { // a new window: drop the buckets of long ago
		for _, m := range s.perEndpoint {
			pruneBuckets(m, now, window)
		}
		pruneBuckets(s.perMinute, now, window)
	}
	s.perMinute[start]++
	ep := s.perEndpoint[endpointOf(key)]
	if ep == nil {
		ep = map[time.Time]int{}
		s.perEndpoint[endpointOf(key)] = ep
	}
	ep[start]++
}

// pruneBuckets keeps about four hours of buckets at the default window.
func pruneBuckets(m map[time.Time]int, now time.Time, window time.Duration) {
	for t := range m {
		if now.Sub(t) > 240*window {
			delete(m, t)
		}
	}
}

// resetCounters zeroes the counters, the rate-limit window and the floors.
func (s *Server) resetCounters() {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.calls, s.statuses, s.perMinute = map[string]int{}, map[string]int{}, map[time.Time]int{}
	s.limited, s.total, s.limitedBy = 0, 0, map[string]int{}
	s.perEndpoint = map[string]map[time.Time]int{}
	s.window, s.windowN = time.Time{}, map[string]int{}
	s.floors, s.floorRefused = map[string]time.Time{}, map[string]int{}
}

type bucket struct {
	Start string `json:"start"`
	Calls int    `json:"calls"`
}

func (s *Server) counters() map[string]any {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	// 200 and the rate status are always present, so clients can read them.
	calls, statuses, floors := map[string]int{}, map[string]int{"200": 0, strconv.Itoa(s.faults.RateStatus): 0}, map[string]int{}
	for k, v := range s.floorRefused {
		floors[k] = v
	}
	for k, v := range s.calls {
		calls[k] = v
	}
	for k, v := range s.statuses {
		statuses[k] = v
	}
	limitedBy := map[string]int{}
	for k, v := range s.limitedBy {
		limitedBy[k] = v
	}
	byEndpoint := map[string][]bucket{}
	for ep, m := range s.perEndpoint {
		byEndpoint[ep] = sortedBuckets(m)
	}
	return map[string]any{"calls": calls, "statuses": statuses, "rateLimited": s.limited, "rateLimitedBy": limitedBy,
		"floorRefused": floors, "total": s.total, "perMinute": sortedBuckets(s.perMinute), "perMinuteByEndpoint": byEndpoint}
}

// sortedBuckets lists per-window counts, oldest first.
func sortedBuckets(m map[time.Time]int) []bucket {
	starts := make([]time.Time, 0, len(m))
	for t := range m {
		starts = append(starts, t)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	buckets := []bucket{}
	for _, t := range starts {
		buckets = append(buckets, bucket{iso(t), m[t]})
	}
	return buckets
}
