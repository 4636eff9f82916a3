package session

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ErrorBody is the JSON error body of all of s360edge: its handler, the
// logins and the admin API.
type ErrorBody struct {
	Error         string `json:"error"`
	Message       string `json:"message"`
	LoginURL      string `json:"login_url,omitempty"`
	ProviderError string `json:"provider_error,omitempty"`
}

// WriteJSON answers v as JSON, uncached: the one writer of s360edge's JSON
// errors (WriteError, ErrorBody) and of the other JSON answers of its
// handlers. A failed write means the client is gone: it aborts the
// handler (http.ErrAbortHandler), as Caddy's reverse_proxy does, rather
// than let Caddy log a 500 and write again on the same response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		panic(http.ErrAbortHandler)
	}
}

// WriteError answers {"error":code,"message":message}, uncached.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, ErrorBody{Error: code, Message: message})
}

// WriteProviderUnavailable answers 503 provider_unavailable, to be tried
// again in 5 s: the identity provider (or its metadata) cannot be had.
func WriteProviderUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	WriteError(w, http.StatusServiceUnavailable, "provider_unavailable", "the identity provider cannot be reached; try again shortly")
}

func writeSessionCheckUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	WriteError(w, http.StatusServiceUnavailable, "session_check_unavailable", "the session cannot be checked right now; try again shortly")
}

// Redirect answers code (302 or 303) to location, uncached, without
// http.Redirect's path cleaning and HTML body.
func Redirect(w http.ResponseWriter, code int, location string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", location)
	w.WriteHeader(code)
}

// AllowMethods reports whether r's method is one of methods, else answers
// 405 with an Allow header.
func AllowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+strings.Join(methods, " or "))
	return false
}

// Handles reports whether path is one of the Manager's endpoints: logout
// and userinfo.
func (m *Manager) Handles(path string) bool {
	return path == m.logoutPath() || path == m.userinfoPath()
}

// ServeHTTP serves the logout and userinfo endpoints.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case m.logoutPath():
		if AllowMethods(w, r, http.MethodGet, http.MethodPost) {
			m.serveLogout(w, r)
		}
	case m.userinfoPath():
		if AllowMethods(w, r, http.MethodGet, http.MethodHead) {
			m.serveUserinfo(w, r)
		}
	default:
		WriteError(w, http.StatusNotFound, "not_found", "no such authentication endpoint")
	}
}

func (m *Manager) serveLogout(w http.ResponseWriter, r *http.Request) {
	if m.crossSite(r) {
		m.log.Info("cross-site logout refused", zap.String("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")))
		WriteError(w, http.StatusForbidden, "cross_site", "logout must be requested from this site's own pages")
		return
	}
	var s Session
	var hadSession bool
	if c, err := r.Cookie(m.cfg.CookieName); err == nil {
		s, err = m.read(c.Value)
		hadSession = err == nil
	}
	m.clear(w, r)
	target := m.cfg.PostLogoutRedirect
	if !hadSession {
		// Nothing of ours to end, here or at a provider.
		Redirect(w, http.StatusFound, target)
		return
	}
	// Until the cookie's own end: after that it is refused anyway.
	if err := m.cfg.Revocations.Revoke(s.ID, time.Unix(s.Exp, 0)); err != nil {
		m.log.Error("revoking the session at logout", zap.Error(err))
		WriteError(w, http.StatusServiceUnavailable, "logout_incomplete", "the session cookie was removed from this browser, but the session could not be revoked; copies of it stay valid until it expires. Try again shortly")
		return
	}
	if f := m.logoutVia[s.Via]; f != nil {
		back := target
		if u, err := url.Parse(back); err != nil || !u.IsAbs() {
			back = Origin(r) + back
		}
		if u := f(r, s, back); u != "" {
			target = u
		}
	}
	Redirect(w, http.StatusFound, target)
}

type userinfo struct {
	Subject   string    `json:"sub"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (m *Manager) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	id, err := m.Identify(w, r)
	switch {
	case id != nil:
		WriteJSON(w, http.StatusOK, userinfo{Subject: id.Subject, Email: id.Email, Name: id.Name, ExpiresAt: id.Expiry.UTC()})
	case errors.Is(err, ErrProviderUnavailable):
		WriteProviderUnavailable(w)
	case errors.Is(err, ErrRevocationUnavailable):
		writeSessionCheckUnavailable(w)
	default:
		WriteJSON(w, http.StatusUnauthorized, ErrorBody{Error: "unauthenticated", Message: "not logged in", LoginURL: m.loginURL("/")})
	}
}
