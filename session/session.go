// Package session keeps the buyer sessions of s360edge, whichever login
// started them (OIDC in package oidcrp, SAML in package samlsp): the sealed
// session cookie and its revocation at logout, the paths that need a login
// (Protect), the identity headers the website gets, the page a buyer comes
// back to after login, and the JSON errors all of these answer with. It
// serves the logout and userinfo endpoints; each login method serves its
// own. It has no Caddy imports; caddymodule wires it in.
package session

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/field"
)

// DefaultPrefix is the endpoints' default path prefix: <prefix>/login,
// /logout and /userinfo, and the login methods' own endpoints below it.
const DefaultPrefix = "/auth"

// Defaults for Config fields left empty.
const (
	DefaultCookieName = "s360_session"
	DefaultSessionTTL = 12 * time.Hour
)

// LoginTTL is how long a buyer may stay at the identity provider during
// a login (OIDC or SAML): the life of the login's state cookie.
const LoginTTL = 10 * time.Minute

const (
	// refreshMargin: a session's tokens are refreshed this long before
	// TokExp, so requests in flight never carry an expired ID token.
	refreshMargin = time.Minute
	// maxClaimLen caps the claims kept in the cookie, so an odd provider
	// cannot make it exceed the browser's limit.
	maxClaimLen = 256
)

// Config configures the sessions. Only CookieSecret is required.
type Config struct {
	// CookieSecret encrypts and authenticates the session cookie and the
	// login methods' state cookies (Sealer): base64 of at least 32 random
	// bytes, or a raw string of at least 32 characters. Changing it logs
	// every buyer out.
	CookieSecret string

	// Prefix is the endpoints' path prefix: <Prefix>/logout and
	// <Prefix>/userinfo are served here, <Prefix>/login (LoginPath) by the
	// login method, and each method's own endpoints below Prefix.
	// Default: DefaultPrefix.
	Prefix string

	// SiteURL is an absolute URL of this site as buyers reach it (OIDC's
	// redirect URL): an https one makes the cookies Secure, and its host
	// counts as this site's when logout checks where a request comes
	// from. It is not checked here. Default: none (each request's TLS or
	// X-Forwarded-Proto, and its Host, decide).
	SiteURL string

	// CookieName is the session cookie. Default: s360_session.
	CookieName string

	// SessionTTL caps a session's life, refreshes included. Default: 12h.
	SessionTTL time.Duration

	// PostLogoutRedirect is where logout ends (made absolute for the
	// login method's own logout). Default: "/".
	PostLogoutRedirect string

	// Revocations lists the sessions ended by logout, so that a copy of a
	// logged-out cookie is refused. Default: in memory, in this process
	// only (lost on restart); the edge gives its store.
	Revocations Revocations

	// IgnoreBearer tells the Bearer tokens that are not buyer credentials,
	// such as the tokens the sidecar itself hands the website: Identify
	// reads a request that carries one as if it had no Authorization
	// header (its session cookie, if any, decides), without asking the
	// provider. Default: none.
	IgnoreBearer func(token string) bool

	// Logger receives operational events, never tokens or cookies.
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
	def(&c.Prefix, DefaultPrefix)
	def(&c.CookieName, DefaultCookieName)
	def(&c.PostLogoutRedirect, "/")
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
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
	if _, err := decodeSecret(c.CookieSecret); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(c.Prefix, "/") {
		errs = append(errs, field.Errorf("path_prefix", "%q does not start with /", c.Prefix))
	}
	if (&http.Cookie{Name: c.CookieName, Value: "x"}).Valid() != nil {
		errs = append(errs, field.Errorf("cookie_name", "%q is not a valid cookie name", c.CookieName))
	}
	if u, err := url.Parse(c.PostLogoutRedirect); err != nil || (!u.IsAbs() && !strings.HasPrefix(c.PostLogoutRedirect, "/")) {
		errs = append(errs, field.Errorf("post_logout_redirect", "%q is neither a path nor an absolute URL", c.PostLogoutRedirect))
	}
	return errors.Join(errs...)
}

