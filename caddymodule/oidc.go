package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/oidcrp"
)

// provisionOIDC builds the buyer-login relying party. It makes no network
// call: discovery happens on first use, and is retried if the provider is
// down, so a config load never blocks on the identity provider.
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
		prefix = "" // the other settings are still checked
	}
	if prefix == "" {
		prefix = "/auth"
	}
	rp, err := oidcrp.New(oidcrp.Config{
		Issuer:       o.Issuer,
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret,
		CookieSecret: o.CookieSecret,
		RedirectURL:  o.RedirectURL,
		Scopes:       o.Scopes,
		Protect:      o.Protect,
		EmailClaim:   o.EmailClaim,
		NameClaim:    o.NameClaim,
		TokenAuth:    o.TokenAuth,
		LoginPath:    prefix + "/login",
		CallbackPath: prefix + "/callback",
		LogoutPath:   prefix + "/logout",
		UserinfoPath: prefix + "/userinfo",
		// The edge is opened after this runs; the list reads it per call.
		Revocations:  storeRevocations{h: h},
		IgnoreBearer: h.localBearer,
		Logger:       h.logger.Named("oidc"),
	})
	if err := errors.Join(append(errs, err)...); err != nil {
		return inBlock("oidc", err)
	}
	h.rp = rp
	return nil
}

// localBearer tells the local tokens the sidecar issued, which S-360
// clients send back as Bearer on every call: they are no buyer credential,
// so the RP reads such a request by its session cookie alone, without
// asking the identity provider.
func (h *Handler) localBearer(token string) bool {
	return h.localToken != nil && h.localToken.issued(token)
}

// protected reports whether r needs a logged-in buyer.
func (h *Handler) protected(r *http.Request) bool {
	return h.rp != nil && (h.rp.Protected(r) || h.SAML.protects(r))
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
