package oidc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/oauth2"
)

// Run refreshes every linked identity each refresh interval until Close.
// It first tries each provider's discovery once, so that a configuration
// error (an untrusted certificate: ca_file) is logged at start, not at the
// first user's failed sign-in; a provider that is down is only noted.
func (m *Manager) Run() {
	m.wg.Go(func() {
		for _, n := range m.names {
			switch _, err := m.providers[n].discover(m.ctx); {
			case errors.Is(err, ErrIdPConfig):
				m.log.Error("identity provider misconfigured: its users cannot sign in", "idp", n, "err", err)
			case err != nil && m.ctx.Err() == nil:
				m.log.Warn("identity provider not reachable at start (retried at the next sign-in)", "idp", n, "err", err)
			}
		}
		t := time.NewTicker(m.interval)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				err := m.RefreshAll(m.ctx)
				switch {
				case err == nil || m.ctx.Err() != nil:
				case errors.Is(err, ErrIdPConfig): // retrying will not help: say so louder
					m.log.Error("oidc refresh: identity provider configuration error", "err", err)
				default:
					m.log.Warn("oidc refresh", "err", err)
				}
			}
		}
	})
}

// RefreshStats counts the outcomes of one RefreshAll pass.
type RefreshStats struct {
	Refreshed, Deprovisioned, Unreachable int
	// Unverified counts users whose sessions ended because their provider
	// stayed unreachable past the unreachable limit.
	Unverified int
}

// RefreshAll refreshes, once, every linked identity that has a refresh
// token and is still valid.
//
// Any OAuth error response of the token endpoint (RFC 6749 §5.2: a 4xx
// with an "error" code, whichever: invalid_grant from Okta, Entra ID,
// Keycloak, Auth0 or Google, invalid_request from Dex, invalid_client when
// the controller's own credentials are refused) is the provider's answer:
// the user's sessions end at once and the audit trail says why. The same
// holds for a provider removed from the configuration.
//
// Only a failure to get an answer (network errors, timeouts, 5xx, 429, a
// 4xx that is no OAuth error response, such as a proxy's page, or whose
// code is server_error or temporarily_unavailable) counts as unreachable.
// That changes nothing (fail static) for at most the unreachable limit
// after the user's last successful sign-in or refresh; past it the
// sessions end (audited), so an IdP that stays down cannot extend access
// for ever.
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
			var ref *refusal
			switch {
			case errors.As(err, &ref):
				err = m.deprovision(ctx, id, ref)
				mu.Lock()
				defer mu.Unlock()
				st.Deprovisioned++
				changed = true
				if err != nil {
					errs = append(errs, err)
				}
			case err != nil && ctx.Err() == nil && m.pastUnreachableLimit(id):
				err = m.endUnverified(ctx, id, err)
				mu.Lock()
				defer mu.Unlock()
				st.Unverified++
				changed = true
				if err != nil {
					errs = append(errs, err)
				}
			case err != nil:
				mu.Lock()
				defer mu.Unlock()
				st.Unreachable++
				errs = append(errs, fmt.Errorf("%s/%s: %w", id.IdP, id.Subject, err))
			default:
				mu.Lock()
				defer mu.Unlock()
				st.Refreshed++
				changed = changed || c
			}
		})
	}
	wg.Wait()
	if changed {
		m.changed()
	}
	return st, errors.Join(errs...)
}

// lastVerified is when the provider last vouched for the identity.
func lastVerified(id store.Identity) time.Time {
	if id.LastRefresh.IsZero() {
		return id.CreatedAt
	}
	return id.LastRefresh
}

func (m *Manager) pastUnreachableLimit(id store.Identity) bool {
	return !m.now().Before(lastVerified(id).Add(m.unreachableLimit))
}

// refusal is the provider's answer that it no longer accepts a user: an
// OAuth error response to the refresh, or a local reason that amounts to
// the same (the provider was removed, the token no longer opens, the
// refreshed ID token is refused).
type refusal struct {
	Status int    // HTTP status of the OAuth error response; 0 for a local reason
	Code   string // the OAuth error code ("invalid_grant"), or "" for a local reason
	Reason string // what happened, for the audit trail and the log
}

func (r *refusal) Error() string { return errRefused.Error() + ": " + r.Reason }
func (r *refusal) Unwrap() error { return errRefused }

func refusedf(format string, args ...any) *refusal {
	return &refusal{Reason: fmt.Sprintf(format, args...)}
}

// oauthRefusal reads a token endpoint failure: the provider's OAuth error
// response (RFC 6749 §5.2), or nil when the provider did not answer (see
// RefreshAll).
func oauthRefusal(idp string, err error) *refusal {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil || re.ErrorCode == "" {
		return nil
	}
	st := re.Response.StatusCode
	if st < 400 || st >= 500 || st == http.StatusRequestTimeout || st == http.StatusTooManyRequests {
		return nil
	}
	// The two codes by which an OAuth server says it could not answer
	// (RFC 6749 §4.1.2.1), sometimes sent with a 4xx: not about the user.
	if re.ErrorCode == "server_error" || re.ErrorCode == "temporarily_unavailable" {
		return nil
	}
	r := &refusal{Status: st, Code: clip(re.ErrorCode)}
	desc := ""
	if re.ErrorDescription != "" {
		desc = ` ("` + clip(re.ErrorDescription) + `")`
	}
	switch re.ErrorCode {
	case "invalid_client", "unauthorized_client":
		r.Reason = fmt.Sprintf("%s refused the controller's client credentials (HTTP %d %s%s): every user of this provider is signed out until client_id and client_secret_file in the OIDC configuration match the client registered at the IdP",
			idp, st, r.Code, desc)
	default:
		r.Reason = fmt.Sprintf("%s refused the refresh token (HTTP %d %s%s): the user was deactivated, deleted, signed out everywhere or had the token revoked at the IdP",
			idp, st, r.Code, desc)
	}
	return r
}

