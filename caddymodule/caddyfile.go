package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/s360edge/s360edge/upstream"
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
//		cart_target  cart|checkout
//		storage      <dir>
//		rate_limit   <calls> <window>
//		client_quota <calls> <window> | off
//		quota        <calls> month
//		adaptive     on|off
//		local_token  on|off
//		max_wait     <duration>
//		order_queue  on|off
//		order_hold   <duration>
//		order_wait   <duration>
//		order_queue_per_client <n>
//		order_queue_max <n>
//		abandon_after <duration>
//		setup_poll   <duration>
//		updates_poll <duration>
//		min_interval <service/method> <duration>
//		max_age      <service/method> <duration>
//		stale_while_revalidate <duration>
//		stale_if_error <duration>
//		stale_timeout <duration>
//		max_size     <size>
//		timeout      <duration>
//		max_body_size <size>
//		max_response_size <size>
//		allow        <service/method>...
//		live_max     <subscribers>
//		oidc {
//			issuer        <url>
//			client_id     <id>
//			client_secret <secret>
//			cookie_secret <secret>
//			redirect_url  <url>
//			scopes        <scope>...
//			protect       <path or prefix*>...
//			path_prefix   <path>
//			email_claim   <claim>
//			name_claim    <claim>
//			token_auth    basic|post
//		}
//		saml {
//			idp_metadata    <url or file>
//			entity_id       <url>
//			cert            <pem file>
//			key             <pem file>
//			user_attribute  <name>
//			email_attribute <name>
//			name_attribute  <name>
//			protect         <path or prefix*>...
//			cookie_secret   <secret>
//		}
//		cluster redis[s]://[user:password@]host:port/db {
//			prefix <prefix>
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("s360: takes no value, only a block of subdirectives: s360 { … }")
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && name != "min_interval" && name != "max_age" && name != "allow" {
			return twiceErr(d, "")
		}
		seen[name] = true
		var err error
		switch name {
		case "upstream":
			err = oneArg(d, "", &h.Upstream)
		case "operator":
			err = oneArg(d, "", &h.Operator)
		case "secret":
			err = oneArg(d, "", &h.Secret)
		case "partner":
			err = oneArg(d, "", &h.Partner)
		case "shop":
			err = oneArg(d, "", &h.Shop)
		case "cart_target":
			err = oneArg(d, "", &h.CartTarget)
		case "storage":
			err = oneArg(d, "", &h.Storage)
		case "rate_limit":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return argErr(d, "", name)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return parseErr(d, "", name, "calls must be a positive integer, got %q", args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil || w <= 0 {
				return parseErr(d, "", name, "window must be a positive duration, got %q", args[1])
			}
			h.RateLimit = &RateLimit{Calls: n, Window: caddy.Duration(w)}
		case "client_quota":
			h.ClientQuota, err = parseClientQuota(d)
		case "quota":
			h.Quota, err = parseQuota(d)
		case "adaptive":
			h.Adaptive, err = onOffArg(d)
		case "local_token":
			h.LocalToken, err = onOffArg(d)
		case "max_wait":
			err = durationInto(d, &h.MaxWait)
		case "order_queue":
			h.OrderQueue, err = onOffArg(d)
		case "order_hold":
			err = durationInto(d, &h.OrderHold)
		case "order_wait":
			err = durationInto(d, &h.OrderWait)
		case "abandon_after":
			err = durationInto(d, &h.AbandonAfter)
		case "order_queue_per_client":
			h.OrderQueuePerClient, err = positiveArg(d)
		case "order_queue_max":
			h.OrderQueueMax, err = positiveArg(d)
		case "setup_poll":
			h.SetupPoll, err = durationArg(d)
		case "updates_poll":
			h.UpdatesPoll, err = durationArg(d)
		case "timeout":
			err = durationInto(d, &h.Timeout)
		case "min_interval":
			err = patternDuration(d, &h.MinInterval)
		case "max_age":
			err = patternDuration(d, &h.MaxAge)
		case "stale_while_revalidate", "stale_if_error":
			var t *caddy.Duration
			if t, err = durationArg(d); err == nil {
				if name == "stale_if_error" {
					h.StaleIfError = *t
				} else {
					h.StaleWhileRevalidate = *t
				}
			}
		case "stale_timeout":
			var t *caddy.Duration
			if t, err = durationArg(d); err == nil {
				h.StaleTimeout = *t
			}
		case "max_size":
			err = sizeArg(d, &h.MaxSize, 1<<50)
		case "max_body_size":
			err = sizeArg(d, &h.MaxBodySize, 1<<30)
		case "max_response_size":
			err = sizeArg(d, &h.MaxResponseSize, upstream.DefaultReadingBytes)
		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return argErr(d, "", name)
			}
			h.Allow = append(h.Allow, args...)
		case "oidc":
			h.OIDC, err = parseOIDC(d)
		case "saml":
			h.SAML, err = parseSAML(d)
		case "cluster":
			h.Cluster, err = parseCluster(d)
		case "live_max":
			h.LiveMax, err = liveMaxArg(d)
		default:
			return unknownErr(d, "")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneArg reads the one value of the subdirective at d, of block ("" for
// the s360 block itself).
func oneArg(d *caddyfile.Dispenser, block string, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return argErr(d, block, name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return argErr(d, block, name)
	}
	return nil
}

// patternDuration parses "<service/method> <duration>" into m.
func patternDuration(d *caddyfile.Dispenser, m *map[string]caddy.Duration) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 2 {
		return argErr(d, "", name)
	}
	dur, err := caddy.ParseDuration(args[1])
	if err != nil || dur < 0 {
		return parseErr(d, "", name, "%s: %q is not a duration >= 0", args[0], args[1])
	}
	if *m == nil {
		*m = map[string]caddy.Duration{}
	}
	(*m)[args[0]] = caddy.Duration(dur)
	return nil
}

// sizeArg parses one size such as 64KB or 1GiB, at most limit bytes.
func sizeArg(d *caddyfile.Dispenser, dst *int64, limit uint64) error {
	name, v := d.Val(), ""
	if err := oneArg(d, "", &v); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(v)
	if err != nil || n == 0 || n > limit {
		return parseErr(d, "", name, "%q is not a size from 1 byte to %s", v, humanize.IBytes(limit))
	}
	*dst = int64(n)
	return nil
}

// onOffArg parses one on or off, such as `adaptive off`.
func onOffArg(d *caddyfile.Dispenser) (*bool, error) {
	name, v := d.Val(), ""
	if err := oneArg(d, "", &v); err != nil {
		return nil, err
	}
	if v != "on" && v != "off" {
		return nil, parseErr(d, "", name, "want on or off, got %q", v)
	}
	on := v == "on"
	return &on, nil
}

// positiveArg parses one positive integer, such as `order_queue_max 1000`.
func positiveArg(d *caddyfile.Dispenser) (int, error) {
	return intArg(d, 1, "a positive whole number")
}

// intArg parses one integer of at least least, which want describes.
func intArg(d *caddyfile.Dispenser, least int, want string) (int, error) {
	name, v := d.Val(), ""
	if err := oneArg(d, "", &v); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		return 0, parseErr(d, "", name, "want %s, got %q", want, v)
	}
	return n, nil
}

