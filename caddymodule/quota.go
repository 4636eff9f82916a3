package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Quota is the institution's monthly quota of S-360 calls (S-360's OPEN
// API offer: 10,000 a month on the standard offer). In JSON it is
// {"calls": 10000, "per": "month"}.
type Quota struct {
	// Calls is the calls allowed in a calendar month (UTC), every call
	// of the institution through the sidecar counted. Required.
	Calls int `json:"calls"`
	// Per is the quota's period: "month", the only one. Required.
	Per string `json:"per"`
}

// calls is q's Calls; 0 without a quota.
func (q *Quota) calls() int {
	if q == nil {
		return 0
	}
	return q.Calls
}

// parseQuota reads `quota <calls> month`.
func parseQuota(d *caddyfile.Dispenser) (*Quota, error) {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return nil, parseErr(d, "", "quota", "want <calls> month")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return nil, parseErr(d, "", "quota", "calls must be a positive integer, got %q", args[0])
	}
	if args[1] != "month" {
		return nil, parseErr(d, "", "quota", "the quota is counted per calendar month: write month, got %q", args[1])
	}
	return &Quota{Calls: n, Per: args[1]}, nil
}

// checkQuota is check's part for quota.
func (h *Handler) checkQuota() error {
	if q := h.Quota; q != nil && (q.Calls <= 0 || q.Per != "month") {
		return fmt.Errorf("quota: %d calls per %q; write a positive number of calls per month, e.g. %s", q.Calls, q.Per, example("", "quota"))
	}
	return nil
}
