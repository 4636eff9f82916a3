package sim

import (
	"encoding/json"
	"fmt"
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

// allowInstitution counts a call in the institution-wide fixed window, aligned
// on multiples of the window (docs/S360.md, "Rate limits": every endpoint and operator
// shares it). Rejected calls do not use up the quota.
func (s *Server) allowInstitution() bool {
	now := s.now()
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.faults.RateLimit <= 0 {
		return true
	}
	if start := now.Truncate(time.Duration(s.faults.RateWindow)); !start.Equal(s.window) {
		s.window, s.windowN = start, 0
	}
	if s.windowN >= s.faults.RateLimit {
		return false
	}
	s.windowN++
	return true
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

func (s *Server) record(key string, status int, limited bool) {
	now := s.now()
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.calls[key]++
	s.statuses[strconv.Itoa(status)]++
	s.total++
	if limited {
		s.limited++
		return
	}
	window := time.Duration(s.faults.RateWindow)
	s.perMinute[now.Truncate(window)]++
	for t := range s.perMinute {
		if now.Sub(t) > 240*window { // keep about four hours at the default window
			delete(s.perMinute, t)
		}
	}
}

// resetCounters zeroes the counters, the rate-limit window and the floors.
func (s *Server) resetCounters() {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	s.calls, s.statuses, s.perMinute = map[string]int{}, map[string]int{}, map[time.Time]int{}
	s.limited, s.total = 0, 0
	s.window, s.windowN = time.Time{}, 0
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
	starts := make([]time.Time, 0, len(s.perMinute))
	for t := range s.perMinute {
		starts = append(starts, t)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	buckets := []bucket{}
	for _, t := range starts {
		buckets = append(buckets, bucket{iso(t), s.perMinute[t]})
	}
	return map[string]any{"calls": calls, "statuses": statuses, "rateLimited": s.limited, "floorRefused": floors,
		"total": s.total, "perMinute": buckets}
}
