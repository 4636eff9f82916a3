package edge

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
)

// The status page's chart counts the real budget's grants per minute, for
// the last hour only, refusals not included.
func TestBudgetHistoryCountsGrantsPerMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := budget.New(budget.Config{Calls: 10, Window: time.Minute, ClientQuota: -1})
		e := &Edge{opts: Options{Gate: g, Now: time.Now}}
		e.keepHistory()
		// Start on a minute boundary so that each burst falls in one minute.
		time.Sleep(time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)))
		grant := func(n int) {
			for range n {
				if ok, _ := g.TryAcquire(budget.Foreground); !ok {
					t.Fatal("the budget refused a slot within its limit")
				}
			}
		}
		grant(3)
		time.Sleep(time.Minute)
		grant(5)
		for range 20 { // the budget refuses most of these: only grants count
			g.TryAcquire(budget.Foreground)
		}
		granted := int(g.Stats().Granted)
		h := e.BudgetHistory()
		if len(h) != 60 {
			t.Fatalf("%d minutes, want 60", len(h))
		}
		if got := h[58].Calls + h[59].Calls; got != granted {
			t.Fatalf("last two minutes: %d calls, the budget granted %d", got, granted)
		}
		if h[58].Calls != 3 || h[59].Calls != granted-3 {
			t.Fatalf("minutes %+v, %+v: want 3 then %d", h[58], h[59], granted-3)
		}
		if !h[59].Start.Equal(time.Now().Truncate(time.Minute)) || h[59].Start.Sub(h[0].Start) != 59*time.Minute {
			t.Fatalf("minutes from %v to %v at %v", h[0].Start, h[59].Start, time.Now())
		}

		// An hour later the same ring slots count the new minutes only.
		time.Sleep(time.Hour)
		grant(1)
		h = e.BudgetHistory()
		total := 0
		for _, m := range h {
			total += m.Calls
		}
		if h[59].Calls != 1 || total != 1 {
			t.Fatalf("an hour later: current minute %d, total %d; want 1 and 1", h[59].Calls, total)
		}
	})
}

// A grant handed back unused leaves its minute; one from a minute the ring
// no longer holds changes nothing.
func TestBudgetHistoryRefunds(t *testing.T) {
	var h history
	t0 := time.Date(2026, 11, 29, 12, 0, 30, 0, time.UTC)
	h.grant(t0, 1)
	h.grant(t0, 1)
	h.grant(t0, -1)
	h.grant(t0.Add(-2*time.Hour), -1)
	m := h.last(t0)
	if m[59].Calls != 1 {
		t.Fatalf("current minute %d calls, want 1", m[59].Calls)
	}
	for _, x := range m[:59] {
		if x.Calls != 0 {
			t.Fatalf("minute %v: %d calls, want 0", x.Start, x.Calls)
		}
	}
}
