package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("s360", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("s360", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var s Handler
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return &s, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	s360 {
//		upstream     <url>
//		operator     <login>
//		secret       <secret>
//		partner      <name>
//		shop         <url>
//		storage      <dir>
//		rate_limit   <calls> <window>
//		setup_poll   <duration>
//		updates_poll <duration>
//		min_interval <service/method> <duration>
//		timeout      <duration>
//		max_body_size <size>
//		allow        <service/method>...
//		oidc { issuer <url>; client_id <id>; client_secret <s>; cookie_secret <s> }
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && name != "min_interval" && name != "allow" {
			return d.Errf("%s given twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "upstream":
			err = oneArg(d, &h.Upstream)
		case "operator":
			err = oneArg(d, &h.Operator)
		case "secret":
			err = oneArg(d, &h.Secret)
		case "partner":
			err = oneArg(d, &h.Partner)
		case "shop":
			err = oneArg(d, &h.Shop)
		case "storage":
			err = oneArg(d, &h.Storage)
		case "rate_limit":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("rate_limit: calls must be a positive integer, got %q", args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil || w <= 0 {
				return d.Errf("rate_limit: window must be a positive duration, got %q", args[1])
			}
			h.RateLimit = &RateLimit{Calls: n, Window: caddy.Duration(w)}
		case "setup_poll":
			h.SetupPoll, err = durationArg(d)
		case "updates_poll":
			h.UpdatesPoll, err = durationArg(d)
		case "timeout":
			var t *caddy.Duration
			if t, err = durationArg(d); err == nil {
				h.Timeout = *t
			}
		case "min_interval":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[1])
			if err != nil || dur < 0 {
				return d.Errf("min_interval %s: bad duration %q", args[0], args[1])
			}
			if h.MinInterval == nil {
				h.MinInterval = map[string]caddy.Duration{}
			}
			h.MinInterval[args[0]] = caddy.Duration(dur)
		case "max_body_size":
			var v string
			if err = oneArg(d, &v); err == nil {
				n, perr := humanize.ParseBytes(v)
				if perr != nil || n == 0 || n > 1<<30 {
					return d.Errf("max_body_size: want a size such as 1MB, got %q", v)
				}
				h.MaxBodySize = int64(n)
			}
		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Allow = append(h.Allow, args...)
		case "oidc":
			h.OIDC, err = parseOIDC(d)
		default:
			return d.Errf("unknown subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser) (*caddy.Duration, error) {
	name, v := d.Val(), ""
	if err := oneArg(d, &v); err != nil {
		return nil, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 {
		return nil, d.Errf("%s: want a duration such as 1m, got %q", name, v)
	}
	cd := caddy.Duration(dur)
	return &cd, nil
}

func parseOIDC(d *caddyfile.Dispenser) (*OIDC, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	o := &OIDC{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *string
		switch d.Val() {
		case "issuer":
			dst = &o.Issuer
		case "client_id":
			dst = &o.ClientID
		case "client_secret":
			dst = &o.ClientSecret
		case "cookie_secret":
			dst = &o.CookieSecret
		default:
			return nil, d.Errf("unknown oidc subdirective %q", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
