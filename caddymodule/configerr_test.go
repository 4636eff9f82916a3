package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/s360edge/s360edge/internal/field"
)

// adaptAndValidate adapts a Caddyfile whose s360 block holds the lines
// lines (they replace the base lines of the same subdirectives), then
// provisions it as `caddy validate` does: the error of either step.
func adaptAndValidate(t *testing.T, lines string) error {
	t.Helper()
	block := []string{lines}
	for _, base := range []string{"upstream http://127.0.0.1:9", "operator OP", "secret s3cret", "shop https://shop.example",
		"storage " + t.TempDir(), "setup_poll 0", "updates_poll 0"} {
		name, _, _ := strings.Cut(base, " ")
		if !strings.HasPrefix(lines, name+" ") && !strings.Contains(lines, "\n"+name+" ") {
			block = append(block, base)
		}
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
}

http://127.0.0.1:9 {
	s360 {
		%s
	}
}
`, strings.Join(block, "\n"))
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

// Every error of the s360 handler, from the Caddyfile adapter or from
// provisioning, names the subdirective as the user wrote it, in the block
// they wrote it in, and says what to write; all of a config's errors come at
// once, each on a line that starts with "s360: ".
func TestConfigErrorsNameWhatTheUserWrote(t *testing.T) {
	cert, key := spKeyPair(t)
	saml := func(lines ...string) string {
		return "saml {\n" + strings.Join(lines, "\n") + "\n}"
	}
	oidc := func(lines ...string) string {
		return "oidc {\n" + strings.Join(lines, "\n") + "\n}"
	}
	goodOIDC := []string{"issuer https://idp.example.com", "client_id website", "client_secret x", "cookie_secret " + strings.Repeat("k", 32)}
	samlFiles := []string{"cert " + cert, "key " + key}
	for _, tc := range []struct {
		name, lines string
		want        []string
		notWant     []string
	}{
		{
			name:    "saml without cookie_secret",
			lines:   saml(append(samlFiles, "idp_metadata https://shop.example.com/saml/metadata")...),
			want:    []string{"s360: saml: cookie_secret: missing; set it to at least 32 random characters, or base64 of 32 random bytes (openssl rand -base64 32), e.g. cookie_secret {env.S360_COOKIE_KEY}"},
			notWant: []string{"oidc", "validating", "cookie secret"},
		},
		{
			name:  "saml idp_metadata over plain http",
			lines: saml(append(samlFiles, "idp_metadata http://shop.example.com/saml/metadata", "cookie_secret "+strings.Repeat("k", 32))...),
			want: []string{`s360: saml: idp_metadata: "http://shop.example.com/saml/metadata" is plain http to a host that is not loopback: ` +
				"anyone on the network path could swap the IdP certificate and log in as any buyer; " +
				"write idp_metadata https://shop.example.com/saml/metadata, or download the metadata to a local file (plain http only to 127.0.0.1, ::1 or localhost)"},
		},
		{
			name:  "empty saml block: every missing setting at once",
			lines: saml(),
			want: []string{
				"s360: saml: idp_metadata: missing; set it to the shop's IdP metadata: an https:// URL, or a local file (plain http only to 127.0.0.1, ::1 or localhost), e.g. idp_metadata /etc/s360/idp-metadata.xml",
				"s360: saml: cert: missing; the IdP wants signed requests: set it to a PEM certificate file (self-signed is fine), e.g. cert /etc/s360/sp.crt",
				"s360: saml: key: missing; the IdP wants signed requests: set it to the PEM file of cert's private key, e.g. key /etc/s360/sp.key",
				"s360: saml: cookie_secret: missing",
			},
			notWant: []string{"oidc", "Sessions"},
		},
		{
			name:    "saml cert and key that do not load",
			lines:   saml("idp_metadata /md.xml", "cert /nonexistent.crt", "key /nonexistent.key", "cookie_secret "+strings.Repeat("k", 32)),
			want:    []string{"s360: saml: cert and key: loading them: open /nonexistent.crt: no such file or directory; set them to the PEM files of one certificate and its private key"},
			notWant: []string{"oidc"},
		},
		{
			name:  "saml relative entity_id and bad protect",
			lines: saml(append(samlFiles, "idp_metadata /md.xml", "entity_id /sp", "protect account", "cookie_secret "+strings.Repeat("k", 32))...),
			want: []string{
				`s360: saml: entity_id: "/sp" is not an absolute URL; set it to this site's SP metadata URL, e.g. https://www.example.com/auth/saml/metadata`,
				`s360: saml: protect: "account"; write paths starting with /, or prefixes ending in *, e.g. protect /account /orders/*`,
			},
			notWant: []string{"oidc"},
		},
		{
			name:  "saml with a failing oidc block: oidc's errors, saml's own, and no saml cookie_secret",
			lines: oidc("issuer idp.example.com", "client_id website", "client_secret x", "cookie_secret "+strings.Repeat("k", 32)) + "\n" + saml("cert "+cert, "key "+key),
			want: []string{
				`s360: oidc: issuer: "idp.example.com" is not an absolute http(s) URL`,
				"s360: saml: idp_metadata: missing",
			},
			notWant: []string{"cookie_secret", "saml: issuer"},
		},
		{
			name:    "oidc without cookie_secret",
			lines:   oidc(goodOIDC[:3]...),
			want:    []string{"s360: oidc: cookie_secret: missing; set it to at least 32 random characters, or base64 of 32 random bytes (openssl rand -base64 32), e.g. cookie_secret {env.S360_COOKIE_KEY}"},
			notWant: []string{"saml", "validating"},
		},
		{
			name:  "oidc with a short cookie_secret and no client",
			lines: oidc("issuer https://idp.example.com", "cookie_secret short"),
			want: []string{
				"s360: oidc: cookie_secret: too short; set it to at least 32 random characters",
				"s360: oidc: client_id: missing; set it to the client id the provider gave this website, e.g. client_id website",
				"s360: oidc: client_secret: missing; set it to the client secret the provider gave this website, e.g. client_secret {env.OIDC_SECRET}",
			},
			notWant: []string{"short\"", "saml"},
		},
		{
			name:  "oidc path_prefix, protect, token_auth and redirect_url",
			lines: oidc(append(goodOIDC, "path_prefix auth", "protect orders", "token_auth jwt", "redirect_url /cb")...),
			want: []string{
				`s360: oidc: path_prefix: "auth" does not start with /; write e.g. path_prefix /auth`,
				`s360: oidc: protect: "orders"; write paths starting with /`,
				`s360: oidc: token_auth: "jwt"; write basic or post`,
				`s360: oidc: redirect_url: "/cb" is not an absolute URL`,
			},
			notWant: []string{"login_path", "callback_path", "saml"},
		},
		{
			name:    "operator from an unset variable",
			lines:   "operator {env.S360EDGE_TEST_UNSET}",
			want:    []string{"s360: operator: missing (is its environment variable set?); set it to the virtual operator login, e.g. operator {env.S360_OPERATOR}"},
			notWant: []string{"given twice"},
		},
		{
			name:  "s360 errors and saml errors together",
			lines: "cart_target basket\nallow nope\nmin_interval nope 1m\nmax_age nope 1m\n" + saml(append(samlFiles, "idp_metadata /md.xml")...),
			want: []string{
				`s360: cart_target: "basket"; write cart_target cart or cart_target checkout`,
				`s360: allow: "nope"; write service/method or service/*, e.g. allow setupService/listSeasons`,
				`s360: min_interval: "nope" 1m0s; write a service/method (or service/*) and a duration >= 0`,
				`s360: max_age: "nope" 1m0s; write a service/method (or service/*) and a positive duration`,
				"s360: saml: cookie_secret: missing",
			},
		},
		{
			name:  "cluster URL and prefix",
			lines: "cluster unix:///run/redis.sock {\nprefix {env.S360EDGE_TEST_UNSET}\n}",
			want: []string{
				`s360: cluster: "unix:///run/redis.sock" is not a Redis URL; write redis://[user:password@]host:port/db, or rediss:// for TLS, e.g. cluster {env.REDIS_URL}`,
				"s360: cluster: prefix: empty once its placeholders are replaced (is its environment variable set?); set it, e.g. prefix myinstit, or leave it out for the default s360edge",
			},
		},
		// The adapter's errors.
		{name: "saml cert with two values", lines: saml("cert a b"), want: []string{"s360: saml: cert: wrong number of values; write e.g. cert /etc/s360/sp.crt, at Caddyfile:"}},
		{name: "oidc subdirective in saml", lines: saml("client_id website"), want: []string{`s360: saml: unknown subdirective "client_id"; the saml block takes cert, cookie_secret,`}},
		{name: "rate_limit calls", lines: "rate_limit many 1m", want: []string{`s360: rate_limit: calls must be a positive integer, got "many"; write e.g. rate_limit 150 1m, at Caddyfile:`}},
		{name: "client_quota window", lines: "client_quota 5 never", want: []string{`s360: client_quota: window must be a positive duration, got "never"; write e.g. client_quota 30 1m`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := adaptAndValidate(t, tc.lines)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("no %q in\n%s", w, msg)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("%q in\n%s", w, msg)
				}
			}
			for i, line := range strings.Split(msg, "\n") {
				if i > 0 && !strings.HasPrefix(line, "s360: ") {
					t.Errorf("line %q does not start with s360:", line)
				}
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, strings.Repeat("k", 32)) {
				t.Errorf("a secret in %s", msg)
			}
		})
	}
}

func TestLeaves(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	got := within("p", errors.Join(a, errors.Join(b, nil, c), fmt.Errorf("two %w %w", a, b)))
	if want := "p: a\np: b\np: c\np: two a b"; got.Error() != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if within("p", nil) != nil || inBlock("saml", nil) != nil {
		t.Fatal("nil is not nil")
	}
	// A missing setting gets its example; another error does not.
	got = inBlock("saml", errors.Join(field.Errorf("cert", "missing; x"), field.Errorf("cert", "bad; y"), field.Errorf("cert and key", "missing; z")))
	if want := "saml: cert: missing; x, e.g. cert /etc/s360/sp.crt\nsaml: cert: bad; y\nsaml: cert and key: missing; z"; got.Error() != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
