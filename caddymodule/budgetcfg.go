package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/s360edge/s360edge/budget"
)

// ClientQuota is a hard cap on the upstream calls one client may cause per
// window, on top of the fair sharing of the budget among clients (the
// default, without client_quota), or "off" for neither. In JSON it is
// {"calls": 30, "window": "1m"}, or the string "off".
type ClientQuota struct {
	// Calls is the most upstream calls one client may cause per Window.
	// Required unless "off".
	Calls int `json:"calls,omitempty"`
	// Window is the quota's sliding window. Default: rate_limit's window.
	Window caddy.Duration `json:"window,omitempty"`
	// Off turns fair sharing and the quota off (first come, first
	// served); it is the JSON string "off".
	Off bool `json:"-"`
}

func (q ClientQuota) MarshalJSON() ([]byte, error) {
	if q.Off {
		return []byte(`"off"`), nil
	}
	type plain ClientQuota
	return json.Marshal(plain(q))
}

func (q *ClientQuota) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte(`"off"`)) {
		*q = ClientQuota{Off: true}
		return nil
	}
	type plain ClientQuota
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf(`client_quota: want {"calls": <n>, "window": <duration>} or "off": %w`, err)
	}
	*q = ClientQuota(p)
	return nil
}

// parseClientQuota reads `client_quota off` or `client_quota <calls> <window>`.
func parseClientQuota(d *caddyfile.Dispenser) (*ClientQuota, error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		return &ClientQuota{Off: true}, nil
	case len(args) != 2:
		return nil, parseErr(d, "", "client_quota", "want <calls> <window>, or off")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return nil, parseErr(d, "", "client_quota", "calls must be a positive integer, got %q", args[0])
	}
	w, err := caddy.ParseDuration(args[1])
	if err != nil || w <= 0 {
		return nil, parseErr(d, "", "client_quota", "window must be a positive duration, got %q", args[1])
	}
	return &ClientQuota{Calls: n, Window: caddy.Duration(w)}, nil
}

// checkClientQuota is check's part for client_quota.
func (h *Handler) checkClientQuota() error {
	if q := h.ClientQuota; q != nil && !q.Off && (q.Calls <= 0 || q.Window < 0) {
		return fmt.Errorf("client_quota: %d calls per %s; write a positive number of calls per window, or off, e.g. %s", q.Calls, time.Duration(q.Window), example("", "client_quota"))
	}
	return nil
}

// budgetExtras applies client_quota and adaptive to a budget config.
func (h *Handler) budgetExtras(c *budget.Config) {
	if q := h.ClientQuota; q != nil {
		if q.Off {
			c.ClientQuota = -1
		} else {
			c.ClientQuota, c.ClientWindow = q.Calls, time.Duration(q.Window)
		}
	}
	c.FixedLimit = h.Adaptive != nil && !*h.Adaptive
	c.Logger = caddy.Log().Named("s360.budget")
}

// clientIP is the client as Caddy resolved it (trusted_proxies honoured),
// falling back to the connection's address.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