// durationInto parses one duration >= 0 into dst.
func durationInto(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	t, err := durationArg(d)
	if err == nil {
		*dst = *t
	}
	return err
}

func durationArg(d *caddyfile.Dispenser) (*caddy.Duration, error) {
	name, v := d.Val(), ""
	if err := oneArg(d, "", &v); err != nil {
		return nil, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 {
		return nil, parseErr(d, "", name, "%q is not a duration >= 0", v)
	}
	cd := caddy.Duration(dur)
	return &cd, nil
}

func parseOIDC(d *caddyfile.Dispenser) (*OIDC, error) {
	o := &OIDC{}
	err := parseBlock(d, "oidc", map[string]*string{
		"issuer": &o.Issuer, "client_id": &o.ClientID, "client_secret": &o.ClientSecret, "cookie_secret": &o.CookieSecret,
		"redirect_url": &o.RedirectURL, "path_prefix": &o.PathPrefix, "email_claim": &o.EmailClaim,
		"name_claim": &o.NameClaim, "token_auth": &o.TokenAuth,
	}, map[string]*[]string{"scopes": &o.Scopes, "protect": &o.Protect})
	return o, err
}

func parseSAML(d *caddyfile.Dispenser) (*SAML, error) {
	s := &SAML{}
	err := parseBlock(d, "saml", map[string]*string{
		"idp_metadata": &s.IDPMetadata, "entity_id": &s.EntityID, "cert": &s.Cert, "key": &s.Key,
		"user_attribute": &s.UserAttribute, "email_attribute": &s.EmailAttribute,
		"name_attribute": &s.NameAttribute, "cookie_secret": &s.CookieSecret,
	}, map[string]*[]string{"protect": &s.Protect})
	return s, err
}

// parseBlock reads the block of the subdirective block (oidc, saml), which
// takes no value of its own: each of its subdirectives in one puts its one
// value there, at most once; each in lists appends its values, and may
// repeat.
func parseBlock(d *caddyfile.Dispenser, block string, one map[string]*string, lists map[string]*[]string) error {
	if d.NextArg() {
		return d.Errf("s360: %s: takes no value, only a block of subdirectives: %s { … }", block, block)
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if dst := lists[name]; dst != nil {
			args := d.RemainingArgs()
			if len(args) == 0 {
				return argErr(d, block, name)
			}
			*dst = append(*dst, args...)
			continue
		}
		dst := one[name]
		switch {
		case dst == nil:
			return unknownErr(d, block)
		case seen[name]:
			return twiceErr(d, block)
		}
		seen[name] = true
		if err := oneArg(d, block, dst); err != nil {
			return err
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
