// Package samlsp is the SAML 2.0 service provider of s360edge: buyers log in
// at the shop, which is the identity provider ("S-360 as IdP"). A verified
// assertion starts a session of package session, as an OIDC login does
// (the same cookie, revocation and X-S360-* headers). It has no Caddy
// imports.
package samlsp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/crewjam/saml"
	csamlsp "github.com/crewjam/saml/samlsp"
	dsig "github.com/russellhaering/goxmldsig"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/internal/field"
	"github.com/s360edge/s360edge/session"
)

const (
	// maxSkew is the clock difference tolerated between the shop and us.
	maxSkew = 90 * time.Second
	// metadataRetry spaces metadata fetches after a failure.
	metadataRetry = 5 * time.Second
	// fetchTimeout bounds one metadata fetch.
	fetchTimeout = 10 * time.Second
	// maxResponse bounds the POSTed SAMLResponse form.
	maxResponse = 256 << 10
	// maxMetadata bounds the IdP metadata read.
	maxMetadata = 1 << 20
)

func init() {
	// crewjam/saml's default is 180 s; the contract allows at most 90 s.
	saml.MaxClockSkew = maxSkew
}

// Config configures the service provider.
type Config struct {
	// IDPMetadata is the IdP's metadata: an http(s) URL or a file. It is
	// read on first use and retried while it fails.
	IDPMetadata string
	// EntityID names this SP at the IdP. Default:
	// <site><prefix>/saml/metadata, the site being the request's scheme and
	// host, the prefix the sessions'.
	EntityID string
	// Cert and Key are PEM files: the SP's signing certificate and key.
	Cert, Key string
	// UserAttribute, EmailAttribute and NameAttribute name the assertion's
	// attributes (by Name or FriendlyName) behind X-S360-User, -Email and
	// -Name. Defaults: NameID (the subject), email, displayName.
	UserAttribute, EmailAttribute, NameAttribute string
	// Sessions keeps the buyer sessions; required. Its Prefix places the
	// endpoints: <prefix>/saml/metadata, /saml/acs and /saml/slo, and the
	// login (ServeLogin) at its LoginPath.
	Sessions *session.Manager
	// HTTPClient fetches the metadata. Default: 10 s timeout.
	HTTPClient *http.Client
	// Logger never receives assertion content. Default: none.
	Logger *zap.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Replays is this process's record of the assertions accepted, so
	// that each is accepted once. Default: one of this SP's own, which
	// a new SP (a config reload) does not inherit; NewLocalReplays makes
	// one to share.
	Replays saml.AssertionReplayCache
	// Shared, when set, is the record of every node of a cluster: an
	// assertion accepted on one node is refused on the others, and
	// refused everywhere (503) while the record is out of reach.
	// Default: none (one process).
	Shared SharedReplays
}

// SP is the service provider; safe for concurrent use.
type SP struct {
	cfg  Config
	log  *zap.Logger
	key  crypto.Signer
	cert *x509.Certificate
	// sigMethod fits key: the IdP checks the AuthnRequests with it.
	sigMethod string
	prefix    string
	state     *session.Sealer
	replays   saml.AssertionReplayCache // used without Config.Replays

	mu      sync.Mutex
	idp     *saml.EntityDescriptor
	retryAt time.Time
	lastErr error
}

// ErrIDPUnavailable: the IdP metadata could not be read (answer 503).
var ErrIDPUnavailable = errors.New("saml identity provider metadata unavailable")

// New validates cfg and loads the SP's key pair. It does no network I/O.
// With valid settings and no Sessions it returns session.ErrNoSessions.
func New(cfg Config) (*SP, error) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.UserAttribute, "NameID")
	def(&cfg.EmailAttribute, "email")
	def(&cfg.NameAttribute, "displayName")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: fetchTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	prefix := session.DefaultPrefix // for the errors' example without Sessions
	if cfg.Sessions != nil {
		prefix = cfg.Sessions.Prefix()
	}
	key, cert, err := cfg.check(prefix)
	if err != nil {
		return nil, err
	}
	if cfg.Sessions == nil {
		return nil, session.ErrNoSessions
	}
	state, err := cfg.Sessions.Sealer(stateCookieName)
	if err != nil {
		return nil, err
	}
	sigMethod := dsig.RSASHA256SignatureMethod
	if _, ok := key.Public().(*ecdsa.PublicKey); ok {
		sigMethod = dsig.ECDSASHA256SignatureMethod
	}
	sp := &SP{cfg: cfg, log: cfg.Logger, key: key, cert: cert, sigMethod: sigMethod, prefix: prefix, state: state, replays: csamlsp.NewMemoryReplayCache(100_000)}
	cfg.Sessions.OnLogout(via, sp.logoutURL)
	return sp, nil
}

