package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/crewjam/saml"

	"github.com/s360edge/s360edge/cluster"
	"github.com/s360edge/s360edge/oidcrp"
	"github.com/s360edge/s360edge/samlsp"
)

// SAML is buyer login with the shop as SAML 2.0 identity provider (see
// the saml Caddyfile block). IDPMetadata, Cert and Key are required, and
// CookieSecret when there is no oidc block (else the oidc one is used).
type SAML struct {
	// IDPMetadata is the IdP's metadata URL or file; read on first use
	// and retried, so a config load never waits for the IdP.
	IDPMetadata string `json:"idp_metadata,omitempty"`
	// EntityID names this site at the IdP. Default: the request's scheme
	// and host + <path_prefix>/saml/metadata; set it in production.
	EntityID string `json:"entity_id,omitempty"`
	// Cert and Key are PEM files: the certificate and key that sign the
	// AuthnRequests (self-signed is fine).
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// The assertion attributes behind X-S360-User, X-S360-Email and
	// X-S360-Name. Defaults: NameID, email, displayName.
	UserAttribute  string `json:"user_attribute,omitempty"`
	EmailAttribute string `json:"email_attribute,omitempty"`
	NameAttribute  string `json:"name_attribute,omitempty"`
	// Protect: as in oidc; both lists apply.
	Protect []string `json:"protect,omitempty"`
	// CookieSecret encrypts the session cookie when there is no oidc
	// block; with one, oidc's cookie_secret is used.
	CookieSecret string `json:"cookie_secret,omitempty"`

	sp        *samlsp.SP
	protect   oidcrp.Protect
	loginPath string
	replays   bool // holds a use of the process's record (samlReplays)
}

// provisionSAML runs after provisionOIDC: SAML logins share the OIDC
// sessions, or get a session-only RP when there is no oidc block. Its errors
// name the saml block's subdirectives, all of them at once.
func (h *Handler) provisionSAML() error {
	s := h.SAML
	if s == nil {
		return nil
	}
	replacePlaceholders(&s.IDPMetadata, &s.EntityID, &s.Cert, &s.Key, &s.CookieSecret)
	prefix := "/auth"
	if h.OIDC != nil && strings.HasPrefix(strings.TrimRight(h.OIDC.PathPrefix, "/"), "/") { // else oidc's error says so
		prefix = strings.TrimRight(h.OIDC.PathPrefix, "/")
	}
	var errs []error
	protect, err := oidcrp.NewProtect(s.Protect)
	if err != nil {
		errs = append(errs, err)
	}
	// With an oidc block, its sessions (h.rp) are the ones; when that block
	// failed, its errors say so, and the saml settings are still checked.
	if h.OIDC == nil {
		rp, err := oidcrp.New(oidcrp.Config{
			NoProvider:   true,
			CookieSecret: s.CookieSecret,
			LoginPath:    prefix + "/login",
			CallbackPath: prefix + "/callback",
			LogoutPath:   prefix + "/logout",
			UserinfoPath: prefix + "/userinfo",
			Revocations:  storeRevocations{h: h},
			IgnoreBearer: h.localBearer,
			Logger:       h.logger.Named("saml"),
		})
		if err != nil {
			errs = append(errs, err)
		} else {
			h.rp = rp
		}
	}
	record, err := s.holdReplays()
	if err != nil {
		return inBlock("saml", err)
	}
	var shared samlsp.SharedReplays
	if h.Cluster != nil {
		shared = clusterReplays{h}
	}
	sp, err := samlsp.New(samlsp.Config{
		Replays:        record,
		Shared:         shared,
		IDPMetadata:    s.IDPMetadata,
		EntityID:       s.EntityID,
		Cert:           s.Cert,
		Key:            s.Key,
		UserAttribute:  s.UserAttribute,
		EmailAttribute: s.EmailAttribute,
		NameAttribute:  s.NameAttribute,
		Prefix:         prefix,
		Sessions:       h.rp,
		Logger:         h.logger.Named("saml"),
	})
	if err != nil && !errors.Is(err, samlsp.ErrNoSessions) { // no sessions: errs or oidc's errors say why
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.release() // a config that fails holds no use of the record
		return inBlock("saml", err)
	}
	s.sp, s.protect, s.loginPath = sp, protect, prefix+"/login"
	return nil
}

// serveSAML answers the SAML endpoints and the logins that choose SAML
// (login?provider=saml, or any login without an oidc block), and reports
// whether it answered.
func (h *Handler) serveSAML(w http.ResponseWriter, r *http.Request) bool {
	s := h.SAML
	if s == nil || s.sp == nil {
		return false
	}
	if s.sp.Handles(r.URL.Path) {
		s.sp.ServeHTTP(w, r)
		return true
	}
	if r.URL.Path != s.loginPath {
		return false
	}
	switch p := r.URL.Query().Get("provider"); {
	case p == "saml":
	case h.OIDC != nil && (p == "" || p == "oidc"):
		return false
	case p != "":
		oidcrp.WriteError(w, http.StatusBadRequest, "unknown_provider", "provider must be saml or oidc (when configured)")
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		oidcrp.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return true
	}
	s.sp.ServeLogin(w, r)
	return true
}

// protects reports whether the saml block protects r's path.
func (s *SAML) protects(r *http.Request) bool {
	return s != nil && s.protect.Match(r.URL)
}

// samlReplays holds the process's record of the SAML assertions accepted,
// under replaysKey: a reload's SP gets the record of the SP it replaces
// (Caddy provisions the new config before it cleans up the old), so that
// a reload opens no window for a replay.
var samlReplays = caddy.NewUsagePool()

const replaysKey = "saml assertions"

// pooledReplays adapts the record to caddy.Destructor; it holds memory
// only.
type pooledReplays struct{ saml.AssertionReplayCache }

func (pooledReplays) Destruct() error { return nil }

func (s *SAML) holdReplays() (saml.AssertionReplayCache, error) {
	v, _, err := samlReplays.LoadOrNew(replaysKey, func() (caddy.Destructor, error) {
		return pooledReplays{samlsp.NewLocalReplays()}, nil
	})
	if err != nil {
		return nil, err
	}
	s.replays = true
	return v.(pooledReplays).AssertionReplayCache, nil
}

// release gives back the use of the record; Cleanup calls it, also after
// a failed Provision.
func (s *SAML) release() {
	if s != nil && s.replays {
		s.replays = false
		_, _ = samlReplays.Delete(replaysKey)
	}
}

// clusterReplays is the cluster's record of the accepted assertions, in
// Redis (cluster.ConsumeAssertion): an assertion accepted on one node is
// refused on the others. Its errors refuse the assertion (fail closed),
// as a session is refused while the revocations cannot be read.
type clusterReplays struct{ h *Handler }

var errNoCluster = errors.New("the cluster is not open")

func (c clusterReplays) ConsumeAssertion(id string, until time.Time) (bool, error) {
	cl := c.h.cluster
	if cl == nil {
		return false, errNoCluster
	}
	err := cl.ConsumeAssertion(id, until)
	if errors.Is(err, cluster.ErrReplayed) {
		return true, nil
	}
	return false, err
}
