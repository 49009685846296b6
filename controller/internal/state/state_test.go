package state_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

type fixture struct {
	st      store.Store
	s       *state.State
	mu      sync.Mutex
	changes []store.Change
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st}
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	f.s = state.New(state.Config{Store: st, Now: func() time.Time { return clock },
		Publish: func(c store.Change) { f.mu.Lock(); f.changes = append(f.changes, c); f.mu.Unlock() }})
	return f
}

func (f *fixture) audit(t *testing.T) []store.AuditEvent {
	t.Helper()
	evs, err := f.st.ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

var admin = state.Origin{Actor: "admin:alice"}

func seg(name string) store.Segment {
	return store.Segment{Name: name, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}
}

// A committed mutation has exactly its record and publishes what it
// changed; a refused one has neither and publishes nothing.
func TestMutationCommitsWithRecord(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.s.CreateSegment(ctx, admin, seg("icu")); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.CreateSegment(ctx, admin, seg("icu"))
	var refused *state.Refused
	if !errors.As(err, &refused) || !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second create = %v, want a Refused ErrAlreadyExists", err)
	}
	evs := f.audit(t)
	if len(evs) != 1 || evs[0].Type != audit.AdminSegmentCreate || evs[0].Actor != "admin:alice" || evs[0].Subject != "icu" {
		t.Fatalf("audit = %+v, want one admin.segment.create by admin:alice", evs)
	}
	if len(f.changes) != 1 || !slices.Equal(f.changes[0].Segments, []string{"icu"}) {
		t.Fatalf("published %+v, want one change naming segment icu", f.changes)
	}
}

// Adding a member publishes the user and the group, nothing broader.
func TestMembershipChangeNamesUserAndGroup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, f.st.CreateUser(ctx, store.User{Name: "nurse"}))
	if _, err := f.s.CreateGroup(ctx, admin, store.Group{Name: "icu"}); err != nil {
		t.Fatal(err)
	}
	f.changes = nil
	g, err := f.s.AddMember(ctx, admin, "icu", "nurse")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.Members, []string{"nurse"}) {
		t.Fatalf("group after AddMember = %+v", g)
	}
	want := store.Change{Users: []string{"nurse"}, Groups: []string{"icu"}}
	if len(f.changes) != 1 || !slices.Equal(f.changes[0].Users, want.Users) || !slices.Equal(f.changes[0].Groups, want.Groups) || f.changes[0].All {
		t.Fatalf("published %+v, want %+v", f.changes, want)
	}
	if err := f.s.RemoveMember(ctx, admin, "icu", "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removing a non-member = %v, want ErrNotFound", err)
	}
}

// A request ID applies once; the retry learns what the first attempt
// recorded; a refused attempt and a Record leave the ID unclaimed.
func TestRequestIDAppliesOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	o := state.Origin{Actor: "admin:alice", RequestID: "r-1"}
	if _, err := f.s.CreateSegment(ctx, o, seg("icu")); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.CreateSegment(ctx, o, seg("other"))
	var applied *state.AppliedError
	if !errors.As(err, &applied) || len(applied.Events) != 1 || applied.Events[0].Subject != "icu" {
		t.Fatalf("retry = %v, want AppliedError naming the icu record", err)
	}
	if _, err := f.st.GetSegment(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a retried request ID applied a second change")
	}

	o2 := state.Origin{Actor: "admin:alice", RequestID: "r-2"}
	if err := f.s.DeleteSegment(ctx, o2, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of a missing segment = %v", err)
	}
	if err := f.s.Record(ctx, o2, store.AuditEvent{Type: audit.AdminAuth, Outcome: "failure", Subject: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.CreateSegment(ctx, o2, seg("icu2")); err != nil {
		t.Fatalf("request ID of a refused call and a Record was used up: %v", err)
	}
	evs, _ := f.st.ListAudit(ctx, store.AuditFilter{RequestID: "r-2"})
	if len(evs) != 2 {
		t.Fatalf("events of r-2 = %+v, want the failure record and the create", evs)
	}
}

// Directory edits are refused inside their transaction once a policy file
// is active.
func TestDirectoryEditRefusedUnderPolicy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	src := "version: 1\nsegments:\n  clinical: {prefixes: [10.20.0.0/24]}\n"
	if _, err := f.s.PutPolicy(ctx, admin, audit.AdminPolicyApply, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(src)}, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.changes) != 1 || !f.changes[0].Policy {
		t.Fatalf("policy apply published %+v, want Policy", f.changes)
	}
	_, err := f.s.CreateSegment(ctx, admin, seg("icu"))
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("segment create under a policy = %v, want ErrConflict", err)
	}
	// A stale apply (another version became active) stores nothing.
	_, err = f.s.PutPolicy(ctx, admin, audit.AdminPolicyApply, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(src)}, nil)
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale apply = %v, want ErrConflict", err)
	}
	vs, _ := f.st.ListPolicyVersions(ctx)
	applies := 0
	for _, e := range f.audit(t) {
		if e.Type == audit.AdminPolicyApply {
			applies++
		}
	}
	if len(vs) != 1 || applies != 1 {
		t.Fatalf("%d versions and %d apply records, want 1 and 1", len(vs), applies)
	}
}