// check validates the settings a person writes, all of them, and loads the
// key pair. Each error is a *field.Error.
func (cfg Config) check(prefix string) (crypto.Signer, *x509.Certificate, error) {
	var errs []error
	if err := checkMetadata(cfg.IDPMetadata); err != nil {
		errs = append(errs, err)
	}
	if cfg.EntityID != "" {
		if u, err := url.Parse(cfg.EntityID); err != nil || !u.IsAbs() || u.Host == "" {
			errs = append(errs, field.Errorf("entity_id", "%q is not an absolute URL; set it to this site's SP metadata URL, e.g. https://www.example.com%s/saml/metadata", cfg.EntityID, prefix))
		}
	}
	var key crypto.Signer
	var cert *x509.Certificate
	if cfg.Cert == "" {
		errs = append(errs, field.Errorf("cert", "missing; the IdP wants signed requests: set it to a PEM certificate file (self-signed is fine)"))
	}
	if cfg.Key == "" {
		errs = append(errs, field.Errorf("key", "missing; the IdP wants signed requests: set it to the PEM file of cert's private key"))
	}
	if cfg.Cert != "" && cfg.Key != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			errs = append(errs, field.Errorf("cert and key", "loading them: %v; set them to the PEM files of one certificate and its private key", err))
		} else {
			cert = pair.Leaf
			if key, _ = pair.PrivateKey.(crypto.Signer); key == nil {
				errs = append(errs, field.Errorf("key", "its key cannot sign; use an RSA or ECDSA key"))
			}
		}
	}
	return key, cert, errors.Join(errs...)
}

// metadataURL is the IdP metadata's URL when src is an http(s) URL; else src
// is a file.
func metadataURL(src string) (*url.URL, bool) {
	u, err := url.Parse(src)
	return u, err == nil && (u.Scheme == "http" || u.Scheme == "https")
}

// checkMetadata refuses IdP metadata that the network could change on its
// way: the metadata holds the certificate that signs the assertions, so who
// swaps it logs in as any buyer. An https URL, a file, or plain http to a
// loopback host are accepted.
func checkMetadata(src string) error {
	const want = "an https:// URL, or a local file (plain http only to 127.0.0.1, ::1 or localhost)"
	u, isURL := metadataURL(src)
	switch {
	case src == "":
		return field.Errorf("idp_metadata", "missing; set it to the shop's IdP metadata: %s", want)
	case !isURL && strings.Contains(src, "://"):
		return field.Errorf("idp_metadata", "%q is neither an http(s) URL nor a file; set it to %s", redacted(src), want)
	case !isURL:
		return nil
	case u.Host == "":
		return field.Errorf("idp_metadata", "%q has no host; set it to %s", u.Redacted(), want)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		https := *u
		https.Scheme = "https"
		return field.Errorf("idp_metadata", "%q is plain http to a host that is not loopback: "+
			"anyone on the network path could swap the IdP certificate and log in as any buyer; "+
			"write idp_metadata %s, or download the metadata to a local file (plain http only to 127.0.0.1, ::1 or localhost)",
			u.Redacted(), https.Redacted())
	}
	return nil
}

