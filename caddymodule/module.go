// Package caddymodule is the Caddy glue of s360edge: the http.handlers.s360
// handler, its Caddyfile directive, and the long-lived edge it shares across
// config reloads. The S-360 knowledge lives in packages that do not import
// Caddy (s360, upstream, cachestore).
package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/live"
	"github.com/s360edge/s360edge/oidcrp"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/session"
	"github.com/s360edge/s360edge/upstream"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults. S-360's guidance (docs/S360.md, "Rate limits") is 180 calls a minute for the
// whole institution, getCatalogDetailed at most every 10 minutes and
// availability at most once a minute; the defaults stay inside it.
// rate_limit's defaults are the budget's (budget.DefaultCalls, DefaultWindow).
const (
	DefaultPoll        = time.Minute
	DefaultMaxBodySize = 1 << 20
	DefaultPartner     = "s360edge"
)

// Handler is the s360 HTTP handler: it answers the S-360 REST-RPC paths
// (/tnseb/backend-apis/...) for the website, with the operator's
// credentials, and hands every other request to the next handler.
//
// For every S-360 call it answers, it sets these placeholders (for access
// logs, e.g. with log_append, and for the handlers after it):
//
//	{http.s360.method}            service/method, e.g. catalogService/getCatalogDetailed
//	{http.s360.class}             catalog, availability, order, uncached or denied
//	{http.s360.cache_status}      the Cache-Status header sent
//	{http.s360.upstream_duration} how long the request waited for S-360; 0s when the store answered
//
// A config's settings apply to the edge it shares with other configs only
// once the whole config has loaded (see App): a failed reload changes
// nothing.
type Handler struct {
	// Upstream is the S-360 web services base URL of the institution,
	// e.g. https://myinstit.ws.secutix.com. Required; no default.
	Upstream string `json:"upstream,omitempty"`
	// Operator is the virtual operator login, e.g. MYINSTIT_WEB.
	// Required; no default.
	// Placeholders such as {env.S360_OPERATOR} are replaced at provision.
	Operator string `json:"operator,omitempty"`
	// Secret is the operator's secret. Required; no default. Use a placeholder such
	// as {env.S360_SECRET} so that it stays out of the JSON config.
	Secret string `json:"secret,omitempty"`
	// Partner is sent to the token endpoint. Default "s360edge".
	Partner string `json:"partner,omitempty"`
	// Shop is the S-360 ticket shop base URL, the only host order
	// answers redirect to, e.g. https://pfx-myinstit.shop.secutix.com.
	// Required; no default.
	Shop string `json:"shop,omitempty"`
	// CartTarget is where a successful order sends the buyer: "cart"
	// (default) or "checkout", i.e. <shop>/api/1/redirect/<target>.
	CartTarget string `json:"cart_target,omitempty"`
	// Storage is the cache directory (Badger). Default:
	// <caddy data dir>/s360/<upstream host>. One directory per institution.
	Storage string `json:"storage,omitempty"`
	// RateLimit bounds upstream calls for the whole institution.
	// Default 150 calls per 1m, under S-360's 180/min.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// ClientQuota is how clients (Caddy's client IP, which honours
	// trusted_proxies) share the budget. Without it (the default) they
	// share it max-min fairly: a lone client may use all of it, and
	// while clients compete each active one is sure of an equal share.
	// {"calls": 30, "window": "1m"} caps each client besides; "off"
	// turns both off. Orders and the sidecar's own calls are outside.
	ClientQuota *ClientQuota `json:"client_quota,omitempty"`
	// Quota is the institution's monthly quota of S-360 calls, e.g.
	// {"calls": 10000, "per": "month"}: every call is counted in the
	// calendar month (UTC), the watchers' polls are spread over it, a
	// reserve is kept for orders, and buyers' misses get stale answers (or
	// 429 quota) while the pace would overrun it. Default: none.
	Quota *Quota `json:"quota,omitempty"`
	// Adaptive lowers the effective limit below rate_limit when S-360
	// refuses calls at institution scope, and raises it back by one call
	// per window without refusal. Default true.
	Adaptive *bool `json:"adaptive,omitempty"`
	// MaxWait is how long a request that has no stale answer waits for a
	// budget slot before it gets 429. Default 3s. Orders wait up to 30s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`
	// OrderQueue turns the order queue off (order_queue off): an order
	// past the budget then waits up to order_wait for a slot, then gets
	// 429. Default on: an order not sent within order_hold joins one FIFO
	// line of the institution, admitted as fast as the budget allows
	// orders (docs/ORDERS.md).
	OrderQueue *bool `json:"order_queue,omitempty"`
	// OrderHold is how long an order waits in person before its answer
	// depends on the client: 202 and a ticket (Prefer: respond-async), the
	// waiting page (a browser), or more waiting (any other API client).
	// Default 2s (orderHoldDefault).
	OrderHold caddy.Duration `json:"order_hold,omitempty"`
	// OrderWait is the longest an API client's order waits in person;
	// then it is withdrawn, never sent, and answered 429. Default 30s
	// (edge.DefaultOrderWait).
	OrderWait caddy.Duration `json:"order_wait,omitempty"`
	// OrderQueuePerClient bounds the orders one client address has queued.
	// Default 2 (orderq.DefaultPerClient).
	OrderQueuePerClient int `json:"order_queue_per_client,omitempty"`
	// OrderQueueMax bounds the line; past it an order gets 503. Default
	// 100000 (orderq.DefaultMax).
	OrderQueueMax int `json:"order_queue_max,omitempty"`
	// AbandonAfter withdraws a queued order whose ticket nobody polled or
	// streamed this long. Default 2m (orderq.DefaultAbandonAfter).
	AbandonAfter caddy.Duration `json:"abandon_after,omitempty"`
	// SetupPoll is the getLastSetupUpdate interval; 0 turns it off.
	// Default 1m.
	SetupPoll *caddy.Duration `json:"setup_poll,omitempty"`
	// UpdatesPoll is the getUpdatedAvailabilities interval; 0 turns it
	// off. Default 1m.
	UpdatesPoll *caddy.Duration `json:"updates_poll,omitempty"`
	// MinInterval holds per-method floors between upstream calls of one
	// cache key, keyed "service/method" ("service/*" allowed). Defaults
	// (s360.Methods and s360.Services): catalogService/getCatalog 10m,
	// catalogService/getCatalogDetailed 10m, availabilityService/* 1m, and
	// the feeds catalogService/getLastSetupUpdate 1m,
	// catalogService/isCatalogServiceAlive 1m and
	// availabilityService/getUpdatedAvailabilities 1m, which only an exact
	// name changes.
	MinInterval map[string]caddy.Duration `json:"min_interval,omitempty"`
	// Timeout bounds one upstream call. Default 60s: getCatalogDetailed
	// takes about 20 s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// MaxBodySize bounds a request body, in bytes. Default 1 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`
	// MaxResponseSize bounds one upstream answer, in bytes (502
	// upstream_too_large above). Default 64 MiB, at most 256 MiB: the
	// bound on all answers being read at once in the process.
	MaxResponseSize int64 `json:"max_response_size,omitempty"`
	// Allow lists extra "service/method" patterns the website may call;
	// they pass through uncached. Default: none beyond the built-in
	// catalog, availability and createOrUpdateOrder.
	Allow []string `json:"allow,omitempty"`
	// MaxAge is how long an answer stays fresh, per "service/method"
	// pattern. Defaults (s360.Methods and s360.Services): catalogService/*
	// 24h and setupService/* 24h (and until the setup generation changes),
	// availabilityService/* 1h.
	MaxAge map[string]caddy.Duration `json:"max_age,omitempty"`
	// StaleWhileRevalidate is how long past its freshness an answer is
	// still served at once while one background call refreshes it.
	// Default 1h.
	StaleWhileRevalidate caddy.Duration `json:"stale_while_revalidate,omitempty"`
	// StaleIfError is how long past its freshness an answer is still
	// served when S-360 fails, throttles, or the budget is spent.
	// Default 24h.
	StaleIfError caddy.Duration `json:"stale_if_error,omitempty"`
	// StaleTimeout: with a stale answer at hand, a request waits this
	// long for S-360 before it gets the stale answer; the call goes on in
	// the background and stores its answer. Default 2s.
	StaleTimeout caddy.Duration `json:"stale_timeout,omitempty"`
	// MaxSize bounds the store on disk, in bytes. Default 1 GiB.
	MaxSize int64 `json:"max_size,omitempty"`
	// OIDC configures buyer login. Default: off.
	OIDC *OIDC `json:"oidc,omitempty"`
	// SAML configures buyer login at the shop as SAML IdP. Default: off.
	SAML *SAML `json:"saml,omitempty"`
	// LocalToken answers the website's own calls of the S-360 token
	// endpoint (/tnai/backend-apis/v1/auth and /tnco/backend-apis/v1/auth)
	// in the sidecar, at most 10 wrong credentials per client address and
	// minute; false passes these paths on to the next handler like any
	// other path, for websites that never call them. Default true.
	LocalToken *bool `json:"local_token,omitempty"`
	// LiveMax bounds the pages that follow availability at once on
	// GET /s360/live?products=<id>,… (server-sent events, at most 100
	// products each): one more gets 503 live_full with Retry-After 30.
	// 0 turns the endpoint off (the path goes to the next handler).
	// Default 10000.
	LiveMax *int `json:"live_max,omitempty"`
	// Cluster shares the budget, the cache, the polling and the logouts
	// with the institution's other sidecars through Redis. Default: off
	// (this sidecar alone; Redis is never needed).
	Cluster *Cluster `json:"cluster,omitempty"`

	logger     *zap.Logger
	classifier s360.Classifier
	client     *upstream.Client
	queue      orderQueue // the edge's
	// ticketStreams ends the event streams of tickets at Cleanup.
	ticketStreams *streamsEnd
	institution   string
	edge          *edge.Edge
	edgeKey       string
	cluster       *cluster.Cluster // the edge's; nil without cluster
	localToken    *localTokens
	tokenGuard    *tokenGuard // the edge's
	rp            *oidcrp.RP
	canon         *s360.CanonicalMemo
	// live is /s360/live (live.go); nil with live_max 0.
	live *liveEndpoint

	// sessions are the oidc block's, else the saml block's; protect is
	// both blocks' protect.
	sessions *session.Manager
	protect  session.Protect
}

