package caddymodule

import (
	"encoding/json"
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
		`"rate_limit":{"calls":150,"window":60000000000},"setup_poll":60000000000,"updates_poll":0,` +
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

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"argument after s360", "s360 extra {\n}", "wrong argument count"},
		{"unknown subdirective", "s360 {\n bogus 1\n}", `unknown subdirective "bogus"`},
		{"upstream without value", "s360 {\n upstream\n}", "wrong argument count"},
		{"upstream with two values", "s360 {\n upstream a b\n}", "wrong argument count"},
		{"upstream twice", "s360 {\n upstream a\n upstream b\n}", "upstream given twice"},
		{"rate_limit without window", "s360 {\n rate_limit 150\n}", "wrong argument count"},
		{"rate_limit calls not a number", "s360 {\n rate_limit x 1m\n}", "calls must be a positive integer"},
		{"rate_limit zero calls", "s360 {\n rate_limit 0 1m\n}", "calls must be a positive integer"},
		{"rate_limit bad window", "s360 {\n rate_limit 10 soon\n}", "window must be a positive duration"},
		{"setup_poll not a duration", "s360 {\n setup_poll often\n}", `setup_poll: want a duration`},
		{"updates_poll negative", "s360 {\n updates_poll -1m\n}", `updates_poll: want a duration`},
		{"min_interval without duration", "s360 {\n min_interval a/b\n}", "wrong argument count"},
		{"min_interval bad duration", "s360 {\n min_interval a/b never\n}", "bad duration"},
		{"max_body_size not a size", "s360 {\n max_body_size huge\n}", "max_body_size: want a size"},
		{"max_response_size too large", "s360 {\n max_response_size 1GiB\n}", "max_response_size: want a size"},
		{"allow without pattern", "s360 {\n allow\n}", "wrong argument count"},
		{"oidc issuer without value", "s360 {\n oidc {\n  issuer\n }\n}", "wrong argument count"},
		{"oidc unknown subdirective", "s360 {\n oidc {\n  roles admin\n }\n}", `unknown oidc subdirective "roles"`},
		{"oidc protect without path", "s360 {\n oidc {\n  protect\n }\n}", "wrong argument count"},
		{"cluster without URL", "s360 {\n cluster\n}", "wrong argument count"},
		{"cluster with two URLs", "s360 {\n cluster redis://a redis://b\n}", "wrong argument count"},
		{"cluster twice", "s360 {\n cluster redis://a\n cluster redis://b\n}", "cluster given twice"},
		{"cluster unknown subdirective", "s360 {\n cluster redis://a {\n  node a\n }\n}", `unknown cluster subdirective "node"`},
		{"cluster prefix without value", "s360 {\n cluster redis://a {\n  prefix\n }\n}", "wrong argument count"},
		{"cluster prefix twice", "s360 {\n cluster redis://a {\n  prefix a\n  prefix b\n }\n}", "cluster prefix given twice"},
		{"cluster nodes without value", "s360 {\n cluster redis://a {\n  nodes\n }\n}", "wrong argument count"},
		{"cluster nodes with two values", "s360 {\n cluster redis://a {\n  nodes 3 4\n }\n}", "wrong argument count"},
		{"cluster nodes not a number", "s360 {\n cluster redis://a {\n  nodes three\n }\n}", `cluster nodes: want the number of sidecars deployed, a positive integer, got "three"`},
		{"cluster nodes zero", "s360 {\n cluster redis://a {\n  nodes 0\n }\n}", `a positive integer, got "0"`},
		{"cluster nodes negative", "s360 {\n cluster redis://a {\n  nodes -2\n }\n}", `a positive integer, got "-2"`},
		{"cluster nodes twice", "s360 {\n cluster redis://a {\n  nodes 3\n  nodes 3\n }\n}", "cluster nodes given twice"},
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
		"upstream is required":                            func(h *Handler) { h.Upstream = "" },
		`upstream "ftp://x"`:                              func(h *Handler) { h.Upstream = "ftp://x" },
		`upstream "https://x/tnseb"`:                      func(h *Handler) { h.Upstream = "https://x/tnseb" },
		`shop "https://u:p@x"`:                            func(h *Handler) { h.Shop = "https://u:p@x" },
		"secret is required":                              func(h *Handler) { h.Secret = "" },
		"operator is required":                            func(h *Handler) { h.Operator = "" },
		`allow "nope"`:                                    func(h *Handler) { h.Allow = []string{"nope"} },
		`min_interval "a"`:                                func(h *Handler) { h.MinInterval = map[string]caddy.Duration{"a": 1} },
		`oidc protect "orders"`:                           func(h *Handler) { h.OIDC = &OIDC{Protect: []string{"orders"}} },
		"rate_limit must be a positive":                   func(h *Handler) { h.RateLimit.Calls = 0 },
		"max_body_size cannot be":                         func(h *Handler) { h.MaxBodySize = -1 },
		"max_response_size must be":                       func(h *Handler) { h.MaxResponseSize = 300 << 20 },
		"cluster: the Redis URL is required":              func(h *Handler) { h.Cluster = &Cluster{} },
		`cluster "http://u:xxxxx@r:6379": want redis://`:  func(h *Handler) { h.Cluster = &Cluster{URL: "http://u:s3cret-value@r:6379?password=s3cret-value"} },
		`cluster "unix:///run/redis.sock": want redis://`: func(h *Handler) { h.Cluster = &Cluster{URL: "unix:///run/redis.sock"} },
		"cluster: the Redis URL does not parse":           func(h *Handler) { h.Cluster = &Cluster{URL: "redis://u:s3cret-value@r:port"} },
		"cluster nodes -1: want the number of sidecars":   func(h *Handler) { h.Cluster = &Cluster{URL: "redis://r:6379/0", Nodes: -1} },
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
