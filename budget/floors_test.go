package budget

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestRestoreFetched(t *testing.T) {
	const cat = "catalogService/getCatalogDetailed"
	for _, tc := range []struct {
		name string
		key  string
		ago  time.Duration // how long before now the restored fetch was
		want time.Duration
	}{
		{"within the floor", "k1", 4 * time.Minute, 6 * time.Minute},
		{"floor passed", "k2", 11 * time.Minute, 0},
		{"no floor for the method", "k3", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, clk := newTest(Config{})
				name := cat
				if tc.key == "k3" {
					name = "catalogService/getPOSConfig"
				}
				b.RestoreFetched(tc.key, name, clk.Now().Add(-tc.ago))
				if w := b.FloorWait(tc.key, name); w != tc.want {
					t.Fatalf("waits %v, want %v", w, tc.want)
				}
			})
		})
	}
	t.Run("an older mark does not replace a newer one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, clk := newTest(Config{})
			b.MarkFetched("k4", cat)
			b.RestoreFetched("k4", cat, clk.Now().Add(-9*time.Minute))
			if w := b.FloorWait("k4", cat); w != 10*time.Minute {
				t.Fatalf("waits %v, want 10m", w)
			}
		})
	})
}
