package oidcrp

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/field"
	"github.com/s360edge/s360edge/session"
)

// Config configures the relying party. Only Issuer, ClientID, ClientSecret
// and Sessions are required.
type Config struct {
	// Issuer is the provider's issuer URL; discovery is fetched from
	// Issuer + "/.well-known/openid-configuration" on first use.
	Issuer       string
	ClientID     string
	ClientSecret string

	// Sessions keeps the buyer sessions a login starts: their cookie,
	// revocation, and the logout and userinfo endpoints. The RP verifies
	// Bearer tokens and refreshes sessions for it. Its Prefix places the
	// RP's endpoints: <prefix>/login and <prefix>/callback.
	Sessions *session.Manager

	// RedirectURL is the absolute callback URL registered at the provider.
	// Default: derived per request from the request's scheme and Host plus
	// the callback path (set it explicitly in production so the Host
	// header never chooses it). Give it to Sessions as SiteURL too.
	RedirectURL string

	// Scopes requested at login. Default: openid profile email. "openid" is
	// always added.
	Scopes []string

	// EmailClaim and NameClaim name the claims read for X-S360-Email and
	// X-S360-Name. Defaults: email, and name (then preferred_username).
	// When the ID token lacks them, they are fetched once at login from the
	// provider's UserInfo endpoint and kept in the session.
	EmailClaim, NameClaim string

	// TokenAuth is how the client authenticates at the token endpoint:
	// "basic" (client_secret_basic) or "post" (client_secret_post).
	// Default: basic, falling back to post when the provider refuses it.
	TokenAuth string

	// HTTPClient talks to the provider. Default: a client with a 10s timeout.
	HTTPClient *http.Client

	// Logger receives operational events, never tokens, codes or cookies.
	// Default: no logging.
	Logger *zap.Logger
}

// withDefaults returns a copy of c with defaults applied.
func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.EmailClaim, "email")
	def(&c.NameClaim, "name")
	if len(c.Scopes) == 0 {
		c.Scopes = []string{"openid", "profile", "email"}
	} else if !slices.Contains(c.Scopes, "openid") {
		c.Scopes = append([]string{"openid"}, c.Scopes...)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// validate reads only; it runs after withDefaults. Each error is a
// *field.Error naming the setting as the Caddyfile spells it. Sessions
// is checked after it, by New.
func (c Config) validate() error {
	var errs []error
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		errs = append(errs, field.Errorf("issuer", "missing; set it to the provider's issuer URL, where its /.well-known/openid-configuration lives"))
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		errs = append(errs, field.Errorf("issuer", "%q is not an absolute http(s) URL; set it to the provider's issuer URL, where its /.well-known/openid-configuration lives", c.Issuer))
	}
	if c.ClientID == "" {
		errs = append(errs, field.Errorf("client_id", "missing; set it to the client id the provider gave this website"))
	}
	if c.ClientSecret == "" {
		errs = append(errs, field.Errorf("client_secret", "missing; set it to the client secret the provider gave this website"))
	}
	if c.RedirectURL != "" {
		if u, err := url.Parse(c.RedirectURL); err != nil || !u.IsAbs() || u.Host == "" {
			errs = append(errs, field.Errorf("redirect_url", "%q is not an absolute URL; set it to the callback URL registered at the provider, e.g. https://www.example.com/auth/callback", c.RedirectURL))
		}
	}
	if c.TokenAuth != "" && c.TokenAuth != "basic" && c.TokenAuth != "post" {
		errs = append(errs, field.Errorf("token_auth", "%q; write basic or post, or leave it out (basic, falling back to post)", c.TokenAuth))
	}
	return errors.Join(errs...)
}
