package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/oidcrp"
	"github.com/s360edge/s360edge/session"
)

// provisionOIDC builds the buyer sessions and the relying party that logs
// buyers in. It makes no network call: discovery happens on first use, and
// is retried if the provider is down, so a config load never blocks on the
// identity provider.
func (h *Handler) provisionOIDC() error {
	if h.OIDC == nil {
		return nil
	}
	o := h.OIDC
	replacePlaceholders(&o.Issuer, &o.ClientID, &o.ClientSecret, &o.CookieSecret, &o.RedirectURL)
	var errs []error
	prefix := strings.TrimRight(o.PathPrefix, "/")
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		errs = append(errs, fmt.Errorf("path_prefix: %q does not start with /; write e.g. %s", o.PathPrefix, example("oidc", "path_prefix")))
		prefix = "" // the default; the other settings are still checked
	}
	sessions, serr := h.newSessions("oidc", o.CookieSecret, prefix, o.RedirectURL)
	rp, err := oidcrp.New(oidcrp.Config{
		Issuer:       o.Issuer,
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret,
		Sessions:     sessions,
		RedirectURL:  o.RedirectURL,
		Scopes:       o.Scopes,
		EmailClaim:   o.EmailClaim,
		NameClaim:    o.NameClaim,
		TokenAuth:    o.TokenAuth,
		Logger:       h.logger.Named("oidc"),
	})
	if err != nil && !errors.Is(err, session.ErrNoSessions) { // no sessions: serr says why
		errs = append(errs, err)
	}
	protect, perr := session.NewProtect(o.Protect)
	if err := errors.Join(append(errs, serr, perr)...); err != nil {
		return inBlock("oidc", err)
	}
	h.rp, h.sessions, h.protect = rp, sessions, protect
	return nil
}

// newSessions builds the buyer sessions with the settings of block: the
// oidc block, or the saml block when there is no oidc block. prefix ""
// is the default.
func (h *Handler) newSessions(block, secret, prefix, siteURL string) (*session.Manager, error) {
	return session.New(session.Config{
		CookieSecret: secret,
		Prefix:       prefix,
		SiteURL:      siteURL,
		// The edge is opened after this runs; the list reads it per call.
		Revocations:  storeRevocations{h: h},
		IgnoreBearer: h.localBearer,
		Logger:       h.logger.Named(block),
	})
}

// localBearer tells the local tokens the sidecar issued, which S-360
// clients send back as Bearer on every call: they are no buyer credential,
// so the sessions read such a request by its cookie alone, without asking
// the identity provider.
func (h *Handler) localBearer(token string) bool {
	return h.localToken != nil && h.localToken.issued(token)
}

// protected reports whether r needs a logged-in buyer: one list, the oidc
// and saml blocks' protect.
func (h *Handler) protected(r *http.Request) bool {
	return h.sessions != nil && h.protect.Match(r.URL)
}

// revokedPrefix names the store's meta values of logged-out sessions.
const revokedPrefix = "revoked/"

// storeRevocations keeps the revocation list in the edge's store, so that a
// logout survives restarts and reloads; Badger forgets each entry when the
// session would have expired anyway. In cluster mode the list is the
// cluster's, in Redis, so that a logout on one node ends the session on
// every node.
type storeRevocations struct{ h *Handler }

var errNoStore = errors.New("the cache store is not open")

func (s storeRevocations) store() (*cachestore.Store, error) {
	if s.h.edge == nil {
		return nil, errNoStore
	}
	return s.h.edge.Store(), nil
}

func (s storeRevocations) Revoke(id string, until time.Time) error {
	if cl := s.h.cluster; cl != nil {
		return cl.Revoke(id, until)
	}
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil
	}
	st, err := s.store()
	if err != nil {
		return err
	}
	return st.PutMetaTTL(revokedPrefix+id, nil, ttl)
}

func (s storeRevocations) Revoked(id string) (bool, error) {
	if cl := s.h.cluster; cl != nil {
		return cl.Revoked(id)
	}
	st, err := s.store()
	if err != nil {
		return false, err
	}
	_, err = st.GetMeta(revokedPrefix + id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, cachestore.ErrNotFound):
		return false, nil
	}
	return false, err
}
