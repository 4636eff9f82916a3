package oidcrp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/s360edge/s360edge/session"
)

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
		session.WriteProviderUnavailable(w)
		return
	}
	st := loginState{
		State:       rand.Text(),
		Nonce:       rand.Text(),
		Verifier:    oauth2.GenerateVerifier(),
		ReturnTo:    session.SanitizeReturnTo(r.URL.Query().Get("return_to")),
		RedirectURI: rp.redirectURL(r),
	}
	payload, _ := json.Marshal(st)
	value, err := rp.state.Seal(payload, time.Now().Add(session.LoginTTL))
	if err != nil {
		rp.log.Error("sealing login state", zap.Error(err))
		session.WriteError(w, http.StatusInternalServerError, "internal_error", "could not start the login")
		return
	}
	// Path=CallbackPath keeps the state cookie off every other request;
	// SameSite=Lax still sends it on the provider's top-level redirect back.
	http.SetCookie(w, &http.Cookie{
		Name: rp.stateCookieName(), Value: value, Path: rp.callbackPath(),
		MaxAge: int(session.LoginTTL / time.Second), HttpOnly: true, Secure: rp.sessions.Secure(r), SameSite: http.SameSiteLaxMode,
	})
	session.Redirect(w, http.StatusFound, p.oauth.AuthCodeURL(st.State,
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
		if payload, err = rp.state.Open(c.Value); err == nil {
			err = json.Unmarshal(payload, &st)
		}
	}
	if err != nil || st.State == "" {
		session.WriteError(w, http.StatusBadRequest, "invalid_state", "no login is in progress in this browser (it expired or cookies are blocked); start the login again")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		// The state cookie is kept: it may belong to a login still running
		// in another tab.
		session.WriteError(w, http.StatusBadRequest, "invalid_state", "the login answer does not belong to the login started in this browser; start the login again")
		return
	}
	// From here the attempt is over, whatever the outcome.
	http.SetCookie(w, &http.Cookie{Name: rp.stateCookieName(), Path: rp.callbackPath(), MaxAge: -1, HttpOnly: true, Secure: rp.sessions.Secure(r), SameSite: http.SameSiteLaxMode})

	if perr := q.Get("error"); perr != "" {
		rp.log.Info("provider refused login", zap.String("provider_error", perr))
		session.WriteJSON(w, http.StatusBadRequest, session.ErrorBody{Error: "provider_error", ProviderError: perr, Message: "the identity provider did not complete the login"})
		return
	}
	code := q.Get("code")
	if code == "" {
		session.WriteError(w, http.StatusBadRequest, "invalid_request", "the login answer has no authorization code")
		return
	}
	p, err := rp.provider(r.Context())
	if err != nil {
		session.WriteProviderUnavailable(w)
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
			session.WriteJSON(w, http.StatusBadRequest, session.ErrorBody{Error: "code_rejected", ProviderError: re.ErrorCode, Message: "the identity provider rejected the authorization code (expired or already used); log in again"})
			return
		}
		rp.log.Warn("token exchange failed", zap.Error(redactedRetrieveError(err)))
		session.WriteError(w, http.StatusBadGateway, "provider_error", "the identity provider did not answer the token exchange properly")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		session.WriteError(w, http.StatusBadGateway, "invalid_id_token", "the identity provider returned no ID token")
		return
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		err = errors.New("nonce mismatch")
	}
	if err != nil {
		rp.log.Warn("ID token rejected", zap.Error(err))
		session.WriteError(w, http.StatusBadGateway, "invalid_id_token", "the identity provider's ID token failed verification")
		return
	}
	s := session.Session{RT: tok.RefreshToken}
	if err := rp.setFromIDToken(&s, idt, raw); err != nil {
		session.WriteError(w, http.StatusBadGateway, "invalid_id_token", "the identity provider's ID token has unusable claims")
		return
	}
	if err := rp.fillFromUserinfo(ctx, p, tok, &s); err != nil {
		rp.log.Warn("userinfo rejected", zap.Error(err))
		session.WriteError(w, http.StatusBadGateway, "invalid_userinfo", "the identity provider's UserInfo answer does not match the ID token")
		return
	}
	if err := rp.sessions.Start(w, r, s); err != nil {
		rp.log.Error("sealing session", zap.Error(err))
		session.WriteError(w, http.StatusInternalServerError, "internal_error", "could not create the session")
		return
	}
	rp.log.Debug("login completed")
	session.Redirect(w, http.StatusFound, session.SanitizeReturnTo(st.ReturnTo))
}

// logoutURL is the provider's end_session_endpoint for an OIDC session,
// when discovery found one, else "" (the session ends here only).
func (rp *RP) logoutURL(r *http.Request, s session.Session, back string) string {
	p, err := rp.provider(r.Context())
	if err != nil || p.endSession == "" {
		return ""
	}
	u, _ := url.Parse(p.endSession) // validated at discovery
	v := u.Query()
	if s.IDT != "" {
		v.Set("id_token_hint", s.IDT)
	}
	v.Set("client_id", rp.cfg.ClientID)
	v.Set("post_logout_redirect_uri", back)
	u.RawQuery = v.Encode()
	return u.String()
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
