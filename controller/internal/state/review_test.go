package state_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// reviewFixture is a state owner over a fresh store with an injected
// clock, recording the changes it publishes.
type reviewFixture struct {
	st      store.Store
	s       *state.State
	clock   time.Time
	changes []store.Change
}

func newReviewFixture(t *testing.T) *reviewFixture {
	t.Helper()
	f := &reviewFixture{clock: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	f.s = state.New(state.Config{Store: st, Now: func() time.Time { return f.clock },
		Publish: func(c store.Change) { f.changes = append(f.changes, c) }})
	return f
}

func (f *reviewFixture) records(t *testing.T, types ...audit.Type) []store.AuditEvent {
	t.Helper()
	evs, err := f.st.ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(evs, func(e store.AuditEvent) bool { return !slices.Contains(types, e.Type) })
}

// ehrLines are a campaign's lines over ehr for users, through group
// clinicians.
func ehrLines(users ...string) []store.ReviewLine {
	var out []store.ReviewLine
	for i, u := range users {
		out = append(out, store.ReviewLine{N: i + 1, Who: "user:" + u, User: u, Via: "group:clinicians", App: "ehr",
			Class: "phi", Ports: "tcp/443, tcp/8443", Rule: "clinicians-ehr"})
	}
	return out
}

var (
	reviewer = state.Origin{Actor: "admin:rv"}
	manager  = state.Origin{Actor: "admin:owner"}
)

// In the one-by-one directory: only a named reviewer decides; a revoke
// waits for the close, which removes the membership the line comes
// through in one transaction with the remove_member record and the
// campaign record (every decision, by whom, when), and publishes the
// change; a narrow cannot be applied there and is refused when decided;
// a closed campaign takes no decision and no second close.
func TestReviewDirectory(t *testing.T) {
	ctx := context.Background()
	f := newReviewFixture(t)
	must(t, f.st.CreateSegment(ctx, store.Segment{Name: "clinical"}))
	must(t, f.st.CreateApp(ctx, store.App{Name: "ehr", Segment: "clinical", Classification: store.ClassPHI}))
	for _, u := range []string{"nurse", "locum"} {
		must(t, f.st.CreateUser(ctx, store.User{Name: u}))
	}
	must(t, f.st.CreateGroup(ctx, store.Group{Name: "clinicians"}))
	must(t, f.st.AddMember(ctx, "clinicians", "nurse"))
	must(t, f.st.AddMember(ctx, "clinicians", "locum"))

	c, err := f.s.StartReview(ctx, manager, store.ReviewCampaign{Name: "Q1", Scope: "phi", Reviewers: []string{"rv"},
		Due: f.clock.Add(30 * 24 * time.Hour), StaleDays: 90, RecentDays: 30, Lines: ehrLines("nurse", "locum")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.ID, "rv-") || c.CreatedBy != "admin:owner" {
		t.Errorf("campaign %+v", c)
	}
	if evs := f.records(t, audit.AdminReviewStart); len(evs) != 1 || evs[0].Subject != c.ID || evs[0].Details["lines"] != "2" {
		t.Errorf("start records %+v", evs)
	}

	var refused *state.Refused
	if _, err := f.s.DecideReview(ctx, manager, c.ID, state.Decision{Line: 2, Decision: store.DecisionRevoke, Comment: "x"}); !errors.As(err, &refused) || !errors.Is(err, state.ErrForbidden) {
		t.Errorf("decided by a non-reviewer: %v, want ErrForbidden", err)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 9, Decision: store.DecisionKeep, Comment: "x"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("line 9: %v, want ErrNotFound", err)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 2, Decision: store.DecisionNarrow, KeepPorts: "tcp/443", Comment: "x"}); !errors.Is(err, state.ErrConflict) {
		t.Errorf("narrow in the directory: %v, want ErrConflict", err)
	}
	if evs := f.records(t, audit.AdminReviewDecide); len(evs) != 0 {
		t.Errorf("refused decisions recorded: %+v", evs)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 1, Decision: store.DecisionKeep, Comment: "treats patients daily"}); err != nil {
		t.Fatal(err)
	}
	f.clock = f.clock.Add(time.Minute)
	l, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 2, Decision: store.DecisionRevoke, Comment: "contract ended"})
	if err != nil {
		t.Fatal(err)
	}
	if !l.AppliedAt.IsZero() || l.DecidedBy != "admin:rv" {
		t.Errorf("decided line %+v: want not applied before the close", l)
	}
	if g, _ := f.st.GetGroup(ctx, "clinicians"); !slices.Contains(g.Members, "locum") {
		t.Fatal("the revoke took effect before the close")
	}

	f.changes = nil
	f.clock = f.clock.Add(time.Hour)
	closed, err := f.s.CloseReview(ctx, manager, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := f.st.GetGroup(ctx, "clinicians"); !slices.Equal(g.Members, []string{"nurse"}) {
		t.Errorf("after the close clinicians = %v, want [nurse]", g.Members)
	}
	if len(f.changes) != 1 || !slices.Contains(f.changes[0].Users, "locum") || !slices.Contains(f.changes[0].Groups, "clinicians") {
		t.Errorf("published %+v, want locum and clinicians named", f.changes)
	}
	rm := f.records(t, audit.AdminGroupRemoveMember)
	cl := f.records(t, audit.AdminReviewClose)
	if len(rm) != 1 || rm[0].Details["review"] != c.ID || rm[0].Details["user"] != "locum" || len(cl) != 1 {
		t.Fatalf("close records: remove_member %+v, close %+v", rm, cl)
	}
	if rm[0].Seq+1 != cl[0].Seq {
		t.Errorf("the removal (seq %d) and the campaign record (seq %d) are not of one transaction", rm[0].Seq, cl[0].Seq)
	}
	d := cl[0].Details
	if d["kept"] != "1" || d["revoked"] != "1" || d["undecided"] != "0" || d["removed_members"] != "clinicians:locum" || d["overdue"] != "false" {
		t.Errorf("campaign record %v", d)
	}
	var decisions []state.ReviewDecisionRecord
	if err := json.Unmarshal([]byte(d["decisions"]), &decisions); err != nil || len(decisions) != 2 ||
		decisions[1].Who != "user:locum" || decisions[1].Decision != "revoke" || decisions[1].By != "admin:rv" ||
		decisions[1].Comment != "contract ended" || !decisions[1].At.Equal(closed.CreatedAt.Add(time.Minute)) || decisions[1].AppliedAt.IsZero() {
		t.Errorf("decisions %s (%v)", d["decisions"], err)
	}
	if got, _ := f.st.GetReview(ctx, c.ID); got.State(f.clock) != store.ReviewClosed || got.ClosedBy != "admin:owner" {
		t.Errorf("stored campaign %+v", got)
	}
	if _, err := f.s.CloseReview(ctx, manager, c.ID); !errors.Is(err, state.ErrConflict) {
		t.Errorf("second close: %v, want ErrConflict", err)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 1, Decision: store.DecisionRevoke, Comment: "x"}); !errors.Is(err, state.ErrConflict) {
		t.Errorf("decision after the close: %v, want ErrConflict", err)
	}
}

