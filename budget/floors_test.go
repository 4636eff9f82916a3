package budget

import (
	"testing"
	"time"
)

func TestRestoreFetched(t *testing.T) {
	const cat = "catalogService/getCatalogDetailed"
	b, clk := newTest(Config{})
	t0 := clk.Now()
	for _, tc := range []struct {
		name string
		key  string
		at   time.Time
		want time.Duration
	}{
		{"within the floor", "k1", t0.Add(-4 * time.Minute), 6 * time.Minute},
		{"floor passed", "k2", t0.Add(-11 * time.Minute), 0},
		{"no floor for the method", "k3", t0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := cat
			if tc.key == "k3" {
				name = "catalogService/getPOSConfig"
			}
			b.RestoreFetched(tc.key, name, tc.at)
			if w := b.FloorWait(tc.key, name); w != tc.want {
				t.Fatalf("waits %v, want %v", w, tc.want)
			}
		})
	}
	t.Run("an older mark does not replace a newer one", func(t *testing.T) {
		b.MarkFetched("k4", cat)
		b.RestoreFetched("k4", cat, t0.Add(-9*time.Minute))
		if w := b.FloorWait("k4", cat); w != 10*time.Minute {
			t.Fatalf("waits %v, want 10m", w)
		}
	})
}
