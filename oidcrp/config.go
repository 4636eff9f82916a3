package oidcrp

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/field"
)

// Config configures the relying party. Only Issuer, ClientID, ClientSecret
// and CookieSecret are required.
type Config struct {
	// Issuer is the provider's issuer URL; discovery is fetched from
	// Issuer + "/.well-known/openid-configuration" on first use.
	Issuer       string
	ClientID     string
	ClientSecret string

	// CookieSecret encrypts and authenticates the session and login-state
	// cookies: base64 of at least 32 random bytes, or a raw string of at least
	// 32 characters. Changing it logs every buyer out.
	CookieSecret string

	// RedirectURL is the absolute callback URL registered at the provider.
	// Default: derived per request from the request's scheme and Host plus
	// CallbackPath (set it explicitly in production so the Host header never
	// chooses it).
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

	// Protect lists the paths that need a logged-in buyer (see Protect);
	// RP.Protected matches them.
	Protect []string

	// Endpoint paths. Defaults: /auth/login, /auth/callback, /auth/logout,
	// /auth/userinfo.
	LoginPath, CallbackPath, LogoutPath, UserinfoPath string

	// CookieName is the session cookie; the login state cookie is
	// CookieName + "_state". Default: s360_session.
	CookieName string

	// SessionTTL caps a session's life, refreshes included. Default: 12h.
	SessionTTL time.Duration

	// PostLogoutRedirect is where logout ends (also sent to the provider as
	// post_logout_redirect_uri, made absolute). Default: "/".
	PostLogoutRedirect string

	// Revocations lists the sessions ended by logout, so that a copy of a
	// logged-out cookie is refused. Default: in memory, in this process only
	// (lost on restart); the edge gives its store.
	Revocations Revocations

	// HTTPClient talks to the provider. Default: a client with a 10s timeout.
	HTTPClient *http.Client

	// Logger receives operational events, never tokens, codes or cookies.
	// Default: no logging.
	Logger *zap.Logger

	// IgnoreBearer tells the Bearer tokens that are not buyer credentials,
	// such as the tokens the sidecar itself hands the website: Identify
	// reads a request that carries one as if it had no Authorization
	// header (its session cookie, if any, decides), without asking the
	// provider. Default: none.
	IgnoreBearer func(token string) bool

	// NoProvider makes the RP keep only the sessions another login method
	// starts (StartSession, for SAML): Issuer, ClientID and ClientSecret are
	// then unused, and login and callback are not served.
	NoProvider bool
}

// Defaults for Config fields left empty.
const (
	DefaultLoginPath    = "/auth/login"
	DefaultCallbackPath = "/auth/callback"
	DefaultLogoutPath   = "/auth/logout"
	DefaultUserinfoPath = "/auth/userinfo"
	DefaultCookieName   = "s360_session"
	DefaultSessionTTL   = 12 * time.Hour
)

// withDefaults returns a copy of c with defaults applied.
func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.LoginPath, DefaultLoginPath)
	def(&c.CallbackPath, DefaultCallbackPath)
	def(&c.LogoutPath, DefaultLogoutPath)
	def(&c.UserinfoPath, DefaultUserinfoPath)
	def(&c.CookieName, DefaultCookieName)
	def(&c.PostLogoutRedirect, "/")
	def(&c.EmailClaim, "email")
	def(&c.NameClaim, "name")
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{"openid", "profile", "email"}
	} else if !slices.Contains(c.Scopes, "openid") {
		c.Scopes = append([]string{"openid"}, c.Scopes...)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Revocations == nil {
		c.Revocations = newMemRevocations()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// validate reads only; it runs after withDefaults. Each error is a
// *field.Error naming the setting as the Caddyfile spells it.
func (c Config) validate() error {
	var errs []error
	if !c.NoProvider {
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
	}
	if _, err := decodeSecret(c.CookieSecret); err != nil {
		errs = append(errs, err)
	}
	if c.RedirectURL != "" {
		if u, err := url.Parse(c.RedirectURL); err != nil || !u.IsAbs() || u.Host == "" {
			errs = append(errs, field.Errorf("redirect_url", "%q is not an absolute URL; set it to the callback URL registered at the provider, e.g. https://www.example.com/auth/callback", c.RedirectURL))
		}
	}
	paths := map[string]string{}
	for _, p := range [][2]string{{"login_path", c.LoginPath}, {"callback_path", c.CallbackPath}, {"logout_path", c.LogoutPath}, {"userinfo_path", c.UserinfoPath}} {
		if !strings.HasPrefix(p[1], "/") {
			errs = append(errs, field.Errorf(p[0], "%q does not start with /", p[1]))
		}
		if other, dup := paths[p[1]]; dup {
			errs = append(errs, field.Errorf(p[0], "%q is also %s; give each endpoint its own path", p[1], other))
		}
		paths[p[1]] = p[0]
	}
	if c.TokenAuth != "" && c.TokenAuth != "basic" && c.TokenAuth != "post" {
		errs = append(errs, field.Errorf("token_auth", "%q; write basic or post, or leave it out (basic, falling back to post)", c.TokenAuth))
	}
	if _, err := NewProtect(c.Protect); err != nil {
		errs = append(errs, err)
	}
	if (&http.Cookie{Name: c.CookieName, Value: "x"}).Valid() != nil {
		errs = append(errs, field.Errorf("cookie_name", "%q is not a valid cookie name", c.CookieName))
	}
	if u, err := url.Parse(c.PostLogoutRedirect); err != nil || (!u.IsAbs() && !strings.HasPrefix(c.PostLogoutRedirect, "/")) {
		errs = append(errs, field.Errorf("post_logout_redirect", "%q is neither a path nor an absolute URL", c.PostLogoutRedirect))
	}
	return errors.Join(errs...)
}
