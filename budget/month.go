package budget

import (
	"errors"
	"math"
	"sync"
	"time"
)

// A monthly quota. S-360's OPEN API offers count an institution's calls per
// calendar month too (10,000 on the standard offer, more with the
// Performance Pack), on top of the rate per minute. Month counts the
// calls of the month (UTC) and plans the rest of it:
//
//   - remaining = quota - used;
//   - the order reserve is a tenth of the quota spread evenly over the
//     month: quota/10 × time left / length of the month, rounded up;
//   - the pace is the calls counted in the last hour, and the projected
//     month-end figure is used + pace × hours left;
//   - while the projection exceeds quota - order reserve, the plan holds:
//     buyers' misses and background refreshes are refused (orders, the
//     watchers' polls and token calls never are);
//   - the watchers share half of what the reserve leaves (quota - used -
//     reserve) in equal parts; each polls at the slowest interval that
//     spends its part by the end of the month, never faster than
//     configured and never slower than MaxStretch.

// MaxStretch is the longest interval the plan gives a watcher: S-360 asks
// for availability hourly, and a setup change is seen within the hour.
const MaxStretch = time.Hour

// orderReserveShare: the order reserve is quota/orderReserveShare over a
// whole month.
const orderReserveShare = 10

// paceMinutes is the pace's window, in minutes.
const paceMinutes = 60

// ErrMonthQuota says the plan of the monthly quota refused a call: at the
// pace of the last hour the quota would not last the month.
var ErrMonthQuota = errors.New("the monthly quota of S-360 calls would run out before the month ends at this pace")

// MonthLayout names a month ("2026-05").
const MonthLayout = "2006-01"

// Month counts an institution's upstream calls per calendar month against
// a quota, and plans the month. In a cluster (shared), the count is kept
// in one shared counter as well: Month then also tracks the calls counted
// here that the shared counter has not been told yet (Unsent, Sent). It is
// safe for concurrent use; Add may be called with a budget's lock held.
type Month struct {
	mu       sync.Mutex
	quota    int64
	shared   bool
	month    string           // the month counted (MonthLayout); "" before the first use
	used     int64            // its calls, as known here
	seen     int64            // the shared count last read for it
	unsent   map[string]int64 // calls counted here not yet in the shared count, by month
	pace     [paceMinutes + 1]paceNote
	changes  uint64 // bumped by every change of used or unsent
	refusals uint64
}

// paceNote is the month's count at the first look in one minute.
type paceNote struct{ minute, used int64 }

// NewMonth returns a month counter with no quota: it counts nothing until
// SetQuota. shared says the count is kept in a shared counter too.
func NewMonth(shared bool) *Month {
	m := &Month{shared: shared, unsent: map[string]int64{}}
	m.resetPace()
	return m
}

// SetQuota sets the calls allowed a month; 0 turns the quota off, and then
// calls are not counted.
func (m *Month) SetQuota(calls int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quota = int64(max(calls, 0))
}

// Quota is the calls allowed a month; 0 when off.
func (m *Month) Quota() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.quota)
}

func monthOf(t time.Time) string { return t.UTC().Format(MonthLayout) }

// bounds are the first instant of month and of the next, UTC.
func bounds(month string) (start, end time.Time) {
	start, _ = time.Parse(MonthLayout, month)
	return start, start.AddDate(0, 1, 0)
}

// rollLocked moves on to now's month when it began: its count starts at 0.
func (m *Month) rollLocked(now time.Time) {
	if cur := monthOf(now); cur > m.month {
		m.month, m.used, m.seen = cur, 0, 0
		m.resetPace()
		m.changes++
	}
}

func (m *Month) resetPace() {
	for i := range m.pace {
		m.pace[i] = paceNote{minute: -1}
	}
}

// noteLocked keeps the count at the first look in now's minute.
func (m *Month) noteLocked(now time.Time) {
	minute := now.Unix() / 60
	if n := &m.pace[minute%int64(len(m.pace))]; n.minute != minute {
		*n = paceNote{minute, m.used}
	}
}

// baseLocked is the count an hour before minute: the note of the earliest
// minute noted within the hour ending at minute; ok is false when there is
// none.
func (m *Month) baseLocked(minute int64) (used int64, ok bool) {
	for j := minute - paceMinutes; j <= minute; j++ {
		if n := m.pace[j%int64(len(m.pace))]; n.minute == j {
			return n.used, true
		}
	}
	return 0, false
}

// Add counts n calls granted at at (n = -1: a grant handed back unused),
// in at's month. Nothing is counted while the quota is off.
func (m *Month) Add(at time.Time, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quota == 0 || n == 0 {
		return
	}
	m.rollLocked(at)
	month := monthOf(at)
	if month == m.month {
		m.noteLocked(at)
		m.used += int64(n)
	}
	if m.shared {
		m.unsent[month] += int64(n)
	}
	m.changes++
}

// Unsent is what a month's shared count has not been told of this node's
// calls yet.
type Unsent struct {
	Month string // MonthLayout
	Calls int64  // calls counted here, not yet added to the shared count
	Seen  int64  // the shared count last read for Month (0: unknown): it cannot be less
}

// Unsent lists the months whose calls the shared count must be told of,
// now's month first (always, to read the others' calls, while the quota is
// on). Nil unless shared.
func (m *Month) Unsent(now time.Time) []Unsent {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.shared {
		return nil
	}
	m.rollLocked(now)
	var out []Unsent
	if m.quota > 0 || m.unsent[m.month] != 0 {
		out = append(out, Unsent{Month: m.month, Calls: m.unsent[m.month], Seen: m.seen})
	}
	for month, n := range m.unsent {
		if n != 0 && month != m.month {
			out = append(out, Unsent{Month: month, Calls: n})
		}
	}
	return out
}

