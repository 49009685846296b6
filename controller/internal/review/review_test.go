package review

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

const testPolicy = `version: 1
groups:
  clinicians: {members: [nurse, locum, temp, ghost]}
  billing-staff: {members: [clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: clinical, addresses: [10.20.0.10], ports: [tcp/443, tcp/8443], classification: phi}
  billing: {segment: clinical, addresses: [10.20.0.11], ports: [tcp/443], classification: internal}
rules:
  - name: clinicians-ehr
    from: [group:clinicians]
    to: [app:ehr]
    waiver: "approved by the CISO for the e2e world, ticket 1"
  - name: billing
    from: [group:billing-staff]
    to: [app:billing]
`

// fakeLookup answers from maps: last use by user/app, group joins by user.
type fakeLookup struct {
	used   map[string]time.Time // "user/app"
	joined map[string]time.Time
}

func (f fakeLookup) LastUse(_ context.Context, user, app string) (time.Time, error) {
	return f.used[user+"/"+app], nil
}

func (f fakeLookup) AddedSince(_ context.Context, user string, t time.Time) (bool, error) {
	j, ok := f.joined[user]
	return ok && !j.Before(t), nil
}

// TestLines: a campaign over PHI apps lists each clinician's ehr
// entitlement (not billing), with evidence, and flags: the nurse (used it 2
// days ago) only for the waiver; the locum who last used it 100 days ago
// and the temp who never did are stale; the temp, created 3 days ago, is
// new; the disabled ghost is orphaned, and so is the user who does not
// exist. The clock is the test's, never the machine's.
func TestLines(t *testing.T) {
	pol, err := policyfile.Parse("p.yaml", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)
	long := now.AddDate(-1, 0, 0)
	snap := &store.Snapshot{
		Users: []store.User{
			{Name: "nurse", CreatedAt: long}, {Name: "locum", CreatedAt: long},
			{Name: "temp", CreatedAt: now.AddDate(0, 0, -3)}, {Name: "clerk", CreatedAt: long},
			{Name: "ghost", CreatedAt: long, Disabled: true},
		},
		Devices: []store.Device{{ID: "dev-n", User: "nurse", MFAAt: now.Add(-time.Hour)}},
		Sessions: []store.Session{{ID: "s1", DeviceID: "dev-n", User: "nurse", StartedAt: now.Add(-2 * time.Hour),
			MFAAt: now.Add(-2 * time.Hour)}},
		Posture: map[string]store.PostureRecord{"dev-n": {Passing: []string{"disk", "screenlock"}}},
	}
	// "ghost" in the policy has no user of the controller: make it so.
	snap.Users = slices.DeleteFunc(snap.Users, func(u store.User) bool { return u.Name == "ghost" })
	snap.Users = append(snap.Users, store.User{Name: "locum2", CreatedAt: long})
	lk := fakeLookup{used: map[string]time.Time{
		"nurse/ehr": now.AddDate(0, 0, -2), "locum/ehr": now.AddDate(0, 0, -100),
	}}
	in := Input{Snapshot: snap, Now: now, Lookup: lk}
	lines, err := Lines(t.Context(), pol, Scope{Kind: ScopePHI}, in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.ReviewLine{}
	for i, l := range lines {
		if l.N != i+1 {
			t.Errorf("line %d numbered %d", i+1, l.N)
		}
		if l.App != "ehr" || l.Via != "group:clinicians" || l.Rule != "clinicians-ehr" || l.Ports != "tcp/443, tcp/8443" {
			t.Errorf("line %+v: want ehr through group:clinicians", l)
		}
		got[l.User] = l
	}
	want := map[string]string{
		"nurse": "waiver",
		"locum": "stale,waiver",
		"temp":  "new,stale,waiver",
		"ghost": "orphaned,stale,waiver",
	}
	if len(got) != len(want) {
		t.Fatalf("lines for %v, want %v", slices.Sorted(mapsKeys(got)), slices.Sorted(mapsKeys(want)))
	}
	for u, flags := range want {
		if f := strings.Join(got[u].Flags, ","); f != flags {
			t.Errorf("%s: flags %q, want %q", u, f, flags)
		}
	}
	n := got["nurse"].Evidence
	if !n.LastUse.Equal(now.AddDate(0, 0, -2)) || !n.LastSignIn.Equal(now.Add(-2*time.Hour)) ||
		!n.MFAAt.Equal(now.Add(-time.Hour)) || n.Posture != "dev-n: disk,screenlock" || n.UserState != "active" {
		t.Errorf("nurse's evidence %+v", n)
	}
	if s := got["ghost"].Evidence.UserState; s != "unknown" {
		t.Errorf("ghost's user state %q, want unknown", s)
	}

	// The IdP refused the nurse (and she has no other valid identity):
	// orphaned.
	refused := *snap
	refused.Identities = []store.Identity{{IdP: "okta", Subject: "s1", User: "nurse", InvalidAt: now.Add(-time.Hour)}}
	in.Snapshot = &refused
	if ls, _ := Lines(t.Context(), pol, Scope{Kind: ScopePHI}, in); lineFor(ls, "nurse").Evidence.UserState != "idp-refused" ||
		!slices.Contains(lineFor(ls, "nurse").Flags, store.FlagOrphaned) {
		t.Errorf("nurse refused by the IdP: %+v, want orphaned", lineFor(ls, "nurse"))
	}
	refused.Identities = append(refused.Identities, store.Identity{IdP: "entra", Subject: "s2", User: "nurse"})
	if ls, _ := Lines(t.Context(), pol, Scope{Kind: ScopePHI}, in); lineFor(ls, "nurse").Evidence.UserState != "active" {
		t.Errorf("nurse with another valid identity: %+v, want active", lineFor(ls, "nurse").Evidence)
	}
	in.Snapshot = snap

	// A smaller stale threshold flags the nurse too; a larger one spares
	// the locum.
	in.StaleDays = 1
	if ls, _ := Lines(t.Context(), pol, Scope{Kind: ScopeApp, Name: "ehr"}, in); !slices.Contains(lineFor(ls, "nurse").Flags, store.FlagStale) {
		t.Errorf("--stale-days 1: nurse not stale: %v", lineFor(ls, "nurse").Flags)
	}
	in.StaleDays = 365
	if ls, _ := Lines(t.Context(), pol, Scope{Kind: ScopeApp, Name: "ehr"}, in); slices.Contains(lineFor(ls, "locum").Flags, store.FlagStale) {
		t.Errorf("--stale-days 365: locum stale")
	}
	in.StaleDays = 0

	// Granted since the policy of 30 days ago: that policy had no locum.
	before, err := policyfile.Parse("p.yaml", []byte(strings.Replace(testPolicy, "nurse, locum, temp, ghost", "nurse, temp, ghost", 1)))
	if err != nil {
		t.Fatal(err)
	}
	in.Before = before
	ls, err := Lines(t.Context(), pol, Scope{Kind: ScopePHI}, in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(lineFor(ls, "locum").Flags, store.FlagNew) || slices.Contains(lineFor(ls, "nurse").Flags, store.FlagNew) {
		t.Errorf("against the old policy: locum %v, nurse %v: want only the locum new", lineFor(ls, "locum").Flags, lineFor(ls, "nurse").Flags)
	}
	in.Before = nil
	// A group join within the window flags the user new.
	in.Lookup = fakeLookup{used: lk.used, joined: map[string]time.Time{"nurse": now.AddDate(0, 0, -2)}}
	if ls, _ := Lines(t.Context(), pol, Scope{Kind: ScopePHI}, in); !slices.Contains(lineFor(ls, "nurse").Flags, store.FlagNew) {
		t.Errorf("nurse joined 2 days ago but is not new")
	}
	in.Lookup = lk

	// Scopes: a group lists what it grants; a segment its apps.
	for _, tc := range []struct {
		scope string
		apps  []string
	}{
		{"group:billing-staff", []string{"billing"}},
		{"segment:clinical", []string{"billing", "ehr"}},
		{"app:billing", []string{"billing"}},
	} {
		sc, err := ParseScope(tc.scope)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := Lines(t.Context(), pol, sc, in)
		if err != nil {
			t.Fatalf("%s: %v", tc.scope, err)
		}
		var apps []string
		for _, l := range ls {
			if !slices.Contains(apps, l.App) {
				apps = append(apps, l.App)
			}
		}
		slices.Sort(apps)
		if !slices.Equal(apps, tc.apps) {
			t.Errorf("%s: apps %v, want %v", tc.scope, apps, tc.apps)
		}
	}
	for _, bad := range []string{"app:nope", "group:nope", "segment:nope"} {
		sc, _ := ParseScope(bad)
		if _, err := Lines(t.Context(), pol, sc, in); !errors.Is(err, ErrScope) {
			t.Errorf("%s: %v, want ErrScope", bad, err)
		}
	}
}

func TestParseScope(t *testing.T) {
	for _, ok := range []string{"phi", "app:ehr", "group:clinicians", "segment:clinical"} {
		s, err := ParseScope(ok)
		if err != nil || s.String() != ok {
			t.Errorf("ParseScope(%q) = %v, %v", ok, s, err)
		}
	}
	for _, bad := range []string{"", "PHI", "app:", "user:alice", "app", "group:" + strings.Repeat("x", 64)} {
		if _, err := ParseScope(bad); err == nil {
			t.Errorf("ParseScope(%q) accepted", bad)
		}
	}
}

// TestPlan: with a policy file, each revoke or narrow is one deny rule
// named after the campaign and line (a narrow denies the ports not kept);
// in the directory, a revoke is the membership it comes through, and a
// narrow or an IdP group cannot be applied.
func TestPlan(t *testing.T) {
	lines := []store.ReviewLine{
		{N: 1, Who: "user:nurse", User: "nurse", Via: "group:clinicians", App: "ehr", Ports: "tcp/443, tcp/8443", Decision: store.DecisionKeep},
		{N: 2, Who: "user:locum", User: "locum", Via: "group:clinicians", App: "ehr", Ports: "tcp/443, tcp/8443", Decision: store.DecisionRevoke},
		{N: 3, Who: "user:temp", User: "temp", Via: "group:clinicians", App: "ehr", Ports: "tcp/443, tcp/8443", Decision: store.DecisionNarrow, KeepPorts: "tcp/443"},
		{N: 4, Who: "user:ghost", User: "ghost", Via: "group:clinicians", App: "ehr"},
	}
	c, err := Plan("rv-1", true, lines)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Denies) != 2 || c.Denies[0].Name != "review-rv-1-2" || c.Denies[0].From != "user:locum" || len(c.Denies[0].Ports) != 0 ||
		c.Denies[1].Name != "review-rv-1-3" || !slices.Equal(c.Denies[1].Ports, []string{"tcp/8443"}) || len(c.Members) != 0 {
		t.Errorf("file plan %+v", c)
	}
	if _, err := Plan("rv-1", false, lines); !errors.Is(err, ErrNotRevocable) {
		t.Errorf("directory narrow: %v, want ErrNotRevocable", err)
	}
	c, err = Plan("rv-1", false, lines[:2])
	if err != nil || len(c.Denies) != 0 || !slices.Equal(c.Members, []Membership{{"clinicians", "locum"}}) {
		t.Errorf("directory plan %+v, %v", c, err)
	}
	idp := store.ReviewLine{N: 5, Who: "idp:groups=Physicians", Via: "group:physicians", App: "ehr", Decision: store.DecisionRevoke}
	if _, err := Plan("rv-1", true, []store.ReviewLine{idp}); !errors.Is(err, ErrNotRevocable) {
		t.Errorf("IdP group revoke: %v, want ErrNotRevocable", err)
	}
	for _, tc := range []struct{ ports, keep string }{
		{"tcp/443", "tcp/443"},          // keeps everything
		{"tcp/443, tcp/8443", ""},       // keeps nothing
		{"tcp/443, tcp/8443", "udp/53"}, // not one of them
	} {
		if _, err := NarrowDenied(tc.ports, tc.keep); err == nil {
			t.Errorf("NarrowDenied(%q, %q) accepted", tc.ports, tc.keep)
		}
	}
}

func lineFor(ls []store.ReviewLine, user string) store.ReviewLine {
	for _, l := range ls {
		if l.User == user {
			return l
		}
	}
	return store.ReviewLine{}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