// Errors returned by Identify, to tell the caller which answer fits.
var (
	// ErrProviderUnavailable: the identity provider could not be reached
	// (answer 503); the login method retries later.
	ErrProviderUnavailable = errors.New("oidc provider unavailable")
	// ErrInvalidToken: an Authorization: Bearer token failed verification.
	ErrInvalidToken = errors.New("invalid bearer token")
	// ErrSessionExpired: the session cookie's life or its tokens ran out.
	ErrSessionExpired = errors.New("session expired")
	// ErrInvalidSession: the session cookie was tampered with, sealed with
	// another secret, logged out, or garbage.
	ErrInvalidSession = errors.New("invalid session cookie")
)

// ErrNoSessions: a login method's Config.Sessions is nil. The login
// methods return it only when the settings a person writes are valid, so
// that a caller whose sessions could not be built still gets those
// settings' errors.
var ErrNoSessions = errors.New("Config.Sessions is required")

// Session is the session cookie's content. Exp is the hard end
// (login + SessionTTL at most); TokExp is when the session needs a
// refresh (an OIDC session's ID token expiry; else Exp). Times are Unix
// seconds.
type Session struct {
	// ID names the session in the revocation list; refreshes keep it.
	ID     string `json:"id"`
	Sub    string `json:"s"`
	Email  string `json:"e,omitempty"`
	Name   string `json:"n,omitempty"`
	Exp    int64  `json:"x"`
	TokExp int64  `json:"t"`
	// RT and IDT are an OIDC session's refresh and ID tokens.
	RT  string `json:"r,omitempty"`
	IDT string `json:"i,omitempty"`
	// Via names the login method when it is not OIDC ("saml"); logout
	// calls the function OnLogout set for it.
	Via string `json:"v,omitempty"`
	// Ext is the login method's own data, given back at logout.
	Ext string `json:"xt,omitempty"`
}

// Identity is a verified buyer.
type Identity struct {
	Subject string
	Email   string
	Name    string
	// Claims are all the ID token's claims for a Bearer token, and only
	// sub, email and name for a cookie session.
	Claims map[string]any
	// Expiry is when this identity stops being valid without a refresh.
	Expiry time.Time
}

func (s *Session) identity() *Identity {
	exp := time.Unix(s.Exp, 0)
	if tok := time.Unix(s.TokExp, 0); s.RT == "" && tok.Before(exp) {
		exp = tok
	}
	return &Identity{
		Subject: s.Sub, Email: s.Email, Name: s.Name, Expiry: exp,
		Claims: map[string]any{"sub": s.Sub, "email": s.Email, "name": s.Name},
	}
}

// Truncate cuts a claim kept in the session (email, name) to 256 bytes,
// on a UTF-8 boundary.
func Truncate(s string) string {
	if len(s) <= maxClaimLen {
		return s
	}
	s = s[:maxClaimLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Provider is the OpenID Connect login's part in Identify (oidcrp.RP): it
// verifies Bearer tokens and refreshes the tokens of the sessions it
// started. Each call bounds how long it waits for the provider.
type Provider interface {
	// Bearer returns the buyer an `Authorization: Bearer` ID token names,
	// or ErrInvalidToken, or ErrProviderUnavailable.
	Bearer(ctx context.Context, token string) (*Identity, error)
	// Refresh returns s with fresh tokens, or an error
	// (ErrProviderUnavailable when the provider has not answered).
	Refresh(ctx context.Context, s Session) (Session, error)
}

// Manager keeps the sessions. It is safe for concurrent use once set up
// (UseProvider, OnLogout), and starts no goroutines.
type Manager struct {
	cfg       Config
	log       *zap.Logger
	secret    []byte
	cookie    *cookieCodec
	provider  Provider
	logoutVia map[string]func(r *http.Request, s Session, back string) string
}

// New validates cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	secret, _ := decodeSecret(cfg.CookieSecret) // validated above
	c, err := newCookieCodec(secret, cfg.CookieName)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: cfg.Logger, secret: secret, cookie: c, logoutVia: map[string]func(*http.Request, Session, string) string{}}, nil
}

