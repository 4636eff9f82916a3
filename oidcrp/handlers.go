package oidcrp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// apiError is the JSON error body shared with the rest of s360edge.
type apiError struct {
	Error         string `json:"error"`
	Message       string `json:"message"`
	LoginURL      string `json:"login_url,omitempty"`
	ProviderError string `json:"provider_error,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, e apiError) { writeJSON(w, status, e) }

// WriteError answers {"error":code,"message":message}, uncached; for the
// other login methods that share this RP's sessions.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeError(w, status, apiError{Error: code, Message: message})
}

func writeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(discoveryRetry/time.Second)))
	writeError(w, http.StatusServiceUnavailable, apiError{Error: "provider_unavailable", Message: "the identity provider cannot be reached; try again shortly"})
}

func writeSessionCheckUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, apiError{Error: "session_check_unavailable", Message: "the session cannot be checked right now; try again shortly"})
}

// loginState travels in the state cookie from /auth/login to /auth/callback.
type loginState struct {
	State       string `json:"s"`
	Nonce       string `json:"n"`
	Verifier    string `json:"v"`
	ReturnTo    string `json:"r"`
	RedirectURI string `json:"u"`
}

func (rp *RP) serveLogin(w http.ResponseWriter, r *http.Request) {
	p, err := rp.provider(r.Context())
	if err != nil {
		writeUnavailable(w)
		return
	}
	st := loginState{
		State:       rand.Text(),
		Nonce:       rand.Text(),
		Verifier:    oauth2.GenerateVerifier(),
		ReturnTo:    SanitizeReturnTo(r.URL.Query().Get("return_to")),
		RedirectURI: rp.redirectURL(r),
	}
	payload, _ := json.Marshal(st)
	value, err := rp.state.encode(payload, time.Now().Add(stateTTL))
	if err != nil {
		rp.log.Error("sealing login state", zap.Error(err))
		writeError(w, http.StatusInternalServerError, apiError{Error: "internal_error", Message: "could not start the login"})
		return
	}
	// Path=CallbackPath keeps the state cookie off every other request;
	// SameSite=Lax still sends it on the provider's top-level redirect back.
	http.SetCookie(w, &http.Cookie{
		Name: rp.stateCookieName(), Value: value, Path: rp.cfg.CallbackPath,
		MaxAge: int(stateTTL / time.Second), HttpOnly: true, Secure: rp.Secure(r), SameSite: http.SameSiteLaxMode,
	})
	redirect(w, p.oauth.AuthCodeURL(st.State,
		oidc.Nonce(st.Nonce),
		oauth2.S256ChallengeOption(st.Verifier),
		oauth2.SetAuthURLParam("redirect_uri", st.RedirectURI)))
}

func (rp *RP) serveCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var st loginState
	c, err := r.Cookie(rp.stateCookieName())
	if err == nil {
		var payload []byte
		if payload, err = rp.state.decode(c.Value, time.Now()); err == nil {
			err = json.Unmarshal(payload, &st)
		}
	}
	if err != nil || st.State == "" {
		writeError(w, http.StatusBadRequest, apiError{Error: "invalid_state", Message: "no login is in progress in this browser (it expired or cookies are blocked); start the login again"})
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		// The state cookie is kept: it may belong to a login still running
		// in another tab.
		writeError(w, http.StatusBadRequest, apiError{Error: "invalid_state", Message: "the login answer does not belong to the login started in this browser; start the login again"})
		return
	}
	// From here the attempt is over, whatever the outcome.
	http.SetCookie(w, &http.Cookie{Name: rp.stateCookieName(), Path: rp.cfg.CallbackPath, MaxAge: -1, HttpOnly: true, Secure: rp.Secure(r), SameSite: http.SameSiteLaxMode})

	if perr := q.Get("error"); perr != "" {
		rp.log.Info("provider refused login", zap.String("provider_error", perr))
		writeError(w, http.StatusBadRequest, apiError{Error: "provider_error", ProviderError: perr, Message: "the identity provider did not complete the login"})
		return
	}
	code := q.Get("code")
	if code == "" {
		writeError(w, http.StatusBadRequest, apiError{Error: "invalid_request", Message: "the login answer has no authorization code"})
		return
	}
	p, err := rp.provider(r.Context())
	if err != nil {
		writeUnavailable(w)
		return
	}
	ctx, cancel := rp.clientCtx(r.Context())
	defer cancel()
	tok, err := p.oauth.Exchange(ctx, code,
		oauth2.VerifierOption(st.Verifier),
		oauth2.SetAuthURLParam("redirect_uri", st.RedirectURI))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			rp.log.Info("provider rejected authorization code", zap.Int("status", re.Response.StatusCode), zap.String("provider_error", re.ErrorCode))
			writeError(w, http.StatusBadRequest, apiError{Error: "code_rejected", ProviderError: re.ErrorCode, Message: "the identity provider rejected the authorization code (expired or already used); log in again"})
			return
		}
		rp.log.Warn("token exchange failed", zap.Error(redactedRetrieveError(err)))
		writeError(w, http.StatusBadGateway, apiError{Error: "provider_error", Message: "the identity provider did not answer the token exchange properly"})
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		writeError(w, http.StatusBadGateway, apiError{Error: "invalid_id_token", Message: "the identity provider returned no ID token"})
		return
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		err = errors.New("nonce mismatch")
	}
	if err != nil {
		rp.log.Warn("ID token rejected", zap.Error(err))
		writeError(w, http.StatusBadGateway, apiError{Error: "invalid_id_token", Message: "the identity provider's ID token failed verification"})
		return
	}
	s := session{ID: rand.Text(), Exp: time.Now().Add(rp.cfg.SessionTTL).Unix(), RT: tok.RefreshToken}
	if err := rp.setFromIDToken(&s, idt, raw); err != nil {
		writeError(w, http.StatusBadGateway, apiError{Error: "invalid_id_token", Message: "the identity provider's ID token has unusable claims"})
		return
	}
	if err := rp.fillFromUserinfo(ctx, p, tok, &s); err != nil {
		rp.log.Warn("userinfo rejected", zap.Error(err))
		writeError(w, http.StatusBadGateway, apiError{Error: "invalid_userinfo", Message: "the identity provider's UserInfo answer does not match the ID token"})
		return
	}
	if err := rp.setSession(w, r, s); err != nil {
		rp.log.Error("sealing session", zap.Error(err))
		writeError(w, http.StatusInternalServerError, apiError{Error: "internal_error", Message: "could not create the session"})
		return
	}
	rp.log.Debug("login completed")
	redirect(w, SanitizeReturnTo(st.ReturnTo))
}

func (rp *RP) serveLogout(w http.ResponseWriter, r *http.Request) {
	if rp.crossSite(r) {
		rp.log.Info("cross-site logout refused", zap.String("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")))
		writeError(w, http.StatusForbidden, apiError{Error: "cross_site", Message: "logout must be requested from this site's own pages"})
		return
	}
	var s session
	var hadSession bool
	if c, err := r.Cookie(rp.cfg.CookieName); err == nil {
		s, err = rp.readSession(c.Value)
		hadSession = err == nil
	}
	rp.clearSession(w, r)
	if hadSession {
		// Until the cookie's own end: after that it is refused anyway.
		if err := rp.cfg.Revocations.Revoke(s.ID, time.Unix(s.Exp, 0)); err != nil {
			rp.log.Error("revoking the session at logout", zap.Error(err))
			writeError(w, http.StatusServiceUnavailable, apiError{Error: "logout_incomplete", Message: "the session cookie was removed from this browser, but the session could not be revoked; copies of it stay valid until it expires. Try again shortly"})
			return
		}
	}

	target := rp.cfg.PostLogoutRedirect
	// Only a buyer who had a session is sent to the provider: the others
	// have nothing of ours to end there.
	if f := rp.logoutVia[s.Via]; hadSession && s.Via != "" && f != nil {
		back := target
		if !isAbsURL(back) {
			back = rp.Origin(r) + back
		}
		if u := f(r, s.Ext, back); u != "" {
			target = u
		}
	}
	if hadSession && s.Via == "" && !rp.cfg.NoProvider {
		if p, err := rp.provider(r.Context()); err == nil && p.endSession != "" {
			back := target
			if !isAbsURL(back) {
				back = rp.Origin(r) + back
			}
			u, _ := url.Parse(p.endSession) // validated at discovery
			v := u.Query()
			if s.IDT != "" {
				v.Set("id_token_hint", s.IDT)
			}
			v.Set("client_id", rp.cfg.ClientID)
			v.Set("post_logout_redirect_uri", back)
			u.RawQuery = v.Encode()
			target = u.String()
		}
	}
	redirect(w, target)
}

type userinfo struct {
	Subject   string    `json:"sub"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (rp *RP) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	id, err := rp.Identify(w, r)
	switch {
	case id != nil:
		writeJSON(w, http.StatusOK, userinfo{Subject: id.Subject, Email: id.Email, Name: id.Name, ExpiresAt: id.Expiry.UTC()})
	case errors.Is(err, ErrProviderUnavailable):
		writeUnavailable(w)
	case errors.Is(err, ErrRevocationUnavailable):
		writeSessionCheckUnavailable(w)
	default:
		writeError(w, http.StatusUnauthorized, apiError{Error: "unauthenticated", Message: "not logged in", LoginURL: rp.LoginURL("/")})
	}
}

func isAbsURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.IsAbs()
}

// redactedRetrieveError keeps x/oauth2's error readable without the
// provider's raw response body.
func redactedRetrieveError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return errors.New("token endpoint answered " + re.Response.Status + " " + re.ErrorCode)
	}
	return err
}
