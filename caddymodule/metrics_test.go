package caddymodule

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsRegisterOnceAndLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := registerMetrics(reg); err != nil {
		t.Fatalf("second registration (another handler, same config): %v", err)
	}
	problems, err := testutil.CollectAndLint(collector{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n < len(scalars) {
		t.Fatalf("gathered %d metrics (%v), want at least %d", n, err, len(scalars))
	}
	for _, s := range scalars {
		if !strings.HasPrefix(s.desc.String(), `Desc{fqName: "caddy_s360_`) {
			t.Errorf("metric outside caddy_s360_: %s", s.desc)
		}
	}
}

// The method label takes the allow-list's names and the token call; any
// other method (allow "service/*" lets any name through) is "other".
func TestMethodLabelIsBounded(t *testing.T) {
	for m, want := range map[string]string{
		"availabilityService/getEventAvailability": "availabilityService/getEventAvailability",
		"auth": "auth",
		"externalOrderHistoryService/listTicketsByCriteria": "other",
		"availabilityService/anything":                      "other",
	} {
		if got := methodLabel(m); got != want {
			t.Errorf("methodLabel(%q) = %q, want %q", m, got, want)
		}
	}
}
