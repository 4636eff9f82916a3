package oidcrp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/s360edge/s360edge/session"
)

const (
	// recentRefreshTTL: how long a refresh result is reused for the same old
	// refresh token (see recentRefresh).
	recentRefreshTTL = time.Minute
	// refreshFailureTTL: how long a failed refresh is not retried.
	refreshFailureTTL = 5 * time.Second
)

func (rp *RP) setFromIDToken(s *session.Session, idt *oidc.IDToken, raw string) error {
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
	str := func(k string) string { v, _ := c[k].(string); return session.Truncate(v) }
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
func (rp *RP) fillFromUserinfo(ctx context.Context, p *provider, tok *oauth2.Token, s *session.Session) error {
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

// Bearer returns the buyer an `Authorization: Bearer <ID token>` names; it
// waits for the provider at most identifyTimeout: a token that cannot be
// verified by then is session.ErrProviderUnavailable.
func (rp *RP) Bearer(ctx context.Context, raw string) (*session.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, identifyTimeout)
	defer cancel()
	// What is not a JWT is refused without asking the provider.
	if strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a JWT", session.ErrInvalidToken)
	}
	p, err := rp.providerWithin(ctx, identifyTimeout)
	if err != nil {
		return nil, err
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		if ctx.Err() != nil {
			// The key set did not arrive in time: the token may be good.
			return nil, fmt.Errorf("%w: %w", session.ErrProviderUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %w", session.ErrInvalidToken, err)
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: %w", session.ErrInvalidToken, err)
	}
	var s session.Session
	if err := rp.setFromIDToken(&s, idt, raw); err != nil {
		return nil, fmt.Errorf("%w: %w", session.ErrInvalidToken, err)
	}
	return &session.Identity{Subject: s.Sub, Email: s.Email, Name: s.Name, Claims: claims, Expiry: idt.Expiry}, nil
}

// recentRefresh remembers a refresh result by the refresh token it used.
// A page fires several requests with the same cookie; with providers that
// rotate refresh tokens, replaying the old one would fail or even revoke
// the session, so the requests that arrive before the browser has the new
// cookie reuse the result instead. Failures are remembered briefly too, so
// a revoked grant does not send every request to the provider.
type recentRefresh struct {
	s     session.Session
	err   error
	until time.Time
}

// Refresh returns old with fresh tokens. It waits for the provider at most
// identifyTimeout (then session.ErrProviderUnavailable); the refresh goes
// on, and its result serves the requests after it.
func (rp *RP) Refresh(ctx context.Context, old session.Session) (session.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, identifyTimeout)
	defer cancel()
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
		return res.Val.(session.Session), nil
	case <-ctx.Done():
		return old, fmt.Errorf("%w: the refresh has not answered: %w", session.ErrProviderUnavailable, ctx.Err())
	}
}

func (rp *RP) doRefresh(ctx context.Context, old session.Session) (session.Session, error) {
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
