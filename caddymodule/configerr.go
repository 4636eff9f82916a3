package caddymodule

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/s360edge/s360edge/internal/field"
)

// examples has one line of each subdirective of the s360 block, and of its
// oidc, saml and cluster blocks ("saml cert"), as the Caddyfile takes it.
// Errors about a subdirective end with its example, so that the message
// says what to write; the names also list the known subdirectives (oidc
// and saml are blocks: no one-line example).
var examples = map[string]string{
	"upstream":               "upstream https://myinstit.ws.secutix.com",
	"operator":               "operator {env.S360_OPERATOR}",
	"secret":                 "secret {env.S360_SECRET}",
	"partner":                "partner s360edge",
	"shop":                   "shop https://pfx-myinstit.shop.secutix.com",
	"cart_target":            "cart_target cart",
	"storage":                "storage /var/lib/s360edge",
	"rate_limit":             "rate_limit 150 1m",
	"client_quota":           "client_quota 30 1m",
	"quota":                  "quota 10000 month",
	"adaptive":               "adaptive on",
	"local_token":            "local_token off",
	"max_wait":               "max_wait 3s",
	"order_queue":            "order_queue off",
	"order_hold":             "order_hold 2s",
	"order_wait":             "order_wait 30s",
	"order_queue_per_client": "order_queue_per_client 2",
	"order_queue_max":        "order_queue_max 100000",
	"abandon_after":          "abandon_after 2m",
	"setup_poll":             "setup_poll 1m",
	"updates_poll":           "updates_poll 1m",
	"min_interval":           "min_interval catalogService/getCatalogDetailed 10m",
	"max_age":                "max_age catalogService/* 24h",
	"stale_while_revalidate": "stale_while_revalidate 1h",
	"stale_if_error":         "stale_if_error 24h",
	"stale_timeout":          "stale_timeout 2s",
	"max_size":               "max_size 1GiB",
	"timeout":                "timeout 60s",
	"max_body_size":          "max_body_size 1MiB",
	"max_response_size":      "max_response_size 64MiB",
	"allow":                  "allow setupService/listSeasons",
	"oidc":                   "",
	"saml":                   "",
	"cluster":                "cluster {env.REDIS_URL}",
	"live_max":               "live_max 10000",

	"oidc issuer":        "issuer https://idp.example.com",
	"oidc client_id":     "client_id website",
	"oidc client_secret": "client_secret {env.OIDC_SECRET}",
	"oidc cookie_secret": "cookie_secret {env.S360_COOKIE_KEY}",
	"oidc redirect_url":  "redirect_url https://www.example.com/auth/callback",
	"oidc scopes":        "scopes openid profile email",
	"oidc protect":       "protect /account /tnseb/backend-apis/externalOrderFacade/*",
	"oidc path_prefix":   "path_prefix /auth",
	"oidc email_claim":   "email_claim email",
	"oidc name_claim":    "name_claim name",
	"oidc token_auth":    "token_auth basic",

	"saml idp_metadata":    "idp_metadata /etc/s360/idp-metadata.xml",
	"saml entity_id":       "entity_id https://www.example.com/auth/saml/metadata",
	"saml cert":            "cert /etc/s360/sp.crt",
	"saml key":             "key /etc/s360/sp.key",
	"saml user_attribute":  "user_attribute NameID",
	"saml email_attribute": "email_attribute email",
	"saml name_attribute":  "name_attribute displayName",
	"saml protect":         "protect /account /tnseb/backend-apis/externalOrderFacade/*",
	"saml cookie_secret":   "cookie_secret {env.S360_COOKIE_KEY}",

	"cluster prefix": "prefix myinstit",
	"cluster nodes":  "nodes 3",
}

// example is the example line of the subdirective name of block ("" for
// the s360 block itself).
func example(block, name string) string {
	return examples[strings.TrimSpace(block+" "+name)]
}

// subdirectives lists the subdirectives of block, sorted.
func subdirectives(block string) string {
	var names []string
	for k := range examples {
		b, name, nested := strings.Cut(k, " ")
		if !nested {
			b, name = "", k
		}
		if b == block {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// where is how a message names the subdirective name of block: "saml:
// cert", or "upstream" in the s360 block itself.
func where(block, name string) string {
	if block == "" {
		return name
	}
	return block + ": " + name
}

// parseErr is a Caddyfile error about the subdirective name of block:
// "s360: saml: cert: <msg>; write e.g. cert /etc/s360/sp.crt, at
// Caddyfile:12".
func parseErr(d *caddyfile.Dispenser, block, name, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if ex := example(block, name); ex != "" {
		msg += "; write e.g. " + ex
	}
	return d.Errf("s360: %s: %s", where(block, name), msg)
}

// argErr: the subdirective name of block has too many or too few values.
func argErr(d *caddyfile.Dispenser, block, name string) error {
	return parseErr(d, block, name, "wrong number of values")
}

// unknownErr: the subdirective at d is not one of block's.
func unknownErr(d *caddyfile.Dispenser, block string) error {
	if block == "" {
		return d.Errf("s360: unknown subdirective %q; the s360 block takes %s", d.Val(), subdirectives(""))
	}
	return d.Errf("s360: %s: unknown subdirective %q; the %s block takes %s", block, d.Val(), block, subdirectives(block))
}

// twiceErr: the subdirective at d was given before in block.
func twiceErr(d *caddyfile.Dispenser, block string) error {
	return d.Errf("s360: %s: given twice; keep one", where(block, d.Val()))
}

// within puts prefix before each of err's errors, errors.Join's each on a
// line of its own, so that every line of the message Caddy prints names
// where it belongs. nil stays nil.
func within(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range leaves(err) {
		out = append(out, fmt.Errorf("%s: %w", prefix, e))
	}
	return errors.Join(out...)
}

// inBlock is within(block, err) where an error about a missing setting
// (a *field.Error of session, oidcrp or samlsp) also gets the setting's example.
func inBlock(block string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range leaves(err) {
		var fe *field.Error
		if errors.As(e, &fe) && strings.HasPrefix(fe.Problem, "missing") {
			if ex := example(block, fe.Name); ex != "" {
				e = fmt.Errorf("%w, e.g. %s", e, ex)
			}
		}
		out = append(out, e)
	}
	return within(block, errors.Join(out...))
}

// leaves are the errors that errors.Join joined in err, at any depth, or
// err itself. (An error of fmt.Errorf with several %w also unwraps to a
// list, but its message is not its parts' lines: it stays whole.)
func leaves(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	parts := j.Unwrap()
	lines := make([]string, len(parts))
	for i, e := range parts {
		lines[i] = e.Error()
	}
	if strings.Join(lines, "\n") != err.Error() {
		return []error{err}
	}
	var all []error
	for _, e := range parts {
		all = append(all, leaves(e)...)
	}
	return all
}
