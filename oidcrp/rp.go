// Package oidcrp is the OpenID Connect relying party of s360edge: buyers log
// in with the institution's provider (authorization code flow with PKCE), the
// session lives in an encrypted cookie, and the verified identity is handed to
// the website as headers. It has no Caddy imports; caddymodule wires it in.
package oidcrp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Errors returned by Identify, to tell the caller which answer fits.
var (
	// ErrProviderUnavailable: discovery failed (answer 503); retried later.
	ErrProviderUnavailable = errors.New("oidc provider unavailable")
	// ErrInvalidToken: an Authorization: Bearer token failed verification.
	ErrInvalidToken = errors.New("invalid bearer token")
	// ErrSessionExpired: the session cookie's life or its tokens ran out.
	ErrSessionExpired = errors.New("session expired")
	// ErrInvalidSession: the session cookie was tampered with, sealed with
	// another secret, or garbage.
	ErrInvalidSession = errors.New("invalid session cookie")
)

const (
	// discoveryRetry spaces discovery attempts after a failure, so a down
	// provider is not hammered by every request.
	discoveryRetry = 5 * time.Second
	// providerTimeout bounds one discovery, exchange or refresh.
	providerTimeout = 10 * time.Second
	// identifyTimeout bounds how long Identify waits for the provider
	// (discovery, the key set, a refresh): past it the request is read as
	// not logged in (ErrProviderUnavailable), and the call goes on in the
	// background for the requests after it.
	identifyTimeout = 2 * time.Second
	// stateTTL is how long a buyer may stay at the provider during login.
	stateTTL = 10 * time.Minute
)

// RP is the relying party. It is safe for concurrent use. Its only
// goroutines are the provider's discovery, key set fetches and token
// refreshes, each bounded by providerTimeout, so it needs no cleanup.
type RP struct {
	cfg     Config
	log     *zap.Logger
	secret  []byte
	session *cookieCodec
	state   *cookieCodec
	protect Protect

	mu         sync.Mutex
	prov       *provider
	inflight   chan struct{} // closed when the running discovery ends
	inflightAt time.Time     // when it started
	lastErr    error
	retryAt    time.Time

	logoutVia map[string]func(r *http.Request, ext, back string) string

	refreshes singleflight.Group
	recentMu  sync.Mutex
	recent    map[string]recentRefresh
}

// provider is what discovery yields.
type provider struct {
	oidc       *oidc.Provider
	oauth      *oauth2.Config
	verifier   *oidc.IDTokenVerifier
	endSession string
}

// New validates cfg and returns an RP. It does no network I/O: discovery
// happens on first use, so a provider that is down never blocks a config load.
func New(cfg Config) (*RP, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	secret, err := decodeSecret(cfg.CookieSecret)
	if err != nil {
		return nil, err
	}
	sc, err := newCookieCodec(secret, cfg.CookieName)
	if err != nil {
		return nil, err
	}
	stc, err := newCookieCodec(secret, cfg.CookieName+"_state")
	if err != nil {
		return nil, err
	}
	protect, _ := NewProtect(cfg.Protect) // validated above
	return &RP{cfg: cfg, log: cfg.Logger, secret: secret, session: sc, state: stc, protect: protect, recent: map[string]recentRefresh{}, logoutVia: map[string]func(*http.Request, string, string) string{}}, nil
}

// Protected reports whether r's path, in any reading of it, is protected.
func (rp *RP) Protected(r *http.Request) bool { return rp.protect.Match(r.URL) }

// provider returns the discovered provider, discovering it if needed.
// Discovery runs on a goroutine of its own, one at a time, detached from any
// request: callers wait for it or for their own context, whichever ends
// first, and a caller that stops waiting (Identify's bound) leaves it running
// for the next. After a failure, callers get the same error until
// discoveryRetry has passed.
func (rp *RP) provider(ctx context.Context) (*provider, error) {
	return rp.providerWithin(ctx, 0)
}

// providerWithin is provider, waiting for a discovery no longer than
// patience after it started (0: no such bound): once a discovery has made
// its first callers wait that long, the ones after them do not wait.
func (rp *RP) providerWithin(ctx context.Context, patience time.Duration) (*provider, error) {
	rp.mu.Lock()
	if p := rp.prov; p != nil {
		rp.mu.Unlock()
		return p, nil
	}
	done := rp.inflight
	if done == nil {
		if time.Now().Before(rp.retryAt) {
			err := rp.lastErr
			rp.mu.Unlock()
			return nil, err
		}
		done = make(chan struct{})
		rp.inflight, rp.inflightAt = done, time.Now()
		go rp.runDiscovery(done)
	}
	started := rp.inflightAt
	rp.mu.Unlock()
	if patience > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, started.Add(patience))
		defer cancel()
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrProviderUnavailable, ctx.Err())
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.prov != nil {
		return rp.prov, nil
	}
	return nil, rp.lastErr
}