// Sent records that the shared count of u.Month took u's calls and is now
// total (every node's calls).
func (m *Month) Sent(u Unsent, total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unsent[u.Month] -= u.Calls; m.unsent[u.Month] == 0 {
		delete(m.unsent, u.Month)
	}
	if u.Month == m.month {
		m.seen = total
		m.used = total + m.unsent[u.Month] // plus the calls counted since u was taken
	}
	m.changes++
}

// MonthState is what a Month keeps across restarts.
type MonthState struct {
	Month  string           `json:"month"`
	Used   int64            `json:"used"`
	Unsent map[string]int64 `json:"unsent,omitempty"`
}

// State is the month's count to persist, and a number that changes
// whenever the state does.
func (m *Month) State() (MonthState, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := MonthState{Month: m.month, Used: m.used}
	for month, n := range m.unsent {
		if s.Unsent == nil {
			s.Unsent = map[string]int64{}
		}
		s.Unsent[month] = n
	}
	return s, m.changes
}

// Restore adds a persisted state to the count: its calls of now's month,
// and (when shared) its calls not yet in the shared count.
func (m *Month) Restore(s MonthState, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(now)
	if s.Month == m.month {
		m.used += s.Used
		m.seen = max(m.seen, s.Used-s.Unsent[s.Month])
	}
	if m.shared {
		for month, n := range s.Unsent {
			if m.unsent[month] += n; m.unsent[month] == 0 {
				delete(m.unsent, month)
			}
		}
	}
	m.changes++
}

// MonthPlan is the month's count and plan at one instant.
type MonthPlan struct {
	Quota        int64     `json:"quota"`             // calls allowed a month
	Month        string    `json:"month"`             // the calendar month counted (UTC), e.g. "2026-05"
	Used         int64     `json:"used"`              // calls counted this month
	Remaining    int64     `json:"remaining"`         // quota - used, at least 0
	LastHour     int64     `json:"last_hour"`         // calls counted in the last hour: the pace
	Projected    int64     `json:"projected"`         // month-end figure at that pace: used + last_hour × hours left
	RunsOut      time.Time `json:"runs_out,omitzero"` // when the quota runs out at that pace; absent when it lasts the month
	OrderReserve int64     `json:"order_reserve"`     // calls kept for orders to the month's end
	Holding      bool      `json:"holding"`           // buyers' misses and refreshes are refused: projected > quota - order_reserve
	Refusals     uint64    `json:"refusals"`          // calls the plan refused since start
}

// Plan is the month's plan now.
func (m *Month) Plan(now time.Time) MonthPlan {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.planLocked(now)
}

func (m *Month) planLocked(now time.Time) MonthPlan {
	m.rollLocked(now)
	m.noteLocked(now)
	start, end := bounds(m.month)
	left := end.Sub(now)
	p := MonthPlan{Quota: m.quota, Month: m.month, Used: m.used, Remaining: max(m.quota-m.used, 0), Refusals: m.refusals}
	p.OrderReserve = int64(math.Ceil(float64(m.quota) / orderReserveShare * float64(left) / float64(end.Sub(start))))
	base, _ := m.baseLocked(now.Unix() / 60)
	p.LastHour = m.used - base
	p.Projected = m.used + int64(math.Round(float64(p.LastHour)*left.Hours()))
	p.Holding = p.Projected > m.quota-p.OrderReserve
	switch {
	case m.used >= m.quota:
		p.RunsOut = now
	case p.Projected > m.quota:
		p.RunsOut = now.Add(time.Duration(float64(m.quota-m.used) / float64(p.LastHour) * float64(time.Hour)))
	}
	return p
}

// Refuse says whether the plan refuses a buyer's miss or a refresh now,
// and when one may be let through (for Retry-After): once enough of the
// last hour's calls have left the pace's window, or at the month's end.
// Each refusal is counted.
func (m *Month) Refuse(now time.Time) (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quota == 0 {
		return false, 0
	}
	p := m.planLocked(now)
	if !p.Holding {
		return false, 0
	}
	m.refusals++
	_, end := bounds(m.month)
	allowed := m.quota - p.OrderReserve - m.used // what the rest of the month may take
	if allowed <= 0 {
		return true, end.Sub(now)
	}
	// With no new calls, the pace falls as minutes leave the window; the
	// plan lets calls through once the hour's calls are within allowed
	// over the hours left.
	need := m.used - int64(float64(allowed)/end.Sub(now).Hours())
	cur := now.Unix() / 60
	for k := int64(1); ; k++ {
		if base, ok := m.baseLocked(cur + k); !ok || base >= need {
			return true, max(min(time.Unix((cur+k)*60, 0).Sub(now), end.Sub(now)), time.Second)
		}
	}
}

// Interval is the interval the plan gives a watcher configured to poll
// every `every`, each of whose polls costs cost calls, when watchers
// watchers share the watchers' part: the slowest that spends its part by
// the month's end, at least every, at most MaxStretch (or every when that
// is longer). every itself while the quota is off.
func (m *Month) Interval(now time.Time, every time.Duration, cost, watchers int) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quota == 0 || every <= 0 {
		return every
	}
	p := m.planLocked(now)
	_, end := bounds(m.month)
	part := float64(m.quota-m.used-p.OrderReserve) / 2 / float64(max(watchers, 1))
	stretch := MaxStretch
	if part > 0 {
		stretch = min(time.Duration(float64(end.Sub(now))*float64(max(cost, 1))/part), MaxStretch)
	}
	return max(every, stretch)
}
