package oidc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/internal/oidctest"
	"github.com/cordonhq/cordon/pkg/audit"
)

// signedInRig is a rig where alice signed in through the IdP, is linked
// and has one active session (ID "ses-1").
func signedInRig(t *testing.T, cfgEdit func(*Config)) (*rig, store.Identity) {
	t.Helper()
	r := newRigWith(t, oidctest.Options{}, nil, cfgEdit)
	ctx := t.Context()
	res := r.signIn(t, "alice", "pw-alice")
	now := r.m.now().UTC().Truncate(time.Microsecond)
	id, err := r.st.LinkIdentity(ctx, store.Identity{IdP: res.IdP, Subject: res.Claims.Subject, User: res.Claims.Username,
		Claim: res.PolicyClaim, Groups: res.Claims.Groups, RefreshToken: res.RefreshToken, LastRefresh: now, CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := r.st.CreateDevice(ctx, store.Device{ID: "dev-1", User: id.User, PublicKey: testKey(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.StartSession(ctx, store.Session{ID: "ses-1", DeviceID: dev.ID, User: id.User, Method: "oidc:test", StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	return r, id
}

func (r *rig) session(t *testing.T) store.Session {
	t.Helper()
	s, err := r.st.GetSession(t.Context(), "ses-1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRefreshIdPAnswers: the token endpoint answers the refresh of a
// user revoked at the IdP the way each major IdP does. Every OAuth error
// response is the IdP's answer (RFC 6749 §5.2): the session ends at once,
// audited with the IdP's error code. Regression: Dex's HTTP 400
// invalid_request was taken for an outage and kept sessions for ever.
func TestRefreshIdPAnswers(t *testing.T) {
	for style, answer := range oidctest.RevokedAnswers {
		t.Run(style, func(t *testing.T) {
			r, id := signedInRig(t, nil)
			a := answer
			r.idp.SetRevokedAnswer(&a)
			if err := r.idp.SetDisabled("alice", true); err != nil {
				t.Fatal(err)
			}
			st, err := r.m.refreshAll(t.Context())
			if err != nil || st != (RefreshStats{Deprovisioned: 1}) {
				t.Fatalf("refresh: %+v, %v; want one deprovisioned", st, err)
			}
			if s := r.session(t); s.Active() || s.EndReason != store.EndIdPRefused {
				t.Errorf("session: %+v, want ended (%s)", s, store.EndIdPRefused)
			}
			got, _ := r.st.GetIdentity(t.Context(), "test", id.Subject)
			if got.InvalidAt.IsZero() || got.RefreshToken != "" {
				t.Errorf("identity: %+v, want invalid, token dropped", got)
			}
			evs, _ := r.st.ListAudit(t.Context(), store.AuditFilter{Type: string(audit.AuthIdPRefresh)})
			wantCode := strings.Split(strings.Split(a.Body, `"error":"`)[1], `"`)[0]
			if len(evs) != 1 || evs[0].Subject != "alice" || evs[0].Outcome != "failure" ||
				evs[0].Details["error"] != wantCode || evs[0].Details["http_status"] != fmt.Sprint(a.Status) ||
				!strings.Contains(evs[0].Details["reason"], wantCode) {
				t.Errorf("audit %s: %+v, want error %s, status %d", audit.AuthIdPRefresh, evs, wantCode, a.Status)
			}
			if r.changed.Load() != 1 {
				t.Errorf("Changed called %d times, want 1 (the maps must drop the session)", r.changed.Load())
			}
		})
	}
}

// TestRefreshOutages: answers that say nothing about the user (5xx, 429, a
// proxy's HTML page, no answer at all) end nothing while the user's last
// successful check is within the unreachable limit.
func TestRefreshOutages(t *testing.T) {
	for name, answer := range oidctest.OutageAnswers {
		t.Run(name, func(t *testing.T) {
			// A short client timeout makes the hanging IdP a timeout
			// quickly; nothing here depends on how quickly.
			r, id := signedInRig(t, func(c *Config) { c.HTTPTimeout = 200 * time.Millisecond })
			a := answer
			r.idp.SetRefreshAnswer(&a)
			st, err := r.m.refreshAll(t.Context())
			if err == nil || st != (RefreshStats{Unreachable: 1}) {
				t.Fatalf("refresh: %+v, %v; want one unreachable, with an error", st, err)
			}
			if s := r.session(t); !s.Active() {
				t.Errorf("an outage (%s) ended the session: %+v", name, s)
			}
			got, _ := r.st.GetIdentity(t.Context(), "test", id.Subject)
			if !got.InvalidAt.IsZero() || got.RefreshToken == "" {
				t.Errorf("identity after an outage: %+v", got)
			}
			if evs, _ := r.st.ListAudit(t.Context(), store.AuditFilter{Type: "auth.idp."}); len(evs) != 0 {
				t.Errorf("an outage was audited as a refusal: %+v", evs)
			}
		})
	}
}

// TestRefreshUnreachableBounded: an IdP that stays unreachable keeps a
// session only until the unreachable limit after the user's last
// successful check; a successful refresh in between restarts the count.
func TestRefreshUnreachableBounded(t *testing.T) {
	const limit = time.Hour
	r, id := signedInRig(t, func(c *Config) { c.UnreachableLimit = limit })
	ctx := t.Context()
	at := func(d time.Duration) { r.offset.Store(int64(d)) }

	r.idp.SetDown(true)
	at(limit - time.Minute)
	if st, _ := r.m.refreshAll(ctx); st != (RefreshStats{Unreachable: 1}) || !r.session(t).Active() {
		t.Fatalf("down %s (limit %s): %+v, session %+v", limit-time.Minute, limit, st, r.session(t))
	}

	// Back before the limit: the refresh succeeds and the count restarts.
	r.idp.SetDown(false)
	at(limit - time.Minute)
	if st, err := r.m.refreshAll(ctx); err != nil || st.Refreshed != 1 {
		t.Fatalf("refresh with the IdP back: %+v %v", st, err)
	}
	r.idp.SetDown(true)
	at(2*limit - 2*time.Minute)
	if st, _ := r.m.refreshAll(ctx); st != (RefreshStats{Unreachable: 1}) || !r.session(t).Active() {
		t.Fatalf("down again, within the limit of the last refresh: %+v, session %+v", st, r.session(t))
	}

	// Down for the whole limit since the last successful refresh: the
	// session ends, audited; the identity stays linked (not refused).
	at(2*limit - time.Minute)
	st, err := r.m.refreshAll(ctx)
	if err != nil || st != (RefreshStats{Unverified: 1}) {
		t.Fatalf("down past the limit: %+v %v", st, err)
	}
	if s := r.session(t); s.Active() || s.EndReason != store.EndIdPUnreachable {
		t.Errorf("session: %+v, want ended (%s)", s, store.EndIdPUnreachable)
	}
	evs, _ := r.st.ListAudit(ctx, store.AuditFilter{Type: string(audit.AuthIdPUnreachable)})
	if len(evs) != 1 || evs[0].Subject != "alice" || evs[0].Details["unreachable_limit"] != limit.String() || evs[0].Details["last_verified"] == "" {
		t.Errorf("audit %s: %+v", audit.AuthIdPUnreachable, evs)
	}
	if evs, _ := r.st.ListAudit(ctx, store.AuditFilter{Type: string(audit.SessionEnd)}); len(evs) != 1 || evs[0].Details["reason"] != store.EndIdPUnreachable {
		t.Errorf("audit session.end: %+v", evs)
	}
	got, _ := r.st.GetIdentity(ctx, "test", id.Subject)
	if !got.InvalidAt.IsZero() || got.RefreshToken == "" {
		t.Errorf("identity after the limit: %+v, want still linked", got)
	}
	// No session left: nothing more to check at the IdP.
	if st, _ := r.m.refreshAll(ctx); st != (RefreshStats{}) {
		t.Errorf("refresh after the sessions ended: %+v", st)
	}
}
