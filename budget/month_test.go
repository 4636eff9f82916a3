package budget

import (
	"testing"
	"testing/synctest"
	"time"
)

// In a synctest bubble the clock starts at 2000-01-01 00:00 UTC; sleeping
// moves it on with nothing else running.

// sleepUntil moves the bubble's clock to t.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// newQuota is a month counter with a quota of calls, at date in the
// bubble.
func newQuota(date time.Time, shared bool, calls int) *Month {
	sleepUntil(date)
	m := NewMonth(shared)
	m.SetQuota(calls)
	return m
}

func addN(m *Month, at time.Time, n int) {
	for range n {
		m.Add(at, 1)
	}
}

// The worked example of docs/OPERATIONS.md: 10,000 calls a month, on the
// 1st of a 30-day month and half-way through it.
func TestMonthPlanTenThousand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newQuota(time.Date(2000, 4, 1, 0, 0, 0, 0, time.UTC), false, 10000)
		now := time.Now()
		p := m.Plan(now)
		if p.Month != "2000-04" || p.Used != 0 || p.Remaining != 10000 || p.OrderReserve != 1000 || p.Holding || !p.RunsOut.IsZero() {
			t.Fatalf("the 1st: %+v", p)
		}
		for _, tc := range []struct {
			every      time.Duration
			cost, n    int
			want       time.Duration
			watchedFor string
		}{
			{time.Minute, 1, 2, 19*time.Minute + 12*time.Second, "setup poll: 2,250 polls for 30 days"},
			{time.Minute, 3, 2, 57*time.Minute + 36*time.Second, "updates poll of 3 batches"},
			{time.Minute, 4, 2, MaxStretch, "updates poll of 4 batches: at most an hour"},
			{time.Minute, 1, 1, 9*time.Minute + 36*time.Second, "one watcher alone takes the whole part"},
			{30 * time.Minute, 1, 2, 30 * time.Minute, "never faster than configured"},
			{2 * time.Hour, 1, 2, 2 * time.Hour, "a configured interval beyond the stretch stays"},
		} {
			if got := m.Interval(now, tc.every, tc.cost, tc.n); got != tc.want {
				t.Errorf("%s: %v, want %v", tc.watchedFor, got, tc.want)
			}
		}

		// 12 calls in the first half hour keep the projection at 8,646, in
		// the 9,000 the order reserve leaves; a 13th brings it to 9,367.
		addN(m, now, 12)
		sleepUntil(now.Add(30 * time.Minute))
		if p := m.Plan(time.Now()); p.LastHour != 12 || p.Projected != 8646 || p.Holding {
			t.Fatalf("12 calls: %+v", p)
		}
		if refused, _ := m.Refuse(time.Now()); refused {
			t.Fatal("refused under the pace the plan allows")
		}
		m.Add(time.Now(), 1)
		p = m.Plan(time.Now())
		if p.LastHour != 13 || p.Projected != 9367 || !p.Holding {
			t.Fatalf("13 calls: %+v", p)
		}

		// Half-way, 6,000 used: the reserve is 500, each watcher's part
		// 875 polls for 15 days.
		sleepUntil(time.Date(2000, 4, 16, 0, 0, 0, 0, time.UTC))
		m2 := NewMonth(false)
		m2.SetQuota(10000)
		m2.Restore(MonthState{Month: "2000-04", Used: 6000}, time.Now())
		if p := m2.Plan(time.Now()); p.OrderReserve != 500 || p.Remaining != 4000 {
			t.Fatalf("the 16th: %+v", p)
		}
		if got, want := m2.Interval(time.Now(), time.Minute, 1, 2), 1296000*time.Second/875; got != want {
			t.Fatalf("the 16th: setup poll every %v, want %v", got, want)
		}
	})
}

// The plan holds once the last hour's pace would overrun, tells when to
// try again, and lets calls through once those calls have left the hour.
func TestMonthHoldsWhileThePaceWouldOverrun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newQuota(time.Date(2000, 4, 1, 0, 1, 0, 0, time.UTC), false, 10000)
		addN(m, time.Now(), 13)
		sleepUntil(time.Date(2000, 4, 1, 0, 30, 0, 0, time.UTC))
		refused, retry := m.Refuse(time.Now())
		if !refused || retry != 32*time.Minute {
			t.Fatalf("Refuse: %v, retry in %v; want refused until the calls of 00:01 leave the hour (00:62)", refused, retry)
		}
		time.Sleep(retry - time.Minute)
		if refused, _ := m.Refuse(time.Now()); !refused {
			t.Fatal("let through a minute early")
		}
		time.Sleep(time.Minute)
		p := m.Plan(time.Now())
		if refused, _ := m.Refuse(time.Now()); refused || p.LastHour != 0 || p.Used != 13 {
			t.Fatalf("an hour after the calls: refused %v, %+v", refused, p)
		}
		if p.Refusals != 2 {
			t.Fatalf("%d refusals counted, want 2", p.Refusals)
		}

		// Spent: refused to the end of the month, and it has run out.
		addN(m, time.Now(), 9000)
		refused, retry = m.Refuse(time.Now())
		end := time.Date(2000, 5, 1, 0, 0, 0, 0, time.UTC)
		if !refused || retry != time.Until(end) {
			t.Fatalf("spent: refused %v, retry in %v; want the month's end", refused, retry)
		}
		if p := m.Plan(time.Now()); p.RunsOut.IsZero() || p.RunsOut.After(time.Now().Add(time.Hour)) {
			t.Fatalf("spent at this pace within the hour: runs out %v", p.RunsOut)
		}
		if got := m.Interval(time.Now(), time.Minute, 1, 2); got != MaxStretch {
			t.Fatalf("spent: watchers every %v, want %v", got, MaxStretch)
		}
	})
}