const reviewPolicy = `version: 1
groups:
  clinicians: {members: [nurse, locum, temp]}
segments:
  clinical: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: clinical, addresses: [10.20.0.10], ports: [tcp/443, tcp/8443], classification: phi}
rules:
  - name: clinicians-ehr
    from: [group:clinicians]
    to: [app:ehr]
    waiver: "approved by the CISO for this test, ticket 1"
`

// With a policy file active: a revoke applied at once is a new policy
// version with a deny rule, whose reason names the campaign, recorded as
// admin.policy.apply with the campaign; a narrow applied at the close is
// another; a revocation the policy's own tests refuse applies nothing
// and leaves the campaign open.
func TestReviewPolicyFile(t *testing.T) {
	ctx := context.Background()
	f := newReviewFixture(t)
	if _, err := f.st.PutPolicyVersion(ctx, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(reviewPolicy), Actor: "admin:owner", Reason: "first"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.s.StartReview(ctx, manager, store.ReviewCampaign{Name: "Q1", Scope: "app:ehr", Reviewers: []string{"rv"},
		Due: f.clock.Add(time.Hour), PolicyVersion: 1, Lines: ehrLines("nurse", "locum", "temp")})
	if err != nil {
		t.Fatal(err)
	}
	f.changes = nil
	l, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 2, Decision: store.DecisionRevoke, Comment: "left", ApplyNow: true})
	if err != nil {
		t.Fatal(err)
	}
	if l.AppliedAt.IsZero() || len(f.changes) != 1 || !f.changes[0].Policy {
		t.Errorf("apply-now: line %+v, changes %+v", l, f.changes)
	}
	v, err := f.st.ActivePolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != 2 || !strings.Contains(v.Reason, c.ID) || v.Actor != "admin:rv" {
		t.Errorf("version %d by %s: %q", v.Version, v.Actor, v.Reason)
	}
	pol, err := policyfile.Parse(v.File, v.Source)
	if err != nil {
		t.Fatal(err)
	}
	access := func(pol *policyfile.Policy, user string) policyfile.Entitlement {
		es := pol.Access(user, nil, nil)
		if len(es) != 1 {
			t.Fatalf("%s: %d entitlements", user, len(es))
		}
		return es[0]
	}
	if e := access(pol, "locum"); e.DeniedBy != "review-"+c.ID+"-2" {
		t.Errorf("locum denied by %q", e.DeniedBy)
	}
	if e := access(pol, "nurse"); e.DeniedBy != "" {
		t.Errorf("nurse denied by %q", e.DeniedBy)
	}
	if evs := f.records(t, audit.AdminPolicyApply); len(evs) != 1 || evs[0].Details["review"] != c.ID || evs[0].Details["version"] != "2" {
		t.Errorf("policy records %+v", evs)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 2, Decision: store.DecisionKeep, Comment: "oops"}); !errors.Is(err, state.ErrConflict) {
		t.Errorf("changing an applied decision: %v, want ErrConflict", err)
	}
	if _, err := f.s.DecideReview(ctx, reviewer, c.ID, state.Decision{Line: 3, Decision: store.DecisionNarrow, KeepPorts: "tcp/443", Comment: "web only"}); err != nil {
		t.Fatal(err)
	}
	f.clock = f.clock.Add(2 * time.Hour) // past due
	closed, err := f.s.CloseReview(ctx, manager, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, _ = f.st.ActivePolicy(ctx)
	pol, _ = policyfile.Parse(v.File, v.Source)
	if e := access(pol, "temp"); v.Version != 3 || e.DeniedBy != "review-"+c.ID+"-3" {
		t.Errorf("after the close: version %d, temp denied by %q", v.Version, e.DeniedBy)
	}
	for port, want := range map[uint16]policy.Verdict{443: policy.Allow, 8443: policy.Deny} {
		if r := pol.Evaluate(policyfile.Request{User: "temp", App: "ehr", Proto: policy.ProtoTCP, Port: port, At: f.clock}); r.Verdict != want {
			t.Errorf("temp on tcp/%d after the narrow: %v, want %v", port, r.Verdict, want)
		}
	}
	cl := f.records(t, audit.AdminReviewClose)
	if len(cl) != 1 || cl[0].Details["policy_version"] != "3" || cl[0].Details["overdue"] != "true" || cl[0].Details["undecided"] != "1" {
		t.Errorf("campaign record %+v", cl)
	}
	if closed.Lines[2].AppliedAt.IsZero() {
		t.Errorf("narrowed line not marked applied: %+v", closed.Lines[2])
	}

	// A policy whose tests say the temp reaches ehr on 8443 refuses the
	// narrow: nothing applies, the campaign stays open.
	src := reviewPolicy + `tests:
  - name: temp reaches the EHR admin port
    user: temp
    app: ehr
    port: tcp/8443
    expect: allow
`
	f2 := newReviewFixture(t)
	if _, err := f2.st.PutPolicyVersion(ctx, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(src), Actor: "admin:owner", Reason: "first"}); err != nil {
		t.Fatal(err)
	}
	c2, err := f2.s.StartReview(ctx, manager, store.ReviewCampaign{Name: "Q1", Scope: "app:ehr", Reviewers: []string{"rv"},
		Due: f2.clock.Add(time.Hour), Lines: ehrLines("nurse", "locum", "temp")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f2.s.DecideReview(ctx, reviewer, c2.ID, state.Decision{Line: 3, Decision: store.DecisionNarrow, KeepPorts: "tcp/443", Comment: "web only"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f2.s.CloseReview(ctx, manager, c2.ID); !errors.Is(err, state.ErrConflict) || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("close against the policy's tests: %v, want a conflict saying the policy would be invalid", err)
	}
	if v, _ := f2.st.ActivePolicy(ctx); v.Version != 1 {
		t.Errorf("a refused close stored policy version %d", v.Version)
	}
	if got, _ := f2.st.GetReview(ctx, c2.ID); got.State(f2.clock) != store.ReviewOpen || len(f2.records(t, audit.AdminReviewClose)) != 0 {
		t.Errorf("a refused close closed the campaign: %+v", got)
	}
}
