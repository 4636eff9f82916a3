package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A reload that fails leaves the running settings exactly as they were; one
// that loads applies all of its settings, max_size included.
func TestFailedReloadKeepsTheRunningSettings(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, "rate_limit 100 1m"))
	settings := func() (limit int, maxBytes int64) {
		t.Helper()
		var stats struct {
			Edges []struct {
				Budget struct{ Limit int }
				Store  struct {
					MaxBytes int64 `json:"max_bytes"`
				}
			}
		}
		getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
		if len(stats.Edges) != 1 {
			t.Fatalf("%d edges in /s360/stats, want 1", len(stats.Edges))
		}
		return stats.Edges[0].Budget.Limit, stats.Edges[0].Store.MaxBytes
	}
	limit, maxBytes := settings()
	if limit != 100 {
		t.Fatalf("limit %d after the first load, want 100", limit)
	}

	// The second site's handler fails Provision (its operator is unset)
	// while the first one asks for new limits on the shared edge.
	e.write(caddyfile(s, "rate_limit 90 1m\n\t\tmax_size 33554432") + fmt.Sprintf(`
http://localhost:1 {
	s360 {
		upstream %[1]s
		operator {env.S360_OPERATOR_NEVER_SET}
		secret   x
		shop     %[1]s
	}
}
`, s.URL))
	out, err := exec.Command(filepath.Join(binDir, "s360edge"), "reload", "--config", e.Config, "--adapter", "caddyfile", "--address", e.Admin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "s360: operator: missing (is its environment variable set?)") {
		t.Fatalf("the bad reload: err %v, want the operator error; output:\n%s", err, out)
	}
	if l, m := settings(); l != 100 || m != maxBytes {
		t.Fatalf("after the failed reload: limit %d, max_bytes %d; want the running 100 and %d", l, m, maxBytes)
	}

	e.Reload(t, caddyfile(s, "rate_limit 90 1m\n\t\tmax_size 33554432"))
	if l, m := settings(); l != 90 || m != 33554432 {
		t.Fatalf("after the good reload: limit %d, max_bytes %d; want 90 and 33554432", l, m)
	}
}