// loopback reports whether host is a name or address of this machine's
// loopback interface: 127.0.0.0/8, ::1 or localhost.
func loopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redacted is src without a password, when it parses as a URL.
func redacted(src string) string {
	if u, err := url.Parse(src); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// Paths of the endpoints.
func (s *SP) metadataPath() string { return s.prefix + "/saml/metadata" }
func (s *SP) acsPath() string      { return s.prefix + "/saml/acs" }
func (s *SP) sloPath() string      { return s.prefix + "/saml/slo" }

// Handles reports whether path is one of the SP's own endpoints (login is
// shared with OIDC and routed by the caller to ServeLogin).
func (s *SP) Handles(path string) bool {
	return path == s.metadataPath() || path == s.acsPath() || path == s.sloPath()
}

// metadata returns the IdP's metadata, reading it if needed; after a
// failure the same error is returned until metadataRetry has passed.
func (s *SP) metadata() (*saml.EntityDescriptor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idp != nil {
		return s.idp, nil
	}
	if s.cfg.Now().Before(s.retryAt) {
		return nil, s.lastErr
	}
	idp, err := s.readMetadata()
	if err != nil {
		s.lastErr = fmt.Errorf("%w: %w", ErrIDPUnavailable, err)
		s.retryAt = s.cfg.Now().Add(metadataRetry)
		s.log.Warn("saml idp metadata unavailable; will retry", zap.Duration("retry_in", metadataRetry), zap.Error(err))
		return nil, s.lastErr
	}
	s.idp = idp
	s.log.Info("saml idp metadata loaded", zap.String("idp", idp.EntityID))
	return idp, nil
}

func (s *SP) readMetadata() (*saml.EntityDescriptor, error) {
	var data []byte
	src := s.cfg.IDPMetadata
	if _, isURL := metadataURL(src); isURL {
		// Detached from any request: others wait for this fetch.
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := s.cfg.HTTPClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		// A redirect must not lead where New would have refused to go.
		if resp.Request != nil {
			if err := checkMetadata(resp.Request.URL.String()); err != nil {
				return nil, fmt.Errorf("fetching %s: redirected: %w", src, err)
			}
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching %s: %s", src, resp.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, maxMetadata)); err != nil {
			return nil, err
		}
	} else {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return nil, err
		}
	}
	idp, err := csamlsp.ParseMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("parsing idp metadata: %w", err)
	}
	if len(idp.IDPSSODescriptors) == 0 {
		return nil, errors.New("the metadata describes no identity provider")
	}
	return idp, nil
}

// provider is crewjam's SP for the site r reached. Its URLs follow
// EntityID's site when set, else r's scheme and host.
func (s *SP) provider(r *http.Request, idp *saml.EntityDescriptor) *saml.ServiceProvider {
	site := session.Origin(r)
	entity := s.cfg.EntityID
	if entity != "" {
		u, _ := url.Parse(entity) // validated in New
		site = u.Scheme + "://" + u.Host
	} else {
		entity = site + s.metadataPath()
	}
	abs := func(p string) url.URL { u, _ := url.Parse(site + p); return *u }
	return &saml.ServiceProvider{
		EntityID:                         entity,
		Key:                              s.key,
		Certificate:                      s.cert,
		MetadataURL:                      abs(s.metadataPath()),
		AcsURL:                           abs(s.acsPath()),
		SloURL:                           abs(s.sloPath()),
		LogoutBindings:                   []string{saml.HTTPRedirectBinding},
		IDPMetadata:                      idp,
		SignatureMethod:                  s.sigMethod,
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		ReplayCache:                      s.replayCache(),
		RejectSHA1Signatures:             true,
		Clock:                            dsig.NewFakeClockAt(s.cfg.Now()),
	}
}

// loginState travels in the state cookie from login to the ACS.
type loginState struct {
	RequestID string `json:"i"`
	ReturnTo  string `json:"r"`
}

// providerOr503 is the service provider for r with the IdP's metadata, or
// false after answering 503 when the metadata cannot be had yet.
func (s *SP) providerOr503(w http.ResponseWriter, r *http.Request) (*saml.ServiceProvider, bool) {
	idp, err := s.metadata()
	if err != nil {
		session.WriteProviderUnavailable(w)
		return nil, false
	}
	return s.provider(r, idp), true
}

// stateCookieName is the login state cookie's name.
const stateCookieName = "s360_saml_state"

// ServeLogin sends the buyer to the IdP with a signed AuthnRequest
// (HTTP-Redirect binding); the request's ID is kept in a sealed cookie so
// that only the answer to this login is accepted.
func (s *SP) ServeLogin(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.providerOr503(w, r)
	if !ok {
		return
	}
	loc := sp.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	if loc == "" {
		s.log.Error("the saml idp offers no HTTP-Redirect sign-on endpoint")
		session.WriteError(w, http.StatusBadGateway, "provider_error", "the identity provider offers no usable sign-on endpoint")
		return
	}
	req, err := sp.MakeAuthenticationRequest(loc, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	var to *url.URL
	if err == nil {
		to, err = req.Redirect("", sp)
	}
	var value string
	if err == nil {
		payload, _ := json.Marshal(loginState{RequestID: req.ID, ReturnTo: session.SanitizeReturnTo(r.URL.Query().Get("return_to"))})
		value, err = s.state.Seal(payload, s.cfg.Now().Add(session.LoginTTL))
	}
	if err != nil {
		s.log.Error("starting a saml login", zap.Error(err))
		session.WriteError(w, http.StatusInternalServerError, "internal_error", "could not start the login")
		return
	}
	http.SetCookie(w, s.stateCookie(r, value, int(session.LoginTTL/time.Second)))
	session.Redirect(w, http.StatusFound, to.String())
}

// stateCookie is scoped to the ACS. The IdP posts the answer from its own
// site: over TLS the cookie is SameSite=None so that the post carries it;
// without TLS browsers refuse None, and Lax works when the IdP is same-site.
func (s *SP) stateCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	c := &http.Cookie{Name: stateCookieName, Value: value, Path: s.acsPath(), MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if s.cfg.Sessions.Secure(r) {
		c.Secure, c.SameSite = true, http.SameSiteNoneMode
	}
	return c
}

// ServeHTTP serves the metadata and ACS endpoints.
func (s *SP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case s.metadataPath():
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			session.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		s.serveMetadata(w, r)
	case s.acsPath():
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			session.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST (HTTP-POST binding)")
			return
		}
		s.serveACS(w, r)
	case s.sloPath():
		s.serveSLO(w, r)
	default:
		session.WriteError(w, http.StatusNotFound, "not_found", "no such authentication endpoint")
	}
}