// Runs out: at the pace of the last hour, the date the quota is reached.
func TestMonthRunsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newQuota(time.Date(2000, 4, 1, 0, 0, 0, 0, time.UTC), false, 10000)
		addN(m, time.Now(), 100) // 100 an hour: the 9,900 left last 99 hours
		p := m.Plan(time.Now())
		if want := time.Now().Add(99 * time.Hour); !p.RunsOut.Equal(want) || p.Projected != 72100 {
			t.Fatalf("runs out %v, want %v; projected %d", p.RunsOut, want, p.Projected)
		}
	})
}

// A new month starts at 0 (UTC); a cluster's calls of the month before
// that the shared count has not had yet are still sent, to that month.
func TestMonthRollover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newQuota(time.Date(2000, 1, 31, 23, 59, 59, 0, time.UTC), true, 10000)
		jan := time.Now()
		addN(m, jan, 5)
		time.Sleep(2 * time.Second)
		m.Add(jan, -1) // a January grant handed back in February
		m.Add(time.Now(), 1)
		p := m.Plan(time.Now())
		if p.Month != "2000-02" || p.Used != 1 || p.LastHour != 1 {
			t.Fatalf("February: %+v", p)
		}
		u := m.Unsent(time.Now())
		if len(u) != 2 || u[0] != (Unsent{Month: "2000-02", Calls: 1}) || u[1] != (Unsent{Month: "2000-01", Calls: 4}) {
			t.Fatalf("unsent %+v", u)
		}
		// February has 29 days in 2000: the order reserve is its tenth.
		if p.OrderReserve != 1000 {
			t.Fatalf("order reserve %d", p.OrderReserve)
		}
	})
}

// In a cluster the shared count is what every node used: the node's view
// is that count plus its own calls not sent yet; a failed send keeps them.
func TestMonthSharedCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMonth(true)
		m.SetQuota(500)
		addN(m, time.Now(), 5)
		u := m.Unsent(time.Now())
		if len(u) != 1 || u[0] != (Unsent{Month: "2000-01", Calls: 5}) {
			t.Fatalf("unsent %+v", u)
		}
		addN(m, time.Now(), 2) // while the 5 are being sent
		m.Sent(u[0], 12)       // another node made 7
		if p := m.Plan(time.Now()); p.Used != 14 {
			t.Fatalf("used %d, want the shared 12 and 2 unsent", p.Used)
		}
		// Not sent (Redis out of reach): kept, with the count last seen.
		if u := m.Unsent(time.Now()); len(u) != 1 || u[0] != (Unsent{Month: "2000-01", Calls: 2, Seen: 12}) {
			t.Fatalf("unsent %+v", u)
		}
		// Persisted and restored, as by a restart.
		s, _ := m.State()
		r := NewMonth(true)
		r.SetQuota(500)
		r.Restore(s, time.Now())
		if u := r.Unsent(time.Now()); len(u) != 1 || u[0] != (Unsent{Month: "2000-01", Calls: 2, Seen: 12}) {
			t.Fatalf("restored unsent %+v", u)
		}
		if p := r.Plan(time.Now()); p.Used != 14 {
			t.Fatalf("restored used %d", p.Used)
		}
	})
}

// Off, nothing is counted, planned or refused.
func TestMonthOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMonth(true)
		addN(m, time.Now(), 3)
		if refused, _ := m.Refuse(time.Now()); refused {
			t.Fatal("refused without a quota")
		}
		if got := m.Interval(time.Now(), time.Minute, 1, 2); got != time.Minute {
			t.Fatalf("interval %v without a quota", got)
		}
		if u := m.Unsent(time.Now()); len(u) != 0 {
			t.Fatalf("unsent %+v without a quota", u)
		}
		if s, _ := m.State(); s.Used != 0 || len(s.Unsent) != 0 {
			t.Fatalf("state %+v without a quota", s)
		}
	})
}