// refreshWorkers bounds concurrent refreshes (requests to the IdPs).
const refreshWorkers = 8

// errRefused is wrapped by every *refusal.
var errRefused = errors.New("the identity provider no longer accepts this user")

// refreshOne refreshes one identity and stores the outcome; changed says
// whether its groups changed.
func (m *Manager) refreshOne(ctx context.Context, id store.Identity) (changed bool, err error) {
	p, ok := m.providers[id.IdP]
	if !ok {
		return false, refusedf("provider %q is no longer configured", id.IdP)
	}
	rt, err := m.open(id.RefreshToken, id.IdP, id.Subject)
	if err != nil {
		return false, refusedf("%v: the user must sign in again", err)
	}
	cfg, err := p.oauth2(ctx, "")
	if err != nil {
		return false, err
	}
	tok, err := cfg.TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: rt, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		if r := oauthRefusal(id.IdP, err); r != nil {
			return false, r
		}
		return false, p.unreachable("refresh", err)
	}
	next := id
	next.LastRefresh = m.now().UTC().Truncate(time.Microsecond)
	if tok.RefreshToken != "" && tok.RefreshToken != rt {
		next.RefreshToken = m.seal(tok.RefreshToken, id.IdP, id.Subject)
	}
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		c, err := p.verify(ctx, raw, "")
		switch {
		case errors.Is(err, ErrUnavailable), errors.Is(err, ErrIdPConfig):
			return false, err
		case err != nil:
			return false, refusedf("refreshed ID token: %v", err)
		case c.Subject != id.Subject:
			return false, refusedf("refreshed ID token is for another subject")
		}
		next.Email, next.Groups, next.Claim = c.Email, c.Groups, p.cfg.PolicyClaim
	}
	changed = next.Claim != id.Claim || !slices.Equal(next.Groups, id.Groups)
	var ev store.AuditEvent
	if changed {
		ev = store.AuditEvent{
			Type: audit.AuthIdPGroups, Outcome: "success", Subject: id.User,
			Details: map[string]string{"subject": id.Subject, "groups": fmt.Sprint(next.Groups)},
		}
	}
	if err := m.state.RefreshIdentity(ctx, next, ev); err != nil {
		return false, err
	}
	return changed, nil
}

// deprovision records that the provider refused the user and ends every
// session of the user.
func (m *Manager) deprovision(ctx context.Context, id store.Identity, why *refusal) error {
	now := m.now().UTC().Truncate(time.Microsecond)
	id.InvalidAt, id.RefreshToken = now, ""
	d := map[string]string{"subject": id.Subject, "reason": why.Reason}
	if why.Code != "" {
		d["error"], d["http_status"] = why.Code, strconv.Itoa(why.Status)
	}
	n, err := m.state.CutOffIdentity(ctx, id, true,
		store.AuditEvent{Type: audit.AuthIdPRefresh, Outcome: "failure", Subject: id.User, Details: d},
		store.EndIdPRefused, "the identity provider refused the refresh")
	if err != nil {
		return err
	}
	if why.Code == "invalid_client" || why.Code == "unauthorized_client" {
		m.log.Error("identity provider refused the controller's client credentials: users signed out", "idp", id.IdP, "user", id.User, "sessions", n, "reason", why.Reason)
	} else {
		m.log.Info("identity provider refused a user: sessions ended", "idp", id.IdP, "user", id.User, "sessions", n, "reason", why.Reason)
	}
	return nil
}

// endUnverified ends the sessions of a user whose provider has been
// unreachable for longer than the unreachable limit since it last vouched
// for the user. The identity stays linked: the next sign-in checks it.
func (m *Manager) endUnverified(ctx context.Context, id store.Identity, cause error) error {
	now := m.now().UTC().Truncate(time.Microsecond)
	last := lastVerified(id)
	n, err := m.state.CutOffIdentity(ctx, id, false, store.AuditEvent{
		Type: audit.AuthIdPUnreachable, Outcome: "failure", Subject: id.User,
		Details: map[string]string{
			"subject": id.Subject, "last_verified": last.UTC().Format(time.RFC3339),
			"unreachable_limit": m.unreachableLimit.String(), "error": clip(cause.Error()),
			"reason": fmt.Sprintf("the identity provider could not confirm the user for %s (unreachable_limit %s)", now.Sub(last).Round(time.Second), m.unreachableLimit),
		},
	}, store.EndIdPUnreachable, "the identity provider stayed unreachable past unreachable_limit")
	if err != nil {
		return err
	}
	m.log.Warn("identity provider unreachable past unreachable_limit: sessions ended", "idp", id.IdP, "user", id.User, "sessions", n, "last_verified", last, "err", cause)
	return nil
}