// RateLimit is a number of calls per window.
type RateLimit struct {
	// Calls is the most upstream calls in any sliding window. Required
	// when rate_limit is set; default (without rate_limit) 150.
	Calls int `json:"calls,omitempty"`
	// Window is the sliding window. Required when rate_limit is set;
	// default (without rate_limit) 1m.
	Window caddy.Duration `json:"window,omitempty"`
}

// OIDC is the buyer login configuration (see the oidc Caddyfile block).
// Issuer, ClientID, ClientSecret and CookieSecret are required; the
// secrets take placeholders such as {env.OIDC_SECRET}.
type OIDC struct {
	// Issuer is the provider's issuer URL, where its discovery document
	// lives (<issuer>/.well-known/openid-configuration). Required; no
	// default.
	Issuer string `json:"issuer,omitempty"`
	// ClientID is the sidecar's client id at the provider. Required; no
	// default.
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret is the sidecar's client secret at the provider; use a
	// placeholder such as {env.OIDC_SECRET}. Required; no default.
	ClientSecret string `json:"client_secret,omitempty"`
	// CookieSecret encrypts the session cookie: base64 of at least 32
	// random bytes, or at least 32 characters. Required; no default.
	CookieSecret string `json:"cookie_secret,omitempty"`
	// RedirectURL is the absolute callback URL registered at the
	// provider. Default: the request's scheme and host + /auth/callback;
	// set it in production.
	RedirectURL string `json:"redirect_url,omitempty"`
	// Scopes requested. Default: openid profile email.
	Scopes []string `json:"scopes,omitempty"`
	// Protect lists request paths that need a logged-in buyer: an exact
	// path, or a prefix ending in "*". Navigations are sent to login,
	// API calls get 401 JSON. Default: none.
	Protect []string `json:"protect,omitempty"`
	// PathPrefix moves the login, callback, logout and userinfo
	// endpoints. Default: /auth.
	PathPrefix string `json:"path_prefix,omitempty"`
	// EmailClaim names the claim behind X-S360-Email, read from the ID
	// token, else from the provider's UserInfo endpoint at login.
	// Default: email.
	EmailClaim string `json:"email_claim,omitempty"`
	// NameClaim names the claim behind X-S360-Name, read like
	// EmailClaim. Default: name (then preferred_username).
	NameClaim string `json:"name_claim,omitempty"`
	// TokenAuth is the client authentication at the token endpoint:
	// basic or post. Default: basic, falling back to post.
	TokenAuth string `json:"token_auth,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.s360",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision applies defaults, replaces placeholders and acquires the edge.
// Each line of its error starts with "s360: ", then names the subdirective
// as the Caddyfile spells it (in its block: "saml: cookie_secret"), and
// says what to write.
func (h *Handler) Provision(ctx caddy.Context) error {
	return within("s360", h.provision(ctx))
}

func (h *Handler) provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	replacePlaceholders(&h.Upstream, &h.Operator, &h.Secret, &h.Partner, &h.Shop, &h.Storage)
	var errs []error
	if h.Cluster != nil {
		// A prefix written as a placeholder that resolves to nothing must
		// not fall back to the default one another institution may use.
		if h.Cluster.Prefix != "" {
			if replacePlaceholders(&h.Cluster.Prefix); h.Cluster.Prefix == "" {
				errs = append(errs, fmt.Errorf("cluster: prefix: empty once its placeholders are replaced (is its environment variable set?); "+
					"set it, e.g. %s, or leave it out for the default %s", example("cluster", "prefix"), cluster.DefaultPrefix))
			}
		}
		replacePlaceholders(&h.Cluster.URL)
	}
	if h.CartTarget == "" {
		h.CartTarget = "cart"
	}
	if h.Partner == "" {
		h.Partner = DefaultPartner
	}
	if h.RateLimit == nil {
		h.RateLimit = &RateLimit{Calls: budget.DefaultCalls, Window: caddy.Duration(budget.DefaultWindow)}
	}
	if h.SetupPoll == nil {
		d := caddy.Duration(DefaultPoll)
		h.SetupPoll = &d
	}
	if h.UpdatesPoll == nil {
		d := caddy.Duration(DefaultPoll)
		h.UpdatesPoll = &d
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(upstream.DefaultTimeout)
	}
	if h.MaxBodySize == 0 {
		h.MaxBodySize = DefaultMaxBodySize
	}
	// One error of each subdirective that does not validate, all at once.
	errs = append(errs, h.check(), h.provisionOIDC(), h.provisionSAML())
	if err := errors.Join(errs...); err != nil {
		return err
	}
	h.warnBelowGuidance()

	u, _ := url.Parse(h.Upstream)
	h.institution = u.Host
	if h.Storage == "" {
		h.Storage = filepath.Join(caddy.AppDataDir(), "s360", u.Host)
	}
	dir, err := filepath.Abs(h.Storage)
	if err != nil {
		return fmt.Errorf("storage: resolving %q: %w", h.Storage, err)
	}
	h.Storage = dir
	h.classifier = s360.Classifier{Extra: h.Allow}
	h.canon = new(s360.CanonicalMemo)
	h.localToken = newLocalTokens(h.Operator, h.Secret)
	app, err := ctx.App("s360")
	if err != nil {
		return err
	}
	settings := h.settings()
	v, _, err := edges.LoadOrNew(dir, func() (caddy.Destructor, error) {
		p, err := openEdge(dir, settings, h.Cluster)
		if err != nil {
			return nil, err
		}
		inForce.Lock()
		inForce.m[p.Edge] = running{settings: settings}
		inForce.Unlock()
		return p, nil
	})
	if err != nil {
		return err // openEdge's names storage or cluster
	}
	pe := v.(pooledEdge)
	if pe.clusterID != h.Cluster.id() {
		// Give back this config's use of the edge: Cleanup only
		// releases an edge recorded in h.edgeKey.
		_, _ = edges.Delete(dir)
		return errClusterChanged(dir)
	}
	h.edge, h.edgeKey, h.cluster, h.tokenGuard, h.queue = pe.Edge, dir, pe.cluster, pe.tokenGuard, pe.queue
	h.ticketStreams = newStreamsEnd()
	h.client = upstream.New(upstream.Config{
		BaseURL:  h.Upstream,
		Operator: h.Operator,
		Secret:   h.Secret,
		Partner:  h.Partner,
		Timeout:  time.Duration(h.Timeout),
		// 0 is upstream.DefaultMaxResponseBytes.
		MaxResponseBytes: h.MaxResponseSize,
		Gate:             h.edge,
		Context:          h.edge.Context(),
	})
	// The settings and the client apply to the shared edge only when the
	// whole config has provisioned and starts (App.Start).
	app.(*App).add(pendingSettings{h.edge, settings, h.client, h.startQueue(pe.queue)})
	h.provisionLive()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// settings are what this config sets on its edge.
func (h *Handler) settings() edge.Settings {
	limits := h.budgetConfig()
	return edge.Settings{
		Institution: h.institution,
		Policy:      h.policy(),
		Waits:       edge.Waits{Foreground: time.Duration(h.MaxWait), Order: time.Duration(h.OrderWait)},
		Watch:       edge.Watch{SetupPoll: time.Duration(*h.SetupPoll), UpdatesPoll: time.Duration(*h.UpdatesPoll)},
		Timeout:     time.Duration(h.Timeout),
		MaxBytes:    h.MaxSize,
		Budget:      &limits,
		Nodes:       h.Cluster.nodes(),
		Quota:       h.Quota.calls(),
	}
}

func (h *Handler) budgetConfig() budget.Config {
	c := budget.Config{Calls: h.RateLimit.Calls, Window: time.Duration(h.RateLimit.Window), Floors: map[string]time.Duration{}}
	for pat, d := range h.MinInterval {
		c.Floors[pat] = time.Duration(d)
	}
	h.budgetExtras(&c)
	return c
}

func (h *Handler) policy() edge.Policy {
	p := edge.Policy{
		MaxAge:               map[string]time.Duration{},
		StaleWhileRevalidate: time.Duration(h.StaleWhileRevalidate),
		StaleIfError:         time.Duration(h.StaleIfError),
		StaleTimeout:         time.Duration(h.StaleTimeout),
	}
	for pat, d := range h.MaxAge {
		p.MaxAge[pat] = time.Duration(d)
	}
	return p
}

// replacePlaceholders replaces global placeholders such as {env.X} in
// place, so that secrets can stay out of the JSON config.
func replacePlaceholders(fields ...*string) {
	repl := caddy.NewReplacer()
	for _, s := range fields {
		*s = strings.TrimSpace(repl.ReplaceKnown(*s, ""))
	}
}

// check rejects configurations that cannot work; it runs in Provision,
// after placeholders are replaced, and never prints the secret. Its errors
// name the subdirective and say what to write; the oidc and saml blocks are
// provisionOIDC's and provisionSAML's.
func (h *Handler) check() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(checkBaseURL("upstream", h.Upstream, "the institution's S-360 web services base URL"))
	add(checkBaseURL("shop", h.Shop, "the ticket shop's base URL"))
	if h.CartTarget != "cart" && h.CartTarget != "checkout" {
		add(fmt.Errorf("cart_target: %q; write cart_target cart or cart_target checkout", h.CartTarget))
	}
	if h.Operator == "" {
		add(missing("operator", "the virtual operator login"))
	}
	if h.Secret == "" {
		add(missing("secret", "the operator's secret"))
	}
	if h.RateLimit.Calls <= 0 || h.RateLimit.Window <= 0 {
		add(fmt.Errorf("rate_limit: %d calls per %s; write a positive number of calls per positive window, e.g. %s",
			h.RateLimit.Calls, time.Duration(h.RateLimit.Window), example("", "rate_limit")))
	}
	add(h.checkClientQuota())
	add(h.checkQuota())
	add(h.checkLive())
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{
		{"setup_poll", *h.SetupPoll}, {"updates_poll", *h.UpdatesPoll}, {"timeout", h.Timeout}, {"max_wait", h.MaxWait},
		{"order_hold", h.OrderHold}, {"order_wait", h.OrderWait}, {"abandon_after", h.AbandonAfter},
		{"stale_while_revalidate", h.StaleWhileRevalidate}, {"stale_if_error", h.StaleIfError}, {"stale_timeout", h.StaleTimeout},
	} {
		if d.v < 0 {
			add(fmt.Errorf("%s: %s is negative; write a duration >= 0, e.g. %s", d.name, time.Duration(d.v), example("", d.name)))
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"max_body_size", h.MaxBodySize}, {"max_size", h.MaxSize},
		{"order_queue_per_client", int64(h.OrderQueuePerClient)}, {"order_queue_max", int64(h.OrderQueueMax)}} {
		if n.v < 0 {
			add(fmt.Errorf("%s: %d is negative; write a size, e.g. %s", n.name, n.v, example("", n.name)))
		}
	}
	if h.MaxResponseSize < 0 || h.MaxResponseSize > upstream.DefaultReadingBytes {
		add(fmt.Errorf("max_response_size: %d bytes; write a size up to %d bytes (256MiB), e.g. %s", h.MaxResponseSize, upstream.DefaultReadingBytes, example("", "max_response_size")))
	}
	for pat, d := range h.MaxAge {
		if !s360.ValidPattern(pat) || d <= 0 {
			add(fmt.Errorf("max_age: %q %s; write a service/method (or service/*) and a positive duration, e.g. %s", pat, time.Duration(d), example("", "max_age")))
		}
	}
	for pat, d := range h.MinInterval {
		if !s360.ValidPattern(pat) || d < 0 {
			add(fmt.Errorf("min_interval: %q %s; write a service/method (or service/*) and a duration >= 0, e.g. %s", pat, time.Duration(d), example("", "min_interval")))
		}
	}
	for _, pat := range h.Allow {
		if !s360.ValidPattern(pat) {
			add(fmt.Errorf("allow: %q; write service/method or service/*, e.g. %s", pat, example("", "allow")))
		}
	}
	if h.Cluster != nil {
		add(h.Cluster.check())
	}
	return errors.Join(errs...)
}

// missing is the error of the required subdirective name, left out or
// empty once its placeholders are replaced: what it is, and an example.
func missing(name, what string) error {
	return fmt.Errorf("%s: missing (is its environment variable set?); set it to %s, e.g. %s", name, what, example("", name))
}

func checkBaseURL(name, raw, what string) error {
	if raw == "" {
		return missing(name, what)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		shown := "(unparsable)"
		if err == nil {
			shown = u.Redacted()
		}
		return fmt.Errorf("%s: %q is not a base URL; set it to %s: scheme and host[:port], with no path, query or credentials, e.g. %s", name, shown, what, example("", name))
	}
	return nil
}

// warnBelowGuidance logs intervals faster than S-360's guidance: they are
// accepted so that tests and demos run fast.
func (h *Handler) warnBelowGuidance() {
	for name, d := range map[string]*caddy.Duration{"setup_poll": h.SetupPoll, "updates_poll": h.UpdatesPoll} {
		if *d > 0 && time.Duration(*d) < time.Minute {
			h.logger.Warn("interval below S-360's guidance of one minute", zap.String("subdirective", name), zap.Duration("value", time.Duration(*d)))
		}
	}
	floors := budget.New(budget.Config{})
	for pat, d := range h.MinInterval {
		name := strings.Replace(pat, "/*", "/any", 1)
		if def := floors.Floor(name); time.Duration(d) < def {
			h.logger.Warn("min_interval below S-360's guidance", zap.String("method", pat), zap.Duration("value", time.Duration(d)), zap.Duration("guidance", def))
		}
	}
	if per := time.Duration(h.RateLimit.Window) / time.Duration(max(h.RateLimit.Calls, 1)); per < time.Minute/180 {
		h.logger.Warn("rate_limit above S-360's documented 180 calls per minute", zap.Int("calls", h.RateLimit.Calls), zap.Duration("window", time.Duration(h.RateLimit.Window)))
	}
}

// Cleanup releases the edge this handler acquired; the edge stays open
// while another config (e.g. the one a reload brought in) still uses it.
func (h *Handler) Cleanup() error {
	h.SAML.release()
	if h.edgeKey == "" {
		return nil
	}
	h.cleanupLive()
	h.ticketStreams.end()
	h.edge.Detach(h.client)
	h.client.CloseIdleConnections()
	_, err := edges.Delete(h.edgeKey)
	h.edgeKey, h.edge, h.cluster = "", nil, nil
	return err
}

// ServeHTTP answers S-360 paths and passes everything else on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p := r.URL.Path
	if h.serveSAML(w, r) {
		return nil
	}
	if h.rp != nil && h.rp.Handles(p) {
		h.rp.ServeHTTP(w, r)
		return nil
	}
	if h.sessions != nil && h.sessions.Handles(p) {
		h.sessions.ServeHTTP(w, r)
		return nil
	}
	if strings.HasPrefix(p, TicketPrefix) {
		return h.serveTicket(w, r)
	}
	// Identity headers come from the sidecar only, never from the client.
	session.SetIdentityHeaders(r.Header, nil)
	// With local_token off, the token endpoint's path goes to the website.
	token := (p == upstream.AuthPath || p == "/tnco/backend-apis/v1/auth") && (h.LocalToken == nil || *h.LocalToken)
	api := strings.HasPrefix(p, s360.APIPrefix)
	stream := h.live != nil && p == live.Path
	// The buyer is worked out only where it is used: a protected path, and
	// a request the website gets with the identity headers. S-360 calls and
	// the token endpoint need none, so their answers never wait for the
	// identity provider.
	if h.sessions != nil {
		var id *session.Identity
		switch {
		case h.protected(r):
			var ok bool
			if id, ok = h.sessions.Require(w, r); !ok {
				return nil
			}
		case !token && !api && !stream:
			id, _ = h.sessions.Identify(w, r)
		}
		if id != nil {
			session.SetIdentityHeaders(r.Header, id)
		}
	}
	switch {
	case token:
		return h.serveLocalToken(w, r)
	case api:
		return h.serveAPI(w, r)
	case stream:
		return h.serveLive(w, r)
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