// serveMetadata publishes the SP's metadata for the IdP's set-up; it needs
// no IdP metadata.
func (s *SP) serveMetadata(w http.ResponseWriter, r *http.Request) {
	sp := s.provider(r, nil)
	buf, err := xml.MarshalIndent(sp.Metadata(), "", "  ")
	if err != nil {
		session.WriteError(w, http.StatusInternalServerError, "internal_error", "could not write the metadata")
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	_, _ = w.Write(buf)
}

func (s *SP) serveACS(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxResponse)
	if err := r.ParseForm(); err != nil {
		session.WriteError(w, http.StatusBadRequest, "invalid_request", "the login answer is not a readable form")
		return
	}
	var st loginState
	c, err := r.Cookie(stateCookieName)
	if err == nil {
		var payload []byte
		if payload, err = s.state.Open(c.Value); err == nil {
			err = json.Unmarshal(payload, &st)
		}
	}
	if err != nil || st.RequestID == "" {
		s.log.Info("saml response refused: no login in progress in this browser")
		session.WriteError(w, http.StatusUnauthorized, "invalid_state", "no login is in progress in this browser (it expired, was already completed, or cookies are blocked); start the login again")
		return
	}
	// From here the attempt is over, whatever the outcome.
	http.SetCookie(w, s.stateCookie(r, "", -1))

	raw, err := base64.StdEncoding.DecodeString(r.PostForm.Get("SAMLResponse"))
	if err != nil || len(raw) == 0 {
		s.log.Info("saml response refused: no SAMLResponse")
		session.WriteError(w, http.StatusUnauthorized, "invalid_response", "the login answer carries no SAML response")
		return
	}
	sp, ok := s.providerOr503(w, r)
	if !ok {
		return
	}
	assertion, err := sp.ParseXMLResponse(raw, []string{st.RequestID}, sp.AcsURL)
	if errors.Is(err, ErrReplaysUnavailable) {
		s.log.Warn("saml response refused: the cluster's record of accepted assertions is out of reach (Redis), so a replay on another node cannot be ruled out")
		w.Header().Set("Retry-After", "5")
		session.WriteError(w, http.StatusServiceUnavailable, "login_unavailable", "the login cannot be completed right now; try again shortly")
		return
	}
	if err != nil {
		// crewjam's private error may quote the response; only its class
		// is logged.
		s.log.Info("saml response refused", zap.String("reason", reason(err)))
		session.WriteError(w, http.StatusUnauthorized, "invalid_response", "the identity provider's answer failed verification; log in again")
		return
	}
	user, email, name := s.identity(assertion)
	login := session.Session{Via: via, Sub: user, Email: email, Name: name, Exp: sessionEnd(assertion), Ext: idpSessionOf(assertion)}
	if err := s.cfg.Sessions.Start(w, r, login); err != nil {
		s.log.Info("saml response refused: unusable subject", zap.Error(err))
		session.WriteError(w, http.StatusUnauthorized, "invalid_response", "the identity provider's answer names no usable user")
		return
	}
	s.log.Debug("saml login completed")
	session.Redirect(w, http.StatusSeeOther, session.SanitizeReturnTo(st.ReturnTo))
}