// A sign-in that fails part way (the certificate cannot be issued) leaves
// no device, no session, no record, and does not use up the recovery code.
func TestSignInAllOrNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, f.st.CreateUser(ctx, store.User{Name: "nurse"}))
	must(t, f.st.ReplaceRecoveryCodes(ctx, "nurse", [][]byte{[]byte("h1")}, time.Now()))
	in := state.SignIn{User: "nurse", Hostname: "ws1", Method: "recovery-code", MFA: true, Source: "192.0.2.1", RecoveryCode: []byte("h1")}
	priv, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	in.Key = priv.Public()
	_, err = f.s.SignIn(ctx, in, func(string) (string, error) { return "", errors.New("CA down") })
	if err == nil {
		t.Fatal("sign-in with a failing CA succeeded")
	}
	if ds, _ := f.st.ListDevices(ctx); len(ds) != 0 {
		t.Fatalf("devices after a failed sign-in: %+v", ds)
	}
	if evs := f.audit(t); len(evs) != 0 {
		t.Fatalf("records after a failed sign-in: %+v", evs)
	}
	done, err := f.s.SignIn(ctx, in, func(id string) (string, error) { return "cert-" + id, nil })
	if err != nil {
		t.Fatalf("sign-in after the CA recovered (the recovery code must still be usable): %v", err)
	}
	types := []audit.Type{}
	for _, e := range f.audit(t) {
		types = append(types, e.Type)
	}
	slices.Sort(types)
	want := []audit.Type{audit.AuthLogin, audit.AuthRecoveryCode, audit.EnrollDevice, audit.SessionStart}
	if !slices.Equal(types, want) || done.Cert != "cert-"+done.Device.ID {
		t.Fatalf("records %v (cert %q), want %v", types, done.Cert, want)
	}
	if _, err := f.s.SignIn(ctx, in, func(id string) (string, error) { return "c", nil }); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("second use of one recovery code = %v, want ErrTokenInvalid", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The bootstrap owner token is revoked, with its record, when an owner
// account signs in, in the sign-in's transaction; another role's sign-in
// leaves it.
func TestOwnerSignInRevokesBootstrapToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	must(t, f.s.BootstrapOwnerToken(ctx, store.AdminToken{ID: "adt-boot", Name: "bootstrap", Role: "owner", Hash: []byte("boot"),
		CreatedBy: state.BootstrapCreator, CreatedAt: at, ExpiresAt: at.Add(24 * time.Hour)}, nil))
	for _, a := range []store.Admin{{Name: "olga", Role: "owner", PasswordHash: "x"}, {Name: "nina", Role: "network-admin", PasswordHash: "x"}} {
		if _, err := f.s.CreateAdmin(ctx, state.Origin{Actor: "admin:bootstrap"}, a); err != nil {
			t.Fatal(err)
		}
	}
	usable := func() bool {
		t.Helper()
		tok, _, err := f.st.AdminTokenByHash(ctx, []byte("boot"))
		if err != nil {
			t.Fatal(err)
		}
		return tok.Usable(at.Add(time.Minute))
	}
	if _, err := f.s.AdminSignIn(ctx, store.AdminToken{Name: "nina", Admin: "nina", Role: "network-admin", CreatedBy: "login", Hash: []byte("n1")}, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	if !usable() {
		t.Fatal("a network-admin's sign-in revoked the bootstrap token")
	}
	if _, err := f.s.AdminSignIn(ctx, store.AdminToken{Name: "olga", Admin: "olga", Role: "owner", CreatedBy: "login", Hash: []byte("o1")}, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	if usable() {
		t.Fatal("the bootstrap token is still usable after an owner signed in")
	}
	var revoked []store.AuditEvent
	for _, ev := range f.audit(t) {
		if ev.Type == audit.AdminTokenRevoke {
			revoked = append(revoked, ev)
		}
	}
	if len(revoked) != 1 || revoked[0].Subject != "adt-boot" || revoked[0].Actor != "admin:olga" {
		t.Fatalf("revoke records %+v, want one for adt-boot by admin:olga", revoked)
	}
	// A second owner sign-in finds nothing to revoke and records nothing more.
	if _, err := f.s.AdminSignIn(ctx, store.AdminToken{Name: "olga", Admin: "olga", Role: "owner", CreatedBy: "login", Hash: []byte("o2")}, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range f.audit(t) {
		if ev.Type == audit.AdminTokenRevoke {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d revoke records after a second owner sign-in, want 1", n)
	}
}