// Prefix is the endpoints' path prefix (Config.Prefix).
func (m *Manager) Prefix() string { return m.cfg.Prefix }

// LoginPath is where a login starts: <Prefix>/login, served by the login
// method.
func (m *Manager) LoginPath() string { return m.cfg.Prefix + "/login" }

// CookieName is the session cookie's name.
func (m *Manager) CookieName() string { return m.cfg.CookieName }

func (m *Manager) logoutPath() string   { return m.cfg.Prefix + "/logout" }
func (m *Manager) userinfoPath() string { return m.cfg.Prefix + "/userinfo" }

// UseProvider makes p verify Bearer tokens and refresh the sessions. Call
// it before serving; without it, a Bearer token (that IgnoreBearer does
// not name) is ErrInvalidToken.
func (m *Manager) UseProvider(p Provider) { m.provider = p }

// OnLogout sets how the sessions that via started end at their provider
// (via "" is OIDC): f gets the session and the absolute post-logout URL,
// and returns where to send the browser ("" for back). The session is
// already revoked then. Call it before serving.
func (m *Manager) OnLogout(via string, f func(r *http.Request, s Session, back string) string) {
	m.logoutVia[via] = f
}

// Start seals a new session for s and sets its cookie on w. s names the
// buyer (Sub, Email, Name), the login method (Via, Ext) and, for OIDC,
// its tokens (TokExp, RT, IDT); Start gives it its ID, and ends it after
// SessionTTL or at s.Exp (when not 0), whichever comes first. TokExp
// defaults to that end.
func (m *Manager) Start(w http.ResponseWriter, r *http.Request, s Session) error {
	// Subjects are never truncated: two long ones could become equal.
	if s.Sub == "" || len(s.Sub) > 255 {
		return errors.New("no usable subject")
	}
	exp := time.Now().Add(m.cfg.SessionTTL).Unix()
	if s.Exp != 0 && s.Exp < exp {
		exp = s.Exp
	}
	s.ID, s.Exp, s.Email, s.Name = rand.Text(), exp, Truncate(s.Email), Truncate(s.Name)
	if s.TokExp == 0 {
		s.TokExp = exp
	}
	return m.set(w, r, s)
}

