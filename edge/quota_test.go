package edge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// These tests run the edge with the real budget and a real Badger store in
// a synctest bubble (see economy_test.go), and a monthly quota.

// openQuota opens an edge on dir with a real budget (default limits),
// policy p and a quota of quota calls a month.
func openQuota(t *testing.T, dir string, stub *s360Stub, p Policy, quota int, w Watch) *economy {
	t.Helper()
	e, err := Open(Options{Dir: dir, Institution: "mosa", Policy: p, Gate: budget.New(budget.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Timeout: 5 * time.Second,
		Transport: stub.transport(nil), Gate: e})
	e.Attach(c)
	e.Reconfigure(Settings{Institution: "mosa", Policy: p, Quota: quota, Watch: w})
	return &economy{e: e, client: c, stub: stub}
}

var order = s360.Call{Service: "externalOrderFacade", Version: "v1_33", Method: "createOrUpdateOrder", Class: s360.Order}

// do makes one call the way the handler makes orders and pass-through
// calls, at priority p.
func (v *economy) do(t *testing.T, call s360.Call, p Priority) error {
	t.Helper()
	resp, err := v.client.Do(context.Background(), upstream.CallOf(call, "", p), []byte(`{}`))
	if err == nil && resp.Status != http.StatusOK {
		t.Fatalf("%s: HTTP %d", call.Name(), resp.Status)
	}
	return err
}

// Every call the budget grants counts, token calls and orders included;
// the count is in the store, and a reopened edge goes on from it.
func TestQuotaCountsEveryGrantAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	var granted uint64
	synctest.Test(t, func(t *testing.T) {
		v := openQuota(t, dir, newStub(), Policy{}, 10000, Watch{})
		v.serve(t, avail, `{"performanceIds":[1]}`) // the token, then the call
		v.serve(t, avail, `{"performanceIds":[2]}`)
		v.serve(t, avail, `{"performanceIds":[2]}`) // a hit: no call
		if err := v.do(t, order, PriorityOrder); err != nil {
			t.Fatal(err)
		}
		granted = v.e.Gate().(*budget.Budget).Stats().Granted
		if p := v.e.Quota(); granted != 4 || p.Used != int64(granted) || p.Month != "2000-01" {
			t.Fatalf("granted %d, counted %+v", granted, p)
		}
		time.Sleep(quotaSync) // persisted by the sync loop
		synctest.Wait()
		b, err := v.e.Store().GetMeta(metaQuota)
		var s budget.MonthState
		if err != nil || json.Unmarshal(b, &s) != nil || s.Used != 4 || s.Month != "2000-01" {
			t.Fatalf("persisted %s (%v)", b, err)
		}
		v.e.Close()
	})
	synctest.Test(t, func(t *testing.T) {
		v := openQuota(t, dir, newStub(), Policy{}, 10000, Watch{})
		if p := v.e.Quota(); p.Used != int64(granted) {
			t.Fatalf("after reopening: %d calls this month, want %d", p.Used, granted)
		}
		v.serve(t, avail, `{"performanceIds":[3]}`)
		v.e.Close() // the count is persisted on the way out
		v = openQuota(t, dir, newStub(), Policy{}, 10000, Watch{})
		if p := v.e.Quota(); p.Used != int64(granted)+2 {
			t.Fatalf("after the second reopening: %d calls, want %d", p.Used, granted+2)
		}
	})
}

// Once the plan holds, a buyer's miss gets the stored answer stale (as
// when the budget is spent), a key never stored gets the quota's refusal
// with a Retry-After; orders and the watchers' polls still go through.
func TestQuotaHoldServesStaleAndRefusesMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newStub()
		stub.on("getLastSetupUpdate", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"statusCode":"success","lastSetupUpdate":"x"}`)
		})
		p := Policy{MaxAge: map[string]time.Duration{"availabilityService/*": time.Minute}, StaleWhileRevalidate: time.Nanosecond}
		v := openQuota(t, t.TempDir(), stub, p, 1200, Watch{})
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; fwd=miss; stored", "echo")
		// Two calls this hour (the token, the miss) are some 1,500 by the
		// month's end at this pace: more than the 1,080 the order reserve
		// leaves. The token alone (745) was not.
		if q := v.e.Quota(); !q.Holding || q.Used != 2 || q.Projected != 1490 || q.OrderReserve != 120 {
			t.Fatalf("plan %+v", q)
		}
		time.Sleep(2 * time.Minute)
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; hit; ttl=-60; detail=stale-throttled", "echo")
		r := v.serve(t, avail, `{"performanceIds":[2]}`)
		var we *budget.WaitError
		if !errors.Is(r.Err, budget.ErrMonthQuota) || !errors.As(r.Err, &we) || we.RetryIn <= 0 || r.Entry != nil {
			t.Fatalf("a miss without a stored answer: %+v", r)
		}
		if n := stub.count("getEventAvailability"); n != 1 {
			t.Fatalf("%d availability calls reached S-360, want 1", n)
		}
		if err := v.do(t, order, PriorityOrder); err != nil {
			t.Fatalf("an order while the plan holds: %v", err)
		}
		mustPoll(t, v.e.pollSetup)
		// Counted: the first token and miss, the token renewed by the
		// stale request (the fake's tokens last 45 s), the order, the poll.
		q, b := v.e.Quota(), v.e.Gate().(*budget.Budget).Stats()
		if stub.count("createOrUpdateOrder") != 1 || stub.count("getLastSetupUpdate") != 1 || q.Used != 5 || q.Used != int64(b.Granted) || q.Refusals != 2 {
			t.Fatalf("order %d, poll %d, granted %d, plan %+v", stub.count("createOrUpdateOrder"), stub.count("getLastSetupUpdate"), b.Granted, q)
		}
		if b.Rejections != 0 {
			t.Fatalf("the budget saw %d refusals: the plan refuses before a slot is asked for", b.Rejections)
		}
	})
}

// The watchers poll at the plan's interval: with 10,000 calls a month on
// the 1st of January (31 days), every 19m50s rather than every minute.
func TestQuotaStretchesTheWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newStub()
		stub.on("getLastSetupUpdate", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"statusCode":"success","lastSetupUpdate":"x"}`)
		})
		v := openQuota(t, t.TempDir(), stub, Policy{}, 10000, Watch{SetupPoll: time.Minute, UpdatesPoll: time.Minute})
		time.Sleep(time.Hour)
		synctest.Wait()
		// At 0, about 19m50s, 39m41s and 59m31s.
		if n := stub.count("getLastSetupUpdate"); n != 4 {
			t.Fatalf("%d setup polls in an hour, want 4", n)
		}
		q := v.e.Quota()
		if q.SetupInterval < 19*time.Minute+45*time.Second || q.SetupInterval > 19*time.Minute+55*time.Second || q.UpdatesInterval != q.SetupInterval {
			t.Fatalf("plan %+v", q)
		}

		// Without the quota (a reload), the next poll is due at once, the
		// next ones every minute.
		v.e.Reconfigure(Settings{Institution: "mosa", Watch: Watch{SetupPoll: time.Minute, UpdatesPoll: time.Minute}})
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := stub.count("getLastSetupUpdate"); n < 13 || n > 15 {
			t.Fatalf("%d setup polls, want 4 and some 10 more after the quota went", n)
		}
		if v.e.Quota() != nil {
			t.Fatal("a plan without a quota")
		}
	})
}
