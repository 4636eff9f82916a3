// Package oidcrp is the OpenID Connect relying party of s360edge: buyers log
// in with the institution's provider (authorization code flow with PKCE),
// and the login starts a session of package session, whose Bearer tokens
// and refreshes the RP verifies. It has no Caddy imports; caddymodule wires
// it in.
package oidcrp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/s360edge/s360edge/session"
)

const (
	// discoveryRetry spaces discovery attempts after a failure, so a down
	// provider is not hammered by every request.
	discoveryRetry = 5 * time.Second
	// providerTimeout bounds one discovery, exchange or refresh.
	providerTimeout = 10 * time.Second
	// identifyTimeout bounds how long Bearer and Refresh (the sessions'
	// Identify) wait for the provider (discovery, the key set, a refresh):
	// past it the request is read as not logged in
	// (session.ErrProviderUnavailable), and the call goes on in the
	// background for the requests after it.
	identifyTimeout = 2 * time.Second
)

// RP is the relying party. It is safe for concurrent use. Its only
// goroutines are the provider's discovery, key set fetches and token
// refreshes, each bounded by providerTimeout, so it needs no cleanup.
type RP struct {
	cfg      Config
	log      *zap.Logger
	sessions *session.Manager
	state    *session.Sealer

	mu         sync.Mutex
	prov       *provider
	inflight   chan struct{} // closed when the running discovery ends
	inflightAt time.Time     // when it started
	lastErr    error
	retryAt    time.Time

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

// New validates cfg and returns an RP, which verifies the Bearer tokens and
// refreshes the sessions of cfg.Sessions, and ends its sessions at the
// provider on logout. It does no network I/O: discovery happens on first
// use, so a provider that is down never blocks a config load.
func New(cfg Config) (*RP, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Sessions == nil {
		return nil, session.ErrNoSessions
	}
	rp := &RP{cfg: cfg, log: cfg.Logger, sessions: cfg.Sessions, recent: map[string]recentRefresh{}}
	state, err := cfg.Sessions.Sealer(rp.stateCookieName())
	if err != nil {
		return nil, err
	}
	rp.state = state
	cfg.Sessions.UseProvider(rp)
	cfg.Sessions.OnLogout("", rp.logoutURL)
	return rp, nil
}

// Endpoint paths, below the sessions' prefix.
func (rp *RP) loginPath() string    { return rp.sessions.LoginPath() }
func (rp *RP) callbackPath() string { return rp.sessions.Prefix() + "/callback" }

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
		return nil, fmt.Errorf("%w: %w", session.ErrProviderUnavailable, ctx.Err())
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
		rp.lastErr = fmt.Errorf("%w: %w", session.ErrProviderUnavailable, err)
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

// Handles reports whether path is one of the RP's endpoints: login and
// callback (logout and userinfo are the sessions').
func (rp *RP) Handles(path string) bool {
	return path == rp.loginPath() || path == rp.callbackPath()
}

// ServeHTTP serves the login and callback endpoints.
func (rp *RP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case rp.loginPath():
		if session.AllowMethods(w, r, http.MethodGet, http.MethodHead) {
			rp.serveLogin(w, r)
		}
	case rp.callbackPath():
		if session.AllowMethods(w, r, http.MethodGet) {
			rp.serveCallback(w, r)
		}
	default:
		session.WriteError(w, http.StatusNotFound, "not_found", "no such authentication endpoint")
	}
}

func (rp *RP) redirectURL(r *http.Request) string {
	if rp.cfg.RedirectURL != "" {
		return rp.cfg.RedirectURL
	}
	return session.Origin(r) + rp.callbackPath()
}

func (rp *RP) stateCookieName() string { return rp.sessions.CookieName() + "_state" }
