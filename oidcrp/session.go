package oidcrp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

const (
	// refreshMargin: a session's tokens are refreshed this long before the
	// ID token expires, so requests in flight never carry an expired one.
	refreshMargin = time.Minute
	// recentRefreshTTL: how long a refresh result is reused for the same old
	// refresh token (see recentRefresh).
	recentRefreshTTL = time.Minute
	// refreshFailureTTL: how long a failed refresh is not retried.
	refreshFailureTTL = 5 * time.Second
	// maxClaimLen caps the claims kept in the cookie, so an odd provider
	// cannot make it exceed the browser's limit.
	maxClaimLen = 256
)

// session is the cookie's content. Exp is the hard end (login+SessionTTL);
// TokExp is the ID token's expiry: past it the session needs a refresh.
type session struct {
	// ID names the session in the revocation list; refreshes keep it.
	ID     string `json:"id"`
	Sub    string `json:"s"`
	Email  string `json:"e,omitempty"`
	Name   string `json:"n,omitempty"`
	Exp    int64  `json:"x"`
	TokExp int64  `json:"t"`
	RT     string `json:"r,omitempty"`
	IDT    string `json:"i,omitempty"`
	// Via names the login method when it is not this RP's provider
	// ("saml"); logout then does not send the buyer to the OIDC provider.
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

func (rp *RP) setFromIDToken(s *session, idt *oidc.IDToken, raw string) error {
	var c map[string]any
	if err := idt.Claims(&c); err != nil {
		return fmt.Errorf("reading ID token claims: %w", err)
	}
	// Subjects are never truncated: two long ones could become equal.
	if idt.Subject == "" || len(idt.Subject) > 255 {
		return errors.New("ID token has no usable subject")
	}
	s.Sub = idt.Subject
	s.Email, s.Name = rp.emailAndName(c)
	s.TokExp = idt.Expiry.Unix()
	s.IDT = raw
	return nil
}

// emailAndName reads the configured claims; claims that are not strings
// count as missing.
func (rp *RP) emailAndName(c map[string]any) (email, name string) {
	str := func(k string) string { v, _ := c[k].(string); return truncate(v) }
	email, name = str(rp.cfg.EmailClaim), str(rp.cfg.NameClaim)
	if name == "" && rp.cfg.NameClaim == "name" {
		name = str("preferred_username")
	}
	return email, name
}

// fillFromUserinfo completes the session's email and name from the
// provider's UserInfo endpoint, for providers that put only the subject in
// the ID token. A UserInfo answer about another subject fails the login; an
// unreachable endpoint only leaves the claims empty.
func (rp *RP) fillFromUserinfo(ctx context.Context, p *provider, tok *oauth2.Token, s *session) error {
	if (s.Email != "" && s.Name != "") || tok.AccessToken == "" || p.oidc.UserInfoEndpoint() == "" {
		return nil
	}
	ui, err := p.oidc.UserInfo(oidc.ClientContext(ctx, rp.cfg.HTTPClient), oauth2.StaticTokenSource(tok))
	if err != nil {
		rp.log.Warn("userinfo request failed; the session has no email or name", zap.Error(err))
		return nil
	}
	if ui.Subject != s.Sub {
		return errors.New("the UserInfo answer is about another subject than the ID token")
	}
	var c map[string]any
	if err := ui.Claims(&c); err != nil {
		rp.log.Warn("userinfo answer unreadable; the session has no email or name", zap.Error(err))
		return nil
	}
	email, name := rp.emailAndName(c)
	if s.Email == "" {
		s.Email = email
	}
	if s.Name == "" {
		s.Name = name
	}
	return nil
}

func truncate(s string) string {
	if len(s) <= maxClaimLen {
		return s
	}
	s = s[:maxClaimLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func (s *session) identity() *Identity {
	exp := time.Unix(s.Exp, 0)
	if tok := time.Unix(s.TokExp, 0); s.RT == "" && tok.Before(exp) {
		exp = tok
	}
	return &Identity{
		Subject: s.Sub, Email: s.Email, Name: s.Name, Expiry: exp,
		Claims: map[string]any{"sub": s.Sub, "email": s.Email, "name": s.Name},
	}
}

// setSession seals s into the session cookie. When the cookie would be too
// big for browsers it drops the ID token (logout then goes without
// id_token_hint), then the refresh token (the session then ends when the ID
// token expires).
func (rp *RP) setSession(w http.ResponseWriter, r *http.Request, s session) error {
	if w == nil {
		return nil
	}
	var value string
	for attempt := 0; ; attempt++ {
		payload, _ := json.Marshal(s)
		v, err := rp.session.encode(payload, time.Unix(s.Exp, 0))
		if err != nil {
			return err
		}
		if len(v) <= maxCookieValue {
			value = v
			break
		}
		switch {
		case s.IDT != "":
			rp.log.Info("session cookie too large; dropping the ID token", zap.Int("size", len(v)))
			s.IDT = ""
		case s.RT != "":
			rp.log.Warn("session cookie too large; dropping the refresh token, the session will not be refreshed", zap.Int("size", len(v)))
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
		Name: rp.cfg.CookieName, Value: value, Path: "/",
		MaxAge:   maxAge,
		HttpOnly: true, Secure: rp.Secure(r), SameSite: http.SameSiteLaxMode,
	})
	return nil
}

// Login is a buyer that another login method (SAML) verified.
type Login struct {
	// Via names the method, e.g. "saml".
	Via                  string
	Subject, Email, Name string
	// Until ends the session early (the IdP's session end); zero: only
	// SessionTTL.
	Until time.Time
	// Ext is kept in the session for the method's logout (SAML: NameID and
	// SessionIndex); opaque to the RP.
	Ext string
}

// StartSession seals a session for l, with the same cookie, revocation and
// headers as an OIDC login. It ends at l.Until or after SessionTTL,
// whichever comes first.
func (rp *RP) StartSession(w http.ResponseWriter, r *http.Request, l Login) error {
	// Subjects are never truncated: two long ones could become equal.
	if l.Subject == "" || len(l.Subject) > 255 {
		return errors.New("no usable subject")
	}
	exp := time.Now().Add(rp.cfg.SessionTTL)
	if !l.Until.IsZero() && l.Until.Before(exp) {
		exp = l.Until
	}
	s := session{ID: rand.Text(), Sub: l.Subject, Email: truncate(l.Email), Name: truncate(l.Name), Exp: exp.Unix(), TokExp: exp.Unix(), Via: l.Via, Ext: l.Ext}
	return rp.setSession(w, r, s)
}

// OnLogout sets how the sessions that via started end at their provider:
// f gets the session's Ext and the absolute post-logout URL, and returns
// where to send the browser ("" for back). Call it before serving.
func (rp *RP) OnLogout(via string, f func(r *http.Request, ext, back string) string) {
	rp.logoutVia[via] = f
}

func (rp *RP) clearSession(w http.ResponseWriter, r *http.Request) {
	if w == nil {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: rp.cfg.CookieName, Path: "/", MaxAge: -1, HttpOnly: true, Secure: rp.Secure(r), SameSite: http.SameSiteLaxMode})
}

func (rp *RP) readSession(value string) (session, error) {
	var s session
	payload, err := rp.session.decode(value, time.Now())
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
// token>` when present, else from the session cookie, refreshing its tokens
// shortly before they expire (the new cookie is set on w; w may be nil to
// skip that). It returns nil, nil for an anonymous request, and an error
// (ErrInvalidToken, ErrSessionExpired, ErrInvalidSession for a tampered or
// logged-out cookie, ErrProviderUnavailable, ErrRevocationUnavailable) for
// credentials that cannot be accepted; a bad session cookie is also cleared
// on w. A Bearer token that Config.IgnoreBearer names is no credential.
//
// It waits for the provider at most identifyTimeout: a Bearer token that
// cannot be verified by then, or an expired session whose refresh has not
// answered, is ErrProviderUnavailable (the session cookie is kept, and the
// refresh goes on for the next request); a session whose ID token is still
// valid goes on while its refresh runs.
func (rp *RP) Identify(w http.ResponseWriter, r *http.Request) (*Identity, error) {
	ctx, cancel := context.WithTimeout(r.Context(), identifyTimeout)
	defer cancel()
	if raw, ok := bearerToken(r); ok && (rp.cfg.IgnoreBearer == nil || !rp.cfg.IgnoreBearer(raw)) {
		return rp.identifyBearer(ctx, raw)
	}
	c, err := r.Cookie(rp.cfg.CookieName)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	s, err := rp.readSession(c.Value)
	if err != nil {
		rp.clearSession(w, r)
		return nil, err
	}
	revoked, err := rp.cfg.Revocations.Revoked(s.ID)
	if err != nil {
		// Fail closed: the cookie may be a copy of a logged-out one. It is
		// kept, since it becomes usable again when the list answers.
		rp.log.Error("reading the session revocation list", zap.Error(err))
		return nil, fmt.Errorf("%w: %w", ErrRevocationUnavailable, err)
	}
	if revoked {
		rp.clearSession(w, r)
		return nil, ErrInvalidSession
	}
	now := time.Now()
	if s.RT != "" && now.Add(refreshMargin).Unix() >= s.TokExp {
		ns, err := rp.refresh(ctx, s)
		switch {
		case err == nil:
			s = ns
			if err := rp.setSession(w, r, s); err != nil {
				rp.log.Error("sealing refreshed session", zap.Error(err))
			}
		case errors.Is(err, ErrProviderUnavailable) && now.Unix() >= s.TokExp:
			// The provider did not answer: the session is neither
			// usable nor over.
			return nil, err
		default:
			// Not fatal while the ID token is still valid: the next
			// request tries again.
			rp.log.Warn("session refresh failed", zap.Error(err))
		}
	}
	if now.Unix() >= s.TokExp {
		rp.clearSession(w, r)
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

func (rp *RP) identifyBearer(ctx context.Context, raw string) (*Identity, error) {
	if rp.cfg.NoProvider {
		return nil, fmt.Errorf("%w: no OIDC provider is configured", ErrInvalidToken)
	}
	// What is not a JWT is refused without asking the provider.
	if strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	p, err := rp.providerWithin(ctx, identifyTimeout)
	if err != nil {
		return nil, err
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		if ctx.Err() != nil {
			// The key set did not arrive in time: the token may be good.
			return nil, fmt.Errorf("%w: %w", ErrProviderUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	var s session
	if err := rp.setFromIDToken(&s, idt, raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return &Identity{Subject: s.Sub, Email: s.Email, Name: s.Name, Claims: claims, Expiry: idt.Expiry}, nil
}

// recentRefresh remembers a refresh result by the refresh token it used.
// A page fires several requests with the same cookie; with providers that
// rotate refresh tokens, replaying the old one would fail or even revoke
// the session, so the requests that arrive before the browser has the new
// cookie reuse the result instead. Failures are remembered briefly too, so
// a revoked grant does not send every request to the provider.
type recentRefresh struct {
	s     session
	err   error
	until time.Time
}

func (rp *RP) refresh(ctx context.Context, old session) (session, error) {
	sum := sha256.Sum256([]byte(old.RT))
	key := string(sum[:])
	now := time.Now()

	rp.recentMu.Lock()
	if rr, ok := rp.recent[key]; ok && now.Before(rr.until) {
		rp.recentMu.Unlock()
		return rr.s, rr.err
	}
	rp.recentMu.Unlock()

	// The refresh runs on its own goroutine, detached from this caller, who
	// waits for it only as long as ctx allows: its result is kept in
	// rp.recent for the requests after it.
	detached := context.WithoutCancel(ctx)
	ch := rp.refreshes.DoChan(key, func() (any, error) {
		s, err := rp.doRefresh(detached, old)
		rr := recentRefresh{s: s, err: err, until: now.Add(recentRefreshTTL)}
		if err != nil {
			rr.until = now.Add(refreshFailureTTL)
		}
		rp.recentMu.Lock()
		for k, prev := range rp.recent {
			if !now.Before(prev.until) {
				delete(rp.recent, k)
			}
		}
		rp.recent[key] = rr
		rp.recentMu.Unlock()
		return s, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return old, res.Err
		}
		return res.Val.(session), nil
	case <-ctx.Done():
		return old, fmt.Errorf("%w: the refresh has not answered: %w", ErrProviderUnavailable, ctx.Err())
	}
}

func (rp *RP) doRefresh(ctx context.Context, old session) (session, error) {
	p, err := rp.provider(ctx)
	if err != nil {
		return old, err
	}
	// Detached from the first caller's cancellation: others share the result.
	ctx, cancel := rp.clientCtx(ctx)
	defer cancel()
	tok, err := p.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: old.RT}).Token()
	if err != nil {
		return old, fmt.Errorf("refreshing tokens: %w", redactedRetrieveError(err))
	}
	s := old
	s.RT = tok.RefreshToken // x/oauth2 keeps the old one when none is returned
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		// The refresh proves the grant is still alive; without a new ID token
		// the access token's lifetime is the best bound we have.
		s.TokExp = time.Now().Add(5 * time.Minute).Unix()
		if !tok.Expiry.IsZero() && tok.Expiry.After(time.Now()) && tok.Expiry.Before(time.Now().Add(time.Hour)) {
			s.TokExp = tok.Expiry.Unix()
		}
		return s, nil
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return old, fmt.Errorf("verifying refreshed ID token: %w", err)
	}
	if idt.Subject != old.Sub {
		return old, errors.New("refreshed ID token is for another subject")
	}
	if err := rp.setFromIDToken(&s, idt, raw); err != nil {
		return old, err
	}
	// Claims fetched from UserInfo at login are kept when the refreshed ID
	// token lacks them too.
	if s.Email == "" {
		s.Email = old.Email
	}
	if s.Name == "" {
		s.Name = old.Name
	}
	return s, nil
}
