package state_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// A break-glass sign-in uses up its one-time code in the sign-in's own
// transaction (a sign-in that fails later leaves the code usable; a code
// signs in once), starts a session bound to the time given, stores the use
// and raises auth.break_glass with the justification, and logs at ERROR.
// A second use is a second use record and a second alert.
func TestBreakGlassSignIn(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	st, err := sqlite.Open(ctx, t.TempDir()+"/cordon.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var logs bytes.Buffer
	s := state.New(state.Config{Store: st, Now: func() time.Time { return clock },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	codes, hashes := auth.NewRecoveryCodes("er-1", 3)
	if _, err := s.CreateBreakGlass(ctx, state.Origin{Actor: "admin:owner"}, store.User{Name: "er-1", PasswordHash: "$argon2id$x", TOTPSecret: "ignored"}, hashes); err != nil {
		t.Fatal(err)
	}
	u, err := st.GetUser(ctx, "er-1")
	if err != nil || !u.BreakGlass || u.TOTPSecret != "" {
		t.Fatalf("emergency account = %+v, %v: want break-glass, no TOTP", u, err)
	}
	if codes[0] == codes[1] {
		t.Fatal("two codes alike")
	}
	priv, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	const why = "ED downtime: Okta unreachable, patient in resus needs labs"
	in := state.SignIn{User: "er-1", Hostname: "ed-ws3", Key: priv.Public(), Method: "break-glass", MFA: true, Source: "192.0.2.9",
		RecoveryCode: hashes[0], BreakGlass: &state.BreakGlass{Justification: why, For: 5 * time.Second}}
	records := func(typ audit.Type) []store.AuditEvent {
		evs, err := st.ListAudit(ctx, store.AuditFilter{Type: string(typ), Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}

	// A sign-in that fails after the code was checked leaves it unused.
	boom := errors.New("CA down")
	if _, err := s.SignIn(ctx, in, func(string) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("sign-in with a failing CA = %v, want %v", err, boom)
	}
	if n := len(records(audit.AuthBreakGlass)); n != 0 {
		t.Fatalf("%d auth.break_glass records after a failed sign-in, want 0", n)
	}
	if uses, _ := st.ListBreakGlassUses(ctx); len(uses) != 0 {
		t.Fatalf("uses after a failed sign-in: %+v", uses)
	}

	issue := func(id string) (string, error) { return "cert-" + id, nil }
	done, err := s.SignIn(ctx, in, issue)
	if err != nil {
		t.Fatal(err)
	}
	sess := done.Session
	if !sess.ExpiresAt.Equal(clock.Add(5*time.Second)) || sess.BreakGlass == "" {
		t.Fatalf("break-glass session = %+v: want bound %s and a use", sess, clock.Add(5*time.Second))
	}
	stored, err := st.GetSession(ctx, sess.ID)
	if err != nil || !stored.ExpiresAt.Equal(sess.ExpiresAt) || stored.BreakGlass != sess.BreakGlass {
		t.Fatalf("stored session = %+v, %v: want %+v", stored, err, sess)
	}
	use, err := st.GetBreakGlassUse(ctx, sess.BreakGlass)
	if err != nil {
		t.Fatal(err)
	}
	if use.User != "er-1" || use.Justification != why || use.SessionID != sess.ID || use.DeviceID != done.Device.ID ||
		!use.ExpiresAt.Equal(sess.ExpiresAt) || !state.BreakGlassUseOpen(use) {
		t.Fatalf("use = %+v", use)
	}
	alerts := records(audit.AuthBreakGlass)
	if len(alerts) != 1 {
		t.Fatalf("%d auth.break_glass records, want 1", len(alerts))
	}
	a := alerts[0]
	if a.Outcome != string(audit.Raised) || a.Subject != use.ID || a.Details["justification"] != why ||
		a.Details["remaining"] != "2" || a.Details["session"] != sess.ID || a.Details["expires_at"] != "2026-03-04T05:06:12Z" {
		t.Fatalf("alert = %+v", a)
	}
	spec, _ := audit.Lookup(audit.AuthBreakGlass)
	if sev, _ := spec.Severity(audit.Raised); sev != audit.Alert {
		t.Fatalf("auth.break_glass severity %s, want alert", sev)
	}
	if n := len(records(audit.AuthRecoveryCode)); n != 0 {
		t.Errorf("%d auth.recovery_code records: the alert says it for a break-glass code", n)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "BREAK-GLASS") || !strings.Contains(l, use.ID) {
		t.Errorf("no ERROR log line naming the use:\n%s", l)
	}

	// The same code never signs in twice.
	if _, err := s.SignIn(ctx, in, issue); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("second sign-in with one code = %v, want ErrTokenInvalid", err)
	}
	// No renewal: more time is a second use, with its own alert.
	clock = clock.Add(time.Minute)
	in.RecoveryCode, in.DeviceID = hashes[1], done.Device.ID
	again, err := s.SignIn(ctx, in, issue)
	if err != nil {
		t.Fatal(err)
	}
	if again.Session.BreakGlass == sess.BreakGlass || !again.Session.ExpiresAt.Equal(clock.Add(5*time.Second)) {
		t.Fatalf("second use session = %+v", again.Session)
	}
	if n := len(records(audit.AuthBreakGlass)); n != 2 {
		t.Fatalf("%d auth.break_glass records after a second use, want 2", n)
	}
	uses, err := st.ListBreakGlassUses(ctx)
	if err != nil || len(uses) != 2 {
		t.Fatalf("uses = %+v, %v: want 2", uses, err)
	}
}

// A use closes only when two different admins reviewed it; the same admin
// twice, the account's own user, and a review of a closed or unknown use
// are refused and recorded as failures.
func TestBreakGlassReview(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	st, err := sqlite.Open(ctx, t.TempDir()+"/cordon.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := state.New(state.Config{Store: st, Now: func() time.Time { return clock }})
	must(t, st.CreateBreakGlassUse(ctx, store.BreakGlassUse{ID: "bg-1", User: "er-1", DeviceID: "dev-1", SessionID: "ses-1",
		Source: "192.0.2.9", Justification: "downtime", StartedAt: clock, ExpiresAt: clock.Add(time.Hour)}))
	review := func(admin, id string) (store.BreakGlassUse, error) {
		return s.ReviewBreakGlass(ctx, state.Origin{Actor: "admin:" + admin}, "account:"+admin, id, "checked with the ED lead")
	}
	refused := func(what string, err error, kind error) {
		t.Helper()
		var r *state.Refused
		if !errors.As(err, &r) || !errors.Is(err, kind) {
			t.Fatalf("%s: %v, want a refusal of kind %v", what, err, kind)
		}
	}

	_, err = review("er-1", "bg-1")
	refused("review by the account's own user", err, state.ErrConflict)
	_, err = review("alice", "bg-nope")
	refused("review of an unknown use", err, store.ErrNotFound)
	u, err := review("alice", "bg-1")
	if err != nil || !state.BreakGlassUseOpen(u) || len(u.Reviews) != 1 {
		t.Fatalf("first review = %+v, %v: want open with one review", u, err)
	}
	_, err = review("alice", "bg-1")
	refused("second review by the same admin", err, state.ErrConflict)
	u, err = review("bob", "bg-1")
	if err != nil || state.BreakGlassUseOpen(u) || len(u.Reviews) != 2 {
		t.Fatalf("second review = %+v, %v: want closed", u, err)
	}
	_, err = review("carol", "bg-1")
	refused("review of a closed use", err, state.ErrConflict)

	evs, err := st.ListAudit(ctx, store.AuditFilter{Type: string(audit.AdminBreakGlassReview), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Actor+" "+e.Outcome+" "+e.Details["state"])
	}
	slices.Reverse(got) // newest first
	want := []string{
		"admin:er-1 failure ", "admin:alice failure ", "admin:alice success open",
		"admin:alice failure ", "admin:bob success closed", "admin:carol failure ",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("review records:\n got %q\nwant %q", got, want)
	}
	stored, err := st.GetBreakGlassUse(ctx, "bg-1")
	if err != nil || len(stored.Reviews) != 2 || stored.Reviews[0].Reviewer != "account:alice" || stored.Reviews[1].Reviewer != "account:bob" {
		t.Fatalf("stored reviews = %+v, %v", stored.Reviews, err)
	}
}
