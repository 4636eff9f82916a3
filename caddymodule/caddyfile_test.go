package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfileFull(t *testing.T) {
	d := caddyfile.NewTestDispenser(`s360 {
		upstream     https://myinstit.ws.secutix.com
		operator     {env.S360_OPERATOR}
		secret       {env.S360_SECRET}
		partner      my-website
		shop         https://pfx-myinstit.shop.secutix.com
		storage      /var/lib/s360edge
		rate_limit   150 1m
		quota        10000 month
		setup_poll   1m
		updates_poll 0
		min_interval catalogService/getCatalogDetailed 10m
		min_interval availabilityService/* 1m
		timeout      90s
		max_body_size 64KB
		max_response_size 32MiB
		max_age      catalogService/getPOSConfig 12h
		stale_while_revalidate 10m
		stale_if_error 48h
		stale_timeout 1500ms
		max_size     2GB
		allow        setupService/listSeasons setupService/listPriceLevels
		oidc {
			issuer        https://idp.example.com
			client_id     website
			client_secret {env.OIDC_SECRET}
			cookie_secret {env.S360_COOKIE_KEY}
			redirect_url  https://www.example.com/auth/callback
			scopes        openid email
			protect       /tnseb/backend-apis/externalOrderFacade/* /account
			path_prefix   /login
			email_claim   mail
			name_claim    displayName
			token_auth    post
		}
		cluster {env.REDIS_URL} {
			prefix myinstit
		}
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(h)
	want := `{"upstream":"https://myinstit.ws.secutix.com","operator":"{env.S360_OPERATOR}","secret":"{env.S360_SECRET}",` +
		`"partner":"my-website","shop":"https://pfx-myinstit.shop.secutix.com","storage":"/var/lib/s360edge",` +
		`"rate_limit":{"calls":150,"window":60000000000},"quota":{"calls":10000,"per":"month"},"setup_poll":60000000000,"updates_poll":0,` +
		`"min_interval":{"availabilityService/*":60000000000,"catalogService/getCatalogDetailed":600000000000},` +
		`"timeout":90000000000,"max_body_size":64000,"max_response_size":33554432,"allow":["setupService/listSeasons","setupService/listPriceLevels"],` +
		`"max_age":{"catalogService/getPOSConfig":43200000000000},"stale_while_revalidate":600000000000,"stale_if_error":172800000000000,"stale_timeout":1500000000,"max_size":2000000000,` +
		`"oidc":{"issuer":"https://idp.example.com","client_id":"website","client_secret":"{env.OIDC_SECRET}","cookie_secret":"{env.S360_COOKIE_KEY}",` +
		`"redirect_url":"https://www.example.com/auth/callback","scopes":["openid","email"],"protect":["/tnseb/backend-apis/externalOrderFacade/*","/account"],"path_prefix":"/login",` +
		`"email_claim":"mail","name_claim":"displayName","token_auth":"post"},` +
		`"cluster":{"url":"{env.REDIS_URL}","prefix":"myinstit"}}`
	if string(got) != want {
		t.Fatalf("JSON config:\n got %s\nwant %s", got, want)
	}
	// JSON round trip: the Caddyfile maps 1:1 onto the JSON config.
	var back Handler
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(back)
	if string(again) != string(got) {
		t.Fatalf("JSON round trip differs:\n%s\n%s", again, got)
	}
}

// caddyfileJSON parses an s360 block of lines and returns its JSON config
// and that JSON read back, failing unless it maps back onto the same JSON.
func caddyfileJSON(t *testing.T, lines string) (string, *Handler) {
	t.Helper()
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s360 {\n" + lines + "\n}")); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(h)
	back := new(Handler)
	if err := json.Unmarshal(got, back); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(back); string(again) != string(got) {
		t.Fatalf("JSON round trip: %s, want %s", again, got)
	}
	return string(got), back
}

// Each Caddyfile error names the subdirective as written, in its block,
// and says what to write.
func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"argument after s360", "s360 extra {\n}", "s360: takes no value, only a block of subdirectives: s360 { … }"},
		{"unknown subdirective", "s360 {\n bogus 1\n}", `s360: unknown subdirective "bogus"; the s360 block takes abandon_after, adaptive, allow, cart_target, client_quota, cluster, `},
		{"upstream without value", "s360 {\n upstream\n}", "s360: upstream: wrong number of values; write e.g. upstream https://myinstit.ws.secutix.com"},
		{"upstream with two values", "s360 {\n upstream a b\n}", "s360: upstream: wrong number of values"},
		{"upstream twice", "s360 {\n upstream a\n upstream b\n}", "s360: upstream: given twice; keep one"},
		{"rate_limit without window", "s360 {\n rate_limit 150\n}", "s360: rate_limit: wrong number of values; write e.g. rate_limit 150 1m"},
		{"rate_limit calls not a number", "s360 {\n rate_limit x 1m\n}", `s360: rate_limit: calls must be a positive integer, got "x"; write e.g. rate_limit 150 1m`},
		{"rate_limit zero calls", "s360 {\n rate_limit 0 1m\n}", "s360: rate_limit: calls must be a positive integer"},
		{"rate_limit bad window", "s360 {\n rate_limit 10 soon\n}", `s360: rate_limit: window must be a positive duration, got "soon"`},
		{"client_quota one value", "s360 {\n client_quota 5\n}", "s360: client_quota: want <calls> <window>, or off; write e.g. client_quota 30 1m"},
		{"quota without period", "s360 {\n quota 10000\n}", "s360: quota: want <calls> month; write e.g. quota 10000 month"},
		{"quota calls not a number", "s360 {\n quota lots month\n}", `s360: quota: calls must be a positive integer, got "lots"; write e.g. quota 10000 month`},
		{"quota zero", "s360 {\n quota 0 month\n}", `s360: quota: calls must be a positive integer, got "0"`},
		{"quota per day", "s360 {\n quota 300 day\n}", `s360: quota: the quota is counted per calendar month: write month, got "day"; write e.g. quota 10000 month`},
		{"quota twice", "s360 {\n quota 10000 month\n quota 20000 month\n}", "s360: quota: given twice; keep one"},
		{"adaptive maybe", "s360 {\n adaptive maybe\n}", `s360: adaptive: want on or off, got "maybe"; write e.g. adaptive on`},
		{"setup_poll not a duration", "s360 {\n setup_poll often\n}", `s360: setup_poll: "often" is not a duration >= 0; write e.g. setup_poll 1m`},
		{"updates_poll negative", "s360 {\n updates_poll -1m\n}", `s360: updates_poll: "-1m" is not a duration >= 0`},
		{"min_interval without duration", "s360 {\n min_interval a/b\n}", "s360: min_interval: wrong number of values; write e.g. min_interval catalogService/getCatalogDetailed 10m"},
		{"min_interval bad duration", "s360 {\n min_interval a/b never\n}", `s360: min_interval: a/b: "never" is not a duration >= 0`},
		{"max_age bad duration", "s360 {\n max_age a/b never\n}", `s360: max_age: a/b: "never" is not a duration >= 0; write e.g. max_age catalogService/* 24h`},
		{"max_body_size not a size", "s360 {\n max_body_size huge\n}", `s360: max_body_size: "huge" is not a size from 1 byte to 1.0 GiB; write e.g. max_body_size 1MiB`},
		{"max_response_size too large", "s360 {\n max_response_size 1GiB\n}", `s360: max_response_size: "1GiB" is not a size from 1 byte to 256 MiB`},
		{"allow without pattern", "s360 {\n allow\n}", "s360: allow: wrong number of values; write e.g. allow setupService/listSeasons"},
		{"oidc with a value", "s360 {\n oidc x {\n }\n}", "s360: oidc: takes no value, only a block of subdirectives: oidc { … }"},
		{"oidc issuer without value", "s360 {\n oidc {\n  issuer\n }\n}", "s360: oidc: issuer: wrong number of values; write e.g. issuer https://idp.example.com"},
		{"oidc issuer twice", "s360 {\n oidc {\n  issuer a\n  issuer b\n }\n}", "s360: oidc: issuer: given twice; keep one"},
		{"oidc unknown subdirective", "s360 {\n oidc {\n  roles admin\n }\n}", `s360: oidc: unknown subdirective "roles"; the oidc block takes client_id, client_secret, cookie_secret, email_claim, issuer, name_claim, path_prefix, protect, redirect_url, scopes, token_auth`},
		{"oidc protect without path", "s360 {\n oidc {\n  protect\n }\n}", "s360: oidc: protect: wrong number of values"},
		{"saml with a value", "s360 {\n saml x {\n }\n}", "s360: saml: takes no value, only a block of subdirectives: saml { … }"},
		{"saml unknown subdirective", "s360 {\n saml {\n  issuer x\n }\n}", `s360: saml: unknown subdirective "issuer"; the saml block takes cert, cookie_secret, email_attribute, entity_id, idp_metadata, key, name_attribute, protect, user_attribute`},
		{"saml cert with two values", "s360 {\n saml {\n  cert a b\n }\n}", "s360: saml: cert: wrong number of values; write e.g. cert /etc/s360/sp.crt"},
		{"saml cookie_secret twice", "s360 {\n saml {\n  cookie_secret a\n  cookie_secret b\n }\n}", "s360: saml: cookie_secret: given twice; keep one"},
		{"saml protect without path", "s360 {\n saml {\n  protect\n }\n}", "s360: saml: protect: wrong number of values"},
		{"cluster without URL", "s360 {\n cluster\n}", "s360: cluster: wrong number of values; write e.g. cluster {env.REDIS_URL}"},
		{"cluster with two URLs", "s360 {\n cluster redis://a redis://b\n}", "s360: cluster: wrong number of values"},
		{"cluster twice", "s360 {\n cluster redis://a\n cluster redis://b\n}", "s360: cluster: given twice; keep one"},
		{"cluster unknown subdirective", "s360 {\n cluster redis://a {\n  node a\n }\n}", `s360: cluster: unknown subdirective "node"; the cluster block takes nodes, prefix`},
		{"cluster prefix without value", "s360 {\n cluster redis://a {\n  prefix\n }\n}", "s360: cluster: prefix: wrong number of values; write e.g. prefix myinstit"},
		{"cluster prefix twice", "s360 {\n cluster redis://a {\n  prefix a\n  prefix b\n }\n}", "s360: cluster: prefix: given twice; keep one"},
		{"cluster nodes without value", "s360 {\n cluster redis://a {\n  nodes\n }\n}", "s360: cluster: nodes: wrong number of values; write e.g. nodes 3"},
		{"cluster nodes with two values", "s360 {\n cluster redis://a {\n  nodes 3 4\n }\n}", "s360: cluster: nodes: wrong number of values"},
		{"cluster nodes not a number", "s360 {\n cluster redis://a {\n  nodes three\n }\n}", `s360: cluster: nodes: want the number of sidecars deployed, a positive integer, got "three"; write e.g. nodes 3`},
		{"cluster nodes zero", "s360 {\n cluster redis://a {\n  nodes 0\n }\n}", `a positive integer, got "0"`},
		{"cluster nodes negative", "s360 {\n cluster redis://a {\n  nodes -2\n }\n}", `a positive integer, got "-2"`},
		{"cluster nodes twice", "s360 {\n cluster redis://a {\n  nodes 3\n  nodes 3\n }\n}", "s360: cluster: nodes: given twice; keep one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%q: got %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

// The examples in errors are what the parser takes, and every subdirective
// of the JSON config (the same names) has one.
func TestExamplesParse(t *testing.T) {
	for key, ex := range examples {
		block, _, nested := strings.Cut(key, " ")
		in := "s360 {\n" + ex + "\n}"
		switch {
		case ex == "":
			continue
		case nested && block == "cluster":
			in = "s360 {\n cluster redis://r {\n" + ex + "\n }\n}"
		case nested:
			in = "s360 {\n " + block + " {\n" + ex + "\n }\n}"
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Errorf("example of %s: %v", key, err)
		}
	}
	for block, v := range map[string]any{"": Handler{}, "oidc ": OIDC{}, "saml ": SAML{}, "cluster ": Cluster{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name == "" || (block == "cluster " && name == "url") {
				continue // unexported, or cluster's value
			}
			if _, ok := examples[block+name]; !ok {
				t.Errorf("no example of %q", block+name)
			}
		}
	}
}

func TestUnmarshalCaddyfileCluster(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"URL alone", "s360 {\n cluster redis://127.0.0.1:6379/0\n}", `{"url":"redis://127.0.0.1:6379/0"}`},
		{"with prefix", "s360 {\n cluster rediss://u:p@r.example:6380/2 {\n  prefix inst-a\n }\n}", `{"url":"rediss://u:p@r.example:6380/2","prefix":"inst-a"}`},
		{"empty block", "s360 {\n cluster {env.REDIS_URL} {\n }\n}", `{"url":"{env.REDIS_URL}"}`},
		{"with nodes", "s360 {\n cluster redis://r:6379/0 {\n  nodes 3\n  prefix p\n }\n}", `{"url":"redis://r:6379/0","prefix":"p","nodes":3}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in)); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(h.Cluster)
			if string(got) != tc.want {
				t.Fatalf("cluster JSON %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCheckRejectsUnusableConfig(t *testing.T) {
	valid := func() *Handler {
		d := caddy.Duration(time.Minute)
		return &Handler{CartTarget: "cart", Upstream: "https://x.ws.secutix.com", Shop: "https://p-x.shop.secutix.com", Operator: "X_WEB", Secret: "s3cret-value",
			RateLimit: &RateLimit{Calls: 10, Window: caddy.Duration(time.Minute)}, SetupPoll: &d, UpdatesPoll: &d}
	}
	if err := valid().check(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]func(*Handler){
		"upstream: missing (is its environment variable set?); set it to the institution's S-360 web services base URL, e.g. upstream https://myinstit.ws.secutix.com":                       func(h *Handler) { h.Upstream = "" },
		`upstream: "ftp://x" is not a base URL; set it to the institution's S-360 web services base URL: scheme and host[:port], with no path, query or credentials, e.g. upstream https://`: func(h *Handler) { h.Upstream = "ftp://x" },
		`upstream: "https://x/tnseb" is not a base URL`: func(h *Handler) { h.Upstream = "https://x/tnseb" },
		`shop: "https://u:xxxxx@x" is not a base URL`:   func(h *Handler) { h.Shop = "https://u:s3cret-value@x" },
		"shop: missing": func(h *Handler) { h.Shop = "" },
		"secret: missing (is its environment variable set?); set it to the operator's secret, e.g. secret {env.S360_SECRET}":            func(h *Handler) { h.Secret = "" },
		"operator: missing (is its environment variable set?); set it to the virtual operator login, e.g. operator {env.S360_OPERATOR}": func(h *Handler) { h.Operator = "" },
		`cart_target: "nowhere"; write cart_target cart or cart_target checkout`:                                                        func(h *Handler) { h.CartTarget = "nowhere" },
		`allow: "nope"; write service/method or service/*, e.g. allow setupService/listSeasons`:                                         func(h *Handler) { h.Allow = []string{"nope"} },
		`min_interval: "a" 1ns; write a service/method (or service/*) and a duration >= 0, e.g. min_interval `:                          func(h *Handler) { h.MinInterval = map[string]caddy.Duration{"a": 1} },
		`max_age: "a/b" 0s; write a service/method (or service/*) and a positive duration, e.g. max_age catalogService/* 24h`:           func(h *Handler) { h.MaxAge = map[string]caddy.Duration{"a/b": 0} },
		"rate_limit: 0 calls per 1m0s; write a positive number of calls per positive window, e.g. rate_limit 150 1m":                    func(h *Handler) { h.RateLimit.Calls = 0 },
		"client_quota: 0 calls per 1m0s; write a positive number of calls per window, or off, e.g. client_quota 30 1m": func(h *Handler) {
			h.ClientQuota = &ClientQuota{Window: caddy.Duration(time.Minute)}
		},
		"setup_poll: -1s is negative; write a duration >= 0, e.g. setup_poll 1m":                            func(h *Handler) { *h.SetupPoll = caddy.Duration(-time.Second) },
		`quota: 0 calls per "month"; write a positive number of calls per month, e.g. quota 10000 month`:    func(h *Handler) { h.Quota = &Quota{Per: "month"} },
		`quota: 10000 calls per "week"; write a positive number of calls per month, e.g. quota 10000 month`: func(h *Handler) { h.Quota = &Quota{Calls: 10000, Per: "week"} },
		"stale_timeout: -1s is negative":                                       func(h *Handler) { h.StaleTimeout = caddy.Duration(-time.Second) },
		"max_body_size: -1 is negative; write a size, e.g. max_body_size 1MiB": func(h *Handler) { h.MaxBodySize = -1 },
		"max_size: -1 is negative":                                             func(h *Handler) { h.MaxSize = -1 },
		"max_response_size: 314572800 bytes; write a size up to 268435456 bytes (256MiB), e.g. max_response_size 64MiB": func(h *Handler) { h.MaxResponseSize = 300 << 20 },
		"cluster: the Redis URL is missing (is its environment variable set?); write redis://":                          func(h *Handler) { h.Cluster = &Cluster{} },
		`cluster: "http://u:xxxxx@r:6379" is not a Redis URL; write redis://[user:password@]host:port/db, or rediss:// for TLS, e.g. cluster {env.REDIS_URL}`: func(h *Handler) {
			h.Cluster = &Cluster{URL: "http://u:s3cret-value@r:6379?password=s3cret-value"}
		},
		`cluster: "unix:///run/redis.sock" is not a Redis URL`:                                func(h *Handler) { h.Cluster = &Cluster{URL: "unix:///run/redis.sock"} },
		"cluster: the Redis URL does not parse; write redis://":                               func(h *Handler) { h.Cluster = &Cluster{URL: "redis://u:s3cret-value@r:port"} },
		"cluster: nodes: -1 is negative; write the number of sidecars deployed, e.g. nodes 3": func(h *Handler) { h.Cluster = &Cluster{URL: "redis://r:6379/0", Nodes: -1} },
	}
	for want, mod := range cases {
		t.Run(want, func(t *testing.T) {
			h := valid()
			mod(h)
			err := h.check()
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want an error containing %q", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret-value") {
				t.Errorf("secret in error: %v", err)
			}
		})
	}
}
