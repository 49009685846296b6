package oidc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"golang.org/x/oauth2"
)

// Run refreshes every linked identity each refresh interval until Close.
func (m *Manager) Run() {
	m.wg.Go(func() {
		t := time.NewTicker(m.interval)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				if err := m.RefreshAll(m.ctx); err != nil && m.ctx.Err() == nil {
					m.log.Warn("oidc refresh", "err", err)
				}
			}
		}
	})
}

// RefreshStats counts the outcomes of one RefreshAll pass.
type RefreshStats struct {
	Refreshed, Deprovisioned, Unreachable int
}

// RefreshAll refreshes, once, every linked identity that has a refresh
// token and is still valid. A provider that refuses the refresh token
// (invalid_grant: the user was deactivated, deleted or signed out
// everywhere; or the provider was removed from the configuration) ends
// the user's sessions. A provider that cannot be reached changes
// nothing: sessions keep their other limits (fail static).
func (m *Manager) RefreshAll(ctx context.Context) error {
	_, err := m.refreshAll(ctx)
	return err
}

func (m *Manager) refreshAll(ctx context.Context) (RefreshStats, error) {
	var st RefreshStats
	ids, err := m.st.ListIdentities(ctx)
	if err != nil {
		return st, err
	}
	// Only users with a session need checking: anyone else is checked by
	// the IdP at their next sign-in. This keeps the load on the IdP
	// proportional to the people signed in, not to everyone ever linked.
	active, err := m.st.ListSessions(ctx, store.SessionFilter{ActiveOnly: true, Limit: math.MaxInt32})
	if err != nil {
		return st, err
	}
	signedIn := map[string]bool{}
	for _, s := range active {
		signedIn[s.User] = true
	}
	var (
		mu      sync.Mutex
		changed bool
		errs    []error
		wg      sync.WaitGroup
		sem     = make(chan struct{}, refreshWorkers)
	)
	for _, id := range ids {
		if id.RefreshToken == "" || !id.InvalidAt.IsZero() || !signedIn[id.User] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := m.refreshOne(ctx, id)
			if errors.Is(err, errRefused) {
				err = m.deprovision(ctx, id, err)
				mu.Lock()
				st.Deprovisioned++
				changed = true
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				st.Unreachable++
				errs = append(errs, fmt.Errorf("%s/%s: %w", id.IdP, id.Subject, err))
				return
			}
			st.Refreshed++
			changed = changed || c
		})
	}
	wg.Wait()
	if changed {
		m.changed()
	}
	return st, errors.Join(errs...)
}

// refreshWorkers bounds concurrent refreshes (requests to the IdPs).
const refreshWorkers = 8

var errRefused = errors.New("the identity provider no longer accepts this user")

// refreshOne refreshes one identity and stores the outcome; changed says
// whether its groups changed.
func (m *Manager) refreshOne(ctx context.Context, id store.Identity) (changed bool, err error) {
	p, ok := m.providers[id.IdP]
	if !ok {
		return false, fmt.Errorf("%w: provider %q is no longer configured", errRefused, id.IdP)
	}
	rt, err := m.open(id.RefreshToken, id.IdP, id.Subject)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errRefused, err)
	}
	cfg, err := p.oauth2(ctx, "")
	if err != nil {
		return false, err
	}
	tok, err := cfg.TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: rt, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			return false, fmt.Errorf("%w: %s refused the refresh token (invalid_grant)", errRefused, id.IdP)
		}
		return false, fmt.Errorf("%w: %s (%s): refresh: %w", ErrUnavailable, id.IdP, p.cfg.Issuer, err)
	}
	next := id
	next.LastRefresh = m.now().UTC().Truncate(time.Microsecond)
	if tok.RefreshToken != "" && tok.RefreshToken != rt {
		next.RefreshToken = m.seal(tok.RefreshToken, id.IdP, id.Subject)
	}
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		c, err := p.verify(ctx, raw, "")
		switch {
		case errors.Is(err, ErrUnavailable):
			return false, err
		case err != nil:
			return false, fmt.Errorf("%w: refreshed ID token: %w", errRefused, err)
		case c.Subject != id.Subject:
			return false, fmt.Errorf("%w: refreshed ID token is for another subject", errRefused)
		}
		next.Email, next.Groups, next.Claim = c.Email, c.Groups, p.cfg.PolicyClaim
	}
	if err := m.st.UpdateIdentity(ctx, next); err != nil {
		return false, err
	}
	changed = next.Claim != id.Claim || !slices.Equal(next.Groups, id.Groups)
	if changed {
		m.audit(ctx, store.AuditEvent{
			Type: "auth.idp.groups", Actor: "idp:" + id.IdP, Outcome: "success", Subject: id.User,
			Details: map[string]string{"subject": id.Subject, "groups": fmt.Sprint(next.Groups)},
		})
	}
	return changed, nil
}

// deprovision records that the provider refused the user and ends every
// session of the user.
func (m *Manager) deprovision(ctx context.Context, id store.Identity, why error) error {
	now := m.now().UTC().Truncate(time.Microsecond)
	id.InvalidAt, id.RefreshToken = now, ""
	if err := m.st.UpdateIdentity(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	m.audit(ctx, store.AuditEvent{
		Type: "auth.idp.refresh", Actor: "idp:" + id.IdP, Outcome: "failure", Subject: id.User,
		Details: map[string]string{"subject": id.Subject, "reason": why.Error()},
	})
	ended, err := m.st.EndSessions(ctx, store.SessionFilter{User: id.User}, now, store.EndUserDisabled)
	if err != nil {
		return fmt.Errorf("end sessions of %s: %w", id.User, err)
	}
	for _, s := range ended {
		m.audit(ctx, store.AuditEvent{
			Time: s.EndedAt, Type: "session.end", Actor: "idp:" + id.IdP, Outcome: "success", Subject: s.ID,
			Details: map[string]string{"device": s.DeviceID, "user": s.User, "reason": s.EndReason, "comment": "the identity provider refused the refresh"},
		})
	}
	m.log.Info("identity provider refused a user: sessions ended", "idp", id.IdP, "user", id.User, "sessions", len(ended))
	return nil
}

func (m *Manager) audit(ctx context.Context, ev store.AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = m.now().UTC().Truncate(time.Microsecond)
	}
	if err := m.st.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		m.log.Error("audit event lost", "event", ev.Type, "err", err)
	}
}