// reasons name the check that refused a response, for the log: crewjam's
// own error text may quote the response.
var reasons = []struct {
	err  error
	name string
}{
	{saml.ErrAssertionReplayed, "replayed"},
	{saml.ErrRequestIDMismatch, "in_response_to"},
	{saml.ErrExpired, "expired"},
	{saml.ErrNotYetValid, "not_yet_valid"},
	{saml.ErrDestinationMismatch, "destination"},
	{saml.ErrAudienceMismatch, "audience"},
	{saml.ErrIssuerMismatch, "issuer"},
	{saml.ErrUntrustedCertificate, "untrusted_certificate"},
	{saml.ErrInvalidSignature, "signature"},
	{saml.ErrMissingElement, "missing_element"},
	{saml.ErrMalformedMessage, "malformed"},
	{saml.ErrUnsupported, "unsupported"},
}

func reason(err error) string {
	for _, c := range reasons {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "invalid"
}

// identity reads the configured attributes of a verified assertion.
func (s *SP) identity(a *saml.Assertion) (user, email, name string) {
	attr := func(n string) string {
		if n == "NameID" {
			if a.Subject != nil && a.Subject.NameID != nil {
				return a.Subject.NameID.Value
			}
			return ""
		}
		for _, st := range a.AttributeStatements {
			for _, at := range st.Attributes {
				if (at.Name == n || at.FriendlyName == n) && len(at.Values) > 0 {
					return at.Values[0].Value
				}
			}
		}
		return ""
	}
	return attr(s.cfg.UserAttribute), attr(s.cfg.EmailAttribute), attr(s.cfg.NameAttribute)
}

// sessionEnd is the IdP's SessionNotOnOrAfter in Unix seconds, if it set
// one, else 0.
func sessionEnd(a *saml.Assertion) int64 {
	for _, st := range a.AuthnStatements {
		if st.SessionNotOnOrAfter != nil {
			return st.SessionNotOnOrAfter.Unix()
		}
	}
	return 0
}

// via names SAML sessions (session.Session.Via).
const via = "saml"

// idpSession is what single logout needs of the login, kept in the session.
type idpSession struct {
	NameID string `json:"n"`
	Format string `json:"f,omitempty"`
	Index  string `json:"i,omitempty"`
}

func idpSessionOf(a *saml.Assertion) string {
	var v idpSession
	if a.Subject != nil && a.Subject.NameID != nil {
		v.NameID, v.Format = a.Subject.NameID.Value, a.Subject.NameID.Format
	}
	for _, st := range a.AuthnStatements {
		if st.SessionIndex != "" {
			v.Index = st.SessionIndex
			break
		}
	}
	if v.NameID == "" {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// logoutURL is the IdP's single logout with a signed LogoutRequest
// (HTTP-Redirect binding) when its metadata offers one, else "" (the
// session ends here only). The session is already revoked here: the IdP's
// answer changes nothing.
func (s *SP) logoutURL(r *http.Request, ss session.Session, _ string) string {
	var v idpSession
	if json.Unmarshal([]byte(ss.Ext), &v) != nil || v.NameID == "" {
		return ""
	}
	idp, err := s.metadata()
	if err != nil {
		return ""
	}
	sp := s.provider(r, idp)
	loc := sp.GetSLOBindingLocation(saml.HTTPRedirectBinding)
	if loc == "" {
		return ""
	}
	var opts []saml.LogoutRequestOption
	if v.Index != "" {
		opts = append(opts, saml.WithSessionIndex(v.Index))
	}
	req, err := sp.MakeLogoutRequest(loc, v.NameID, opts...)
	var u *url.URL
	if err == nil {
		if req.NameID != nil && v.Format != "" {
			req.NameID.Format = v.Format
		}
		u, err = sp.RedirectLogoutRequestURL(req, "")
	}
	if err != nil {
		s.log.Warn("saml single logout request not made; the session ended here only", zap.Error(err))
		return ""
	}
	return u.String()
}

// serveSLO is where the IdP sends the browser back after single logout.
// The session was revoked before the browser left, so the answer is only
// checked and logged. Logout requests the IdP starts are not supported.
func (s *SP) serveSLO(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("SAMLRequest") != "" || r.Method != http.MethodGet {
		session.WriteError(w, http.StatusBadRequest, "unsupported", "only the answer to a logout this site started is accepted here (HTTP-Redirect binding)")
		return
	}
	if idp, err := s.metadata(); err == nil {
		if err := s.provider(r, idp).ValidateLogoutResponseRequest(r); err != nil {
			s.log.Info("saml logout response refused", zap.String("reason", reason(err)))
		}
	}
	session.Redirect(w, http.StatusFound, "/")
}