// runDiscovery discovers the provider, records the outcome and closes done.
func (rp *RP) runDiscovery(done chan struct{}) {
	p, err := rp.discover()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.inflight = nil
	if err != nil {
		rp.lastErr = fmt.Errorf("%w: %w", ErrProviderUnavailable, err)
		rp.retryAt = time.Now().Add(discoveryRetry)
		rp.log.Warn("oidc discovery failed; will retry", zap.String("issuer", rp.cfg.Issuer), zap.Duration("retry_in", discoveryRetry), zap.Error(rp.lastErr))
	} else {
		rp.prov = p
		rp.log.Info("oidc provider discovered", zap.String("issuer", rp.cfg.Issuer))
	}
	close(done)
}

// discover runs on a context detached from any request, so that one buyer
// closing a tab does not fail the discovery the others are waiting for.
func (rp *RP) discover() (*provider, error) {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.Background(), rp.cfg.HTTPClient), providerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, rp.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering %s: %w", rp.cfg.Issuer, err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("reading discovery document: %w", err)
	}
	if u, err := url.Parse(meta.EndSession); err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		meta.EndSession = ""
	}
	endpoint := p.Endpoint()
	endpoint.AuthStyle = authStyle(rp.cfg.TokenAuth)
	// The verifier fetches the key set through a gate that lets one fetch
	// through per keyRefresh (see keyGate).
	keys := oidc.ClientContext(context.Background(), gatedClient(rp.cfg.HTTPClient))
	return &provider{
		oidc: p,
		// RedirectURL stays empty: redirect_uri is passed per login because
		// it may be derived from the request.
		oauth: &oauth2.Config{
			ClientID:     rp.cfg.ClientID,
			ClientSecret: rp.cfg.ClientSecret,
			Endpoint:     endpoint,
			Scopes:       rp.cfg.Scopes,
		},
		verifier:   p.VerifierContext(keys, &oidc.Config{ClientID: rp.cfg.ClientID}),
		endSession: meta.EndSession,
	}, nil
}

// authStyle is the token endpoint's client authentication. Without a
// configured one, x/oauth2 tries client_secret_basic and falls back to
// client_secret_post: discovery's token_endpoint_auth_methods_supported is
// not trusted, since some providers list basic and accept only post.
func authStyle(configured string) oauth2.AuthStyle {
	switch configured {
	case "basic":
		return oauth2.AuthStyleInHeader
	case "post":
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleAutoDetect
}

// clientCtx makes x/oauth2 use our HTTP client, on a context that outlives
// the caller's cancellation but not providerTimeout.
func (rp *RP) clientCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), providerTimeout)
	return context.WithValue(ctx, oauth2.HTTPClient, rp.cfg.HTTPClient), cancel
}

// Handles reports whether path is one of the RP's endpoints.
func (rp *RP) Handles(path string) bool {
	switch path {
	case rp.cfg.LoginPath, rp.cfg.CallbackPath:
		return !rp.cfg.NoProvider
	case rp.cfg.LogoutPath, rp.cfg.UserinfoPath:
		return true
	}
	return false
}

// ServeHTTP serves the login, callback, logout and userinfo endpoints.
func (rp *RP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case rp.cfg.LoginPath:
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			rp.serveLogin(w, r)
		}
	case rp.cfg.CallbackPath:
		if allowMethods(w, r, http.MethodGet) {
			rp.serveCallback(w, r)
		}
	case rp.cfg.LogoutPath:
		if allowMethods(w, r, http.MethodGet, http.MethodPost) {
			rp.serveLogout(w, r)
		}
	case rp.cfg.UserinfoPath:
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			rp.serveUserinfo(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, apiError{Error: "not_found", Message: "no such authentication endpoint"})
	}
}

func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, apiError{Error: "method_not_allowed", Message: "use " + strings.Join(methods, " or ")})
	return false
}

// LoginURL is the path that starts a login and comes back to returnTo
// (sanitised to a same-site path).
func (rp *RP) LoginURL(returnTo string) string {
	return rp.cfg.LoginPath + "?return_to=" + url.QueryEscape(SanitizeReturnTo(returnTo))
}

// Secure says whether cookies set on r's answer must be Secure: the buyer
// reached us over TLS, directly or through a proxy that says so.
func (rp *RP) Secure(r *http.Request) bool {
	if r.TLS != nil || strings.HasPrefix(rp.cfg.RedirectURL, "https://") {
		return true
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// Origin is scheme://host of the request, as the buyer sees it.
func (rp *RP) Origin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(proto), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (rp *RP) redirectURL(r *http.Request) string {
	if rp.cfg.RedirectURL != "" {
		return rp.cfg.RedirectURL
	}
	return rp.Origin(r) + rp.cfg.CallbackPath
}

func (rp *RP) stateCookieName() string { return rp.cfg.CookieName + "_state" }

// redirect answers 302 without http.Redirect's path cleaning and HTML body.
func redirect(w http.ResponseWriter, location string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", location)
	w.WriteHeader(http.StatusFound)
}
