package session

import (
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Require returns the buyer making r, or answers the request itself and
// returns false: a browser navigation is sent to the login page (and back
// here afterwards), an API request gets 401 JSON with a login_url, a bad
// Bearer token gets 401 invalid_token, and an unreachable provider 503.
func (m *Manager) Require(w http.ResponseWriter, r *http.Request) (*Identity, bool) {
	id, err := m.Identify(w, r)
	if id != nil {
		return id, true
	}
	loginURL := m.loginURL(returnTarget(r))
	switch {
	case errors.Is(err, ErrProviderUnavailable):
		WriteProviderUnavailable(w)
	case errors.Is(err, ErrRevocationUnavailable):
		writeSessionCheckUnavailable(w)
	case errors.Is(err, ErrInvalidToken):
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		WriteError(w, http.StatusUnauthorized, "invalid_token", "the bearer token is invalid or expired")
	case isNavigation(r):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// A form post: the browser comes back with a GET.
			w.Header().Set("Location", loginURL)
			w.WriteHeader(http.StatusSeeOther)
			break
		}
		Redirect(w, http.StatusFound, loginURL)
	default:
		msg := "log in to continue"
		if errors.Is(err, ErrSessionExpired) {
			msg = "the session has expired; log in again"
		}
		WriteJSON(w, http.StatusUnauthorized, ErrorBody{Error: "login_required", Message: msg, LoginURL: loginURL})
	}
	return nil, false
}

// returnTarget is where the buyer comes back to after logging in: the page
// itself for a GET, else the same-site page that made the request (an API
// path that takes POST is no place to land), else "/".
func returnTarget(r *http.Request) string {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.RequestURI()
	}
	if ref, err := url.Parse(r.Referer()); err == nil && ref.Host == r.Host {
		return SanitizeReturnTo(ref.RequestURI())
	}
	return "/"
}

// isNavigation tells a browser loading a page (which can follow a redirect
// to the provider) from a script or API client (which cannot usefully).
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		return false
	}
	if r.Header.Get("X-Requested-With") != "" {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" && mode != "navigate" {
		return false
	}
	return prefersHTML(r.Header.Get("Accept"))
}

// prefersHTML: the Accept header rates text/html above zero and at least as
// high as JSON. "*/*" alone is not a preference for HTML.
func prefersHTML(accept string) bool {
	var html, jsonQ float64
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			html = max(html, q)
		case "application/json":
			jsonQ = max(jsonQ, q)
		}
	}
	return html > 0 && html >= jsonQ
}

// identityHeaderPrefix marks the headers the website may trust.
const identityHeaderPrefix = "x-s360-"

// SetIdentityHeaders deletes every X-S360-* header of h, then sets
// X-S360-User, X-S360-Email and X-S360-Name from id (when not nil). Call it
// on every request forwarded to the website, anonymous ones included, so
// that a client can never forge them.
func SetIdentityHeaders(h http.Header, id *Identity) {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), identityHeaderPrefix) {
			delete(h, k)
		}
	}
	if id == nil {
		return
	}
	set := func(k, v string) {
		if v = headerSafe(v); v != "" {
			h.Set(k, v)
		}
	}
	set("X-S360-User", id.Subject)
	set("X-S360-Email", id.Email)
	set("X-S360-Name", id.Name)
}

// headerSafe drops control characters, which would end the header (CR, LF)
// or make the proxy refuse the request. Other UTF-8 passes through as is.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
}

// SanitizeReturnTo returns s if it is a path on this site, else "/". It
// refuses scheme-relative ("//host"), backslash ("/\host", which browsers
// read as "//") and control characters (browsers drop tabs and newlines,
// so "/\t/host" would become "//host").
func SanitizeReturnTo(s string) string {
	if s == "" || len(s) > 2048 || s[0] != '/' || strings.ContainsAny(s, "\\") {
		return "/"
	}
	if len(s) > 1 && s[1] == '/' {
		return "/"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return s
}
