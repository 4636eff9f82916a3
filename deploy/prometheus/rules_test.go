// Package prometheus holds s360edge's alert rules; its test checks them
// with promtool, so they run in `make test`.
package prometheus

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed (Debian package prometheus); CI must check the alert rules")
		}
		t.Skip("promtool not installed (Debian package prometheus): the alert rules are not checked")
	}
	return p
}

func TestRulesCheckAndFire(t *testing.T) {
	tool := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "s360edge.rules.yml"},
		{"test", "rules", "s360edge.rules.test.yml"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			out, err := exec.Command(tool, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestRulesMatchCode keeps the rules on metrics the module exports, every
// alert tested, and every runbook link on a section of docs/OPERATIONS.md.
func TestRulesMatchCode(t *testing.T) {
	rules := read(t, "s360edge.rules.yml")
	tests := read(t, "s360edge.rules.test.yml")
	metrics := read(t, "../../caddymodule/metrics.go")
	ops := strings.ToLower(read(t, "../../docs/OPERATIONS.md"))

	names := regexp.MustCompile(`caddy_s360_[a-z_]+`).FindAllString(rules, -1)
	if len(names) == 0 {
		t.Fatal("no caddy_s360_ metric in the rules")
	}
	for _, n := range names {
		if !strings.Contains(metrics, `"`+n+`"`) {
			t.Errorf("the rules use %s, which caddymodule/metrics.go does not export", n)
		}
	}
	alerts := regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`).FindAllStringSubmatch(rules, -1)
	if len(alerts) < 7 {
		t.Fatalf("%d alerts, want the 7 alerts of deploy/prometheus", len(alerts))
	}
	for _, a := range alerts {
		if !strings.Contains(tests, "alertname: "+a[1]+"\n") {
			t.Errorf("alert %s has no promtool test", a[1])
		}
	}
	links := regexp.MustCompile(`OPERATIONS\.md#([a-z0-9-]+)`).FindAllStringSubmatch(rules, -1)
	if len(links) != len(alerts) {
		t.Errorf("%d runbook links for %d alerts", len(links), len(alerts))
	}
	for _, l := range links {
		if !strings.Contains(ops, "\n### "+l[1]+"\n") {
			t.Errorf("runbook link #%s: no such heading in docs/OPERATIONS.md", l[1])
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