// set seals s into the session cookie. When the cookie would be too big
// for browsers it drops the ID token (logout then goes without
// id_token_hint), then the refresh token (the session then ends when the
// ID token expires).
func (m *Manager) set(w http.ResponseWriter, r *http.Request, s Session) error {
	if w == nil {
		return nil
	}
	var value string
	for {
		payload, _ := json.Marshal(s)
		v, err := m.cookie.encode(payload, time.Unix(s.Exp, 0))
		if err != nil {
			return err
		}
		if len(v) <= maxCookieValue {
			value = v
			break
		}
		switch {
		case s.IDT != "":
			m.log.Info("session cookie too large; dropping the ID token", zap.Int("size", len(v)))
			s.IDT = ""
		case s.RT != "":
			m.log.Warn("session cookie too large; dropping the refresh token, the session will not be refreshed", zap.Int("size", len(v)))
			s.RT = ""
		default:
			return fmt.Errorf("session cookie is %d bytes even without tokens", len(v))
		}
	}
	maxAge := int(time.Unix(s.Exp, 0).Sub(time.Now()).Seconds())
	if maxAge <= 0 {
		maxAge = -1
	}
	http.SetCookie(w, &http.Cookie{
		Name: m.cfg.CookieName, Value: value, Path: "/",
		MaxAge:   maxAge,
		HttpOnly: true, Secure: m.Secure(r), SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func (m *Manager) clear(w http.ResponseWriter, r *http.Request) {
	if w == nil {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: m.cfg.CookieName, Path: "/", MaxAge: -1, HttpOnly: true, Secure: m.Secure(r), SameSite: http.SameSiteLaxMode})
}

func (m *Manager) read(value string) (Session, error) {
	var s Session
	payload, err := m.cookie.decode(value, time.Now())
	if errors.Is(err, errCookieExpired) {
		return s, ErrSessionExpired
	}
	// A session without an ID (sealed before sessions had one) could not
	// be revoked, so it is not accepted.
	if err != nil || json.Unmarshal(payload, &s) != nil || s.Sub == "" || s.ID == "" {
		return s, ErrInvalidSession
	}
	return s, nil
}

// Identify returns the buyer making r: from `Authorization: Bearer <ID
// token>` when present (the Provider verifies it), else from the session
// cookie, whose tokens the Provider refreshes shortly before they expire
// (the new cookie is set on w; w may be nil to skip that). It returns nil,
// nil for an anonymous request, and an error (ErrInvalidToken,
// ErrSessionExpired, ErrInvalidSession for a tampered or logged-out
// cookie, ErrProviderUnavailable, ErrRevocationUnavailable) for
// credentials that cannot be accepted; a bad session cookie is also
// cleared on w. A Bearer token that Config.IgnoreBearer names is no
// credential.
//
// An expired session whose refresh has not answered within the
// Provider's bound is ErrProviderUnavailable (the session cookie is kept,
// and the refresh goes on for the next request); a session whose ID token
// is still valid goes on while its refresh runs.
func (m *Manager) Identify(w http.ResponseWriter, r *http.Request) (*Identity, error) {
	if raw, ok := bearerToken(r); ok && (m.cfg.IgnoreBearer == nil || !m.cfg.IgnoreBearer(raw)) {
		if m.provider == nil {
			return nil, fmt.Errorf("%w: no OIDC provider is configured", ErrInvalidToken)
		}
		return m.provider.Bearer(r.Context(), raw)
	}
	c, err := r.Cookie(m.cfg.CookieName)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	s, err := m.read(c.Value)
	if err != nil {
		m.clear(w, r)
		return nil, err
	}
	revoked, err := m.cfg.Revocations.Revoked(s.ID)
	if err != nil {
		// Fail closed: the cookie may be a copy of a logged-out one. It is
		// kept, since it becomes usable again when the list answers.
		m.log.Error("reading the session revocation list", zap.Error(err))
		return nil, fmt.Errorf("%w: %w", ErrRevocationUnavailable, err)
	}
	if revoked {
		m.clear(w, r)
		return nil, ErrInvalidSession
	}
	now := time.Now()
	if m.provider != nil && s.RT != "" && now.Add(refreshMargin).Unix() >= s.TokExp {
		ns, err := m.provider.Refresh(r.Context(), s)
		switch {
		case err == nil:
			s = ns
			if err := m.set(w, r, s); err != nil {
				m.log.Error("sealing refreshed session", zap.Error(err))
			}
		case errors.Is(err, ErrProviderUnavailable) && now.Unix() >= s.TokExp:
			// The provider did not answer: the session is neither
			// usable nor over.
			return nil, err
		default:
			// Not fatal while the ID token is still valid: the next
			// request tries again.
			m.log.Warn("session refresh failed", zap.Error(err))
		}
	}
	if now.Unix() >= s.TokExp {
		m.clear(w, r)
		return nil, ErrSessionExpired
	}
	return s.identity(), nil
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// loginURL is the path that starts a login and comes back to returnTo
// (sanitised to a same-site path).
func (m *Manager) loginURL(returnTo string) string {
	return m.LoginPath() + "?return_to=" + url.QueryEscape(SanitizeReturnTo(returnTo))
}

// Secure says whether cookies set on r's answer must be Secure: the buyer
// reached us over TLS, directly or through a proxy that says so.
func (m *Manager) Secure(r *http.Request) bool {
	if r.TLS != nil || strings.HasPrefix(m.cfg.SiteURL, "https://") {
		return true
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// Origin is scheme://host of the request, as the buyer sees it.
func Origin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(proto), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
