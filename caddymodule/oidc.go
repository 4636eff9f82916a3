package caddymodule

import (
	"fmt"
	"strings"

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
	prefix := strings.TrimRight(o.PathPrefix, "/")
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
		LoginPath:    prefix + "/login",
		CallbackPath: prefix + "/callback",
		LogoutPath:   prefix + "/logout",
		UserinfoPath: prefix + "/userinfo",
		Logger:       h.logger.Named("oidc"),
	})
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	h.rp = rp
	return nil
}

// protected reports whether path needs a logged-in buyer.
func (h *Handler) protected(path string) bool {
	if h.OIDC == nil {
		return false
	}
	for _, p := range h.OIDC.Protect {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(path, prefix) || p == path {
			return true
		}
	}
	return false
}
