package edge

import (
	"testing"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/upstream"
)

// Reconfigure applies every setting; a zero one means its default, never
// "keep the current value".
func TestReconfigureAppliesEverySetting(t *testing.T) {
	b := budget.New(budget.Config{Calls: 50, Window: time.Minute})
	e, err := Open(Options{Dir: t.TempDir(), Institution: "mosa", Gate: b, MaxBytes: 8 << 20, Timeout: 7 * time.Second,
		Waits: Waits{Foreground: time.Second, Order: 5 * time.Second}, Policy: Policy{StaleWhileRevalidate: time.Minute, StaleIfError: time.Minute, StaleTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, tc := range []struct {
		name       string
		in         Settings
		timeout    time.Duration
		waits      Waits
		swr        time.Duration
		maxBytes   int64
		limit      int
		inst       string
		setupPoll  time.Duration
		wantStarts int
	}{
		{"new values", Settings{Institution: "other", Timeout: 9 * time.Second, Waits: Waits{Foreground: 2 * time.Second, Order: 10 * time.Second},
			Policy: Policy{StaleWhileRevalidate: 2 * time.Minute}, MaxBytes: 16 << 20, Budget: &budget.Config{Calls: 70, Window: time.Minute},
			Watch: Watch{SetupPoll: time.Hour}},
			9 * time.Second, Waits{2 * time.Second, 10 * time.Second}, 2 * time.Minute, 16 << 20, 70, "other", time.Hour, 1},
		{"zero values are the defaults", Settings{Institution: "mosa", Budget: &budget.Config{Calls: 60, Window: time.Minute}},
			upstream.DefaultTimeout, Waits{3 * time.Second, 30 * time.Second}, time.Hour, cachestore.DefaultMaxBytes, 60, "mosa", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.Reconfigure(tc.in)
			s := e.Settings()
			if s.Timeout != tc.timeout || s.Waits != tc.waits || s.Policy.StaleWhileRevalidate != tc.swr || s.Institution != tc.inst || s.Watch.SetupPoll != tc.setupPoll {
				t.Errorf("settings %+v", s)
			}
			if got := e.Store().Stats().MaxBytes; got != tc.maxBytes {
				t.Errorf("store bound %d, want %d", got, tc.maxBytes)
			}
			if got := b.Stats().Limit; got != tc.limit {
				t.Errorf("budget limit %d, want %d", got, tc.limit)
			}
			e.mu.Lock()
			starts := e.watch.starts
			e.mu.Unlock()
			if starts != tc.wantStarts {
				t.Errorf("watch loops started %d times, want %d", starts, tc.wantStarts)
			}
		})
	}
}
