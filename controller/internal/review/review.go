// Package review computes access review campaigns (issue 17,
// 164.308(a)(1)(ii)(D) and (a)(4)): the lines of a campaign, one per
// entitlement in its scope, from the live policy through the evaluator
// 'cordonctl policy who-can' uses (policyfile.Policy.WhoCan), each with
// the evidence a reviewer decides on (last use from the flow records,
// last sign-in, MFA, posture, the user's state) and flags (stale,
// orphaned, waiver, new); and the change a decided revocation makes (a
// deny rule in a policy file, or a group membership removal in the
// one-by-one directory).
//
// It only reads (the caller gives it the policy: the active file, or
// netmap.DirectoryPolicy); the state owner (controller/internal/state) stores the
// campaign and applies the revocations in its transactions.
package review

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Defaults of the flags' thresholds.
const (
	DefaultStaleDays  = 90
	DefaultRecentDays = 30
	// MaxLines bounds a campaign: a reviewer cannot decide more in a
	// quarter, and a larger scope should be split.
	MaxLines = 5000
)

// Scope kinds.
const (
	ScopePHI     = "phi"
	ScopeApp     = "app"
	ScopeGroup   = "group"
	ScopeSegment = "segment"
)

// Scope is what a campaign reviews.
type Scope struct {
	Kind string // ScopePHI, ScopeApp, ScopeGroup, ScopeSegment
	Name string // empty for ScopePHI
}

func (s Scope) String() string {
	if s.Kind == ScopePHI {
		return ScopePHI
	}
	return s.Kind + ":" + s.Name
}

// ParseScope reads "phi", "app:NAME", "group:NAME" or "segment:NAME".
func ParseScope(s string) (Scope, error) {
	if s == ScopePHI {
		return Scope{Kind: ScopePHI}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" || len(name) > 63 || (kind != ScopeApp && kind != ScopeGroup && kind != ScopeSegment) {
		return Scope{}, fmt.Errorf("scope %q is not understood: write phi, app:NAME, group:NAME or segment:NAME", clip(s))
	}
	return Scope{Kind: kind, Name: name}, nil
}

// Lookup finds the evidence the snapshot does not hold.
type Lookup interface {
	// LastUse is the time of user's newest flow to app (zero: none).
	LastUse(ctx context.Context, user, app string) (time.Time, error)
	// AddedSince reports whether user joined a group at or after t.
	AddedSince(ctx context.Context, user string, t time.Time) (bool, error)
}

// Input is what a campaign's lines are computed from.
type Input struct {
	Snapshot *store.Snapshot // the directory, devices, sessions, posture, identities
	Now      time.Time
	// StaleDays and RecentDays are the thresholds of the stale and new
	// flags (0: the defaults).
	StaleDays, RecentDays int
	Lookup                Lookup
	// Before is the policy in force RecentDays ago (nil: unknown; the new
	// flag then rests on user creation and group joins alone).
	Before *policyfile.Policy
}

// PolicyAt is the policy file in force at t, nil if none was (the
// directory then, whose history the policy versions do not keep).
func PolicyAt(ctx context.Context, st store.Store, t time.Time) (*policyfile.Policy, error) {
	vs, err := st.ListPolicyVersions(ctx)
	if err != nil {
		return nil, err
	}
	var at int64
	for _, v := range vs {
		if !v.CreatedAt.After(t) {
			at = v.Version
		}
	}
	if at == 0 {
		return nil, nil
	}
	v, err := st.GetPolicyVersion(ctx, at)
	if err != nil {
		return nil, err
	}
	pol, err := policyfile.Parse(v.File, v.Source)
	if err != nil {
		return nil, nil // a stricter reader refuses it now: unknown
	}
	return pol, nil
}

// Lines computes the lines of a campaign over scope from pol, numbered
// from 1.
func Lines(ctx context.Context, pol *policyfile.Policy, scope Scope, in Input) ([]store.ReviewLine, error) {
	apps, err := scopeApps(pol, scope)
	if err != nil {
		return nil, err
	}
	if in.StaleDays <= 0 {
		in.StaleDays = DefaultStaleDays
	}
	if in.RecentDays <= 0 {
		in.RecentDays = DefaultRecentDays
	}
	ev := newEvidence(in)
	var out []store.ReviewLine
	for _, app := range apps {
		es, err := pol.WhoCan(app)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if scope.Kind == ScopeGroup && e.Via != "group:"+scope.Name {
				continue
			}
			l := store.ReviewLine{
				N: len(out) + 1, Who: e.Who, Via: e.Via, App: e.App, Class: e.Class, Ports: e.Ports,
				Rule: e.Rule, Conditions: e.Conditions, Waiver: e.Waiver, DeniedBy: e.DeniedBy,
			}
			if user, ok := strings.CutPrefix(e.Who, "user:"); ok {
				l.User = user
			}
			if err := ev.fill(ctx, &l); err != nil {
				return nil, err
			}
			out = append(out, l)
			if len(out) > MaxLines {
				return nil, fmt.Errorf("%w: %s holds more than %d entitlements: review it in parts (one app, group or segment at a time)", ErrScope, scope, MaxLines)
			}
		}
	}
	return out, nil
}

// scopeApps are the apps of pol in scope, sorted; an unknown name is an
// error.
func scopeApps(pol *policyfile.Policy, s Scope) ([]string, error) {
	var out []string
	switch s.Kind {
	case ScopePHI:
		for _, n := range pol.AppNames {
			if pol.Apps[n].Classification == policyfile.ClassPHI {
				out = append(out, n)
			}
		}
	case ScopeApp:
		if _, ok := pol.Apps[s.Name]; !ok {
			return nil, fmt.Errorf("%w: app %q is not in the policy (cordonctl app list)", ErrScope, s.Name)
		}
		out = []string{s.Name}
	case ScopeSegment:
		if _, ok := pol.Segments[s.Name]; !ok {
			return nil, fmt.Errorf("%w: segment %q is not in the policy (cordonctl segment list)", ErrScope, s.Name)
		}
		for _, n := range pol.AppNames {
			if pol.Apps[n].Segment == s.Name {
				out = append(out, n)
			}
		}
	case ScopeGroup:
		if _, ok := pol.Groups[s.Name]; !ok {
			return nil, fmt.Errorf("%w: group %q is not in the policy (cordonctl group list)", ErrScope, s.Name)
		}
		out = pol.AppNames
	default:
		return nil, fmt.Errorf("%w: %q is not understood", ErrScope, s)
	}
	return out, nil
}

// evidence gathers a line's evidence from the snapshot and lookups.
type evidence struct {
	in            Input
	users         map[string]store.User
	devices       map[string][]store.Device // by user
	sessions      map[string]store.Session  // newest per device
	refused       map[string]bool           // users whose every identity the IdP refused
	staleCut, cut time.Time
	before        map[string]map[string]bool // app → who, in Before
	addedSince    map[string]bool
}

func newEvidence(in Input) *evidence {
	snap := in.Snapshot
	e := &evidence{in: in, users: map[string]store.User{}, devices: map[string][]store.Device{},
		sessions: map[string]store.Session{}, refused: map[string]bool{}, addedSince: map[string]bool{},
		staleCut: in.Now.AddDate(0, 0, -in.StaleDays), cut: in.Now.AddDate(0, 0, -in.RecentDays)}
	for _, u := range snap.Users {
		e.users[u.Name] = u
	}
	for _, d := range snap.Devices {
		if d.RevokedAt.IsZero() {
			e.devices[d.User] = append(e.devices[d.User], d)
		}
	}
	for _, s := range snap.Sessions {
		if old, ok := e.sessions[s.DeviceID]; !ok || s.StartedAt.After(old.StartedAt) {
			e.sessions[s.DeviceID] = s
		}
	}
	valid := map[string]bool{}
	for _, id := range snap.Identities {
		if id.InvalidAt.IsZero() {
			valid[id.User] = true
		} else {
			e.refused[id.User] = true
		}
	}
	for u := range valid {
		delete(e.refused, u)
	}
	if in.Before != nil {
		e.before = map[string]map[string]bool{}
	}
	return e
}

func (e *evidence) fill(ctx context.Context, l *store.ReviewLine) error {
	if l.Waiver != "" {
		l.Flags = append(l.Flags, store.FlagWaiver)
	}
	if l.User == "" {
		// An IdP group or a device tag: no one user's evidence. Its
		// members are reviewed at the IdP or in the tag's assignment.
		return nil
	}
	ev := &l.Evidence
	u, known := e.users[l.User]
	switch {
	case !known:
		ev.UserState = "unknown"
	case u.Disabled:
		ev.UserState = "disabled"
	case e.refused[l.User]:
		ev.UserState = "idp-refused"
	default:
		ev.UserState = "active"
	}
	var posture []string
	for _, d := range e.devices[l.User] {
		ev.MFAAt = later(ev.MFAAt, d.MFAAt)
		if s, ok := e.sessions[d.ID]; ok {
			ev.LastSignIn = later(ev.LastSignIn, s.StartedAt)
			ev.MFAAt = later(ev.MFAAt, s.MFAAt)
		}
		if p, ok := e.in.Snapshot.Posture[d.ID]; ok {
			posture = append(posture, d.ID+": "+orNone(strings.Join(p.Passing, ",")))
		} else {
			posture = append(posture, d.ID+": no report")
		}
	}
	ev.Posture = strings.Join(posture, "; ")
	var err error
	if ev.LastUse, err = e.in.Lookup.LastUse(ctx, l.User, l.App); err != nil {
		return fmt.Errorf("last use of %s by %s: %w", l.App, l.User, err)
	}
	if ev.LastUse.Before(e.staleCut) {
		l.Flags = append(l.Flags, store.FlagStale)
	}
	if ev.UserState != "active" {
		l.Flags = append(l.Flags, store.FlagOrphaned)
	}
	isNew, err := e.isNew(ctx, l, u, known)
	if err != nil {
		return err
	}
	if isNew {
		l.Flags = append(l.Flags, store.FlagNew)
	}
	slices.Sort(l.Flags)
	return nil
}

// isNew reports whether the line's access was granted within RecentDays:
// the user was created since, joined a group since, or the policy then
// did not grant it.
func (e *evidence) isNew(ctx context.Context, l *store.ReviewLine, u store.User, known bool) (bool, error) {
	if known && u.CreatedAt.After(e.cut) {
		return true, nil
	}
	if e.before != nil {
		who, ok := e.before[l.App]
		if !ok {
			who = map[string]bool{}
			if es, err := e.in.Before.WhoCan(l.App); err == nil {
				for _, x := range es {
					who[x.Who] = true
				}
			}
			e.before[l.App] = who
		}
		if !who[l.Who] {
			return true, nil
		}
	}
	added, ok := e.addedSince[l.User]
	if !ok {
		var err error
		if added, err = e.in.Lookup.AddedSince(ctx, l.User, e.cut); err != nil {
			return false, fmt.Errorf("group joins of %s: %w", l.User, err)
		}
		e.addedSince[l.User] = added
	}
	return added, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func orNone(s string) string {
	if s == "" {
		return "passes no check"
	}
	return s
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// StoreLookup is the Lookup of the audit trail: the newest flow.allow
// record of the user to the app, and admin.group.add_member records,
// found through the audit search's key index.
func StoreLookup(st store.Store) Lookup { return storeLookup{st} }

type storeLookup struct{ st store.Store }

func (s storeLookup) LastUse(ctx context.Context, user, app string) (time.Time, error) {
	page, err := s.st.SearchAudit(ctx, store.AuditQuery{Type: string(audit.FlowAllow), User: user, App: app, Limit: 1})
	if err != nil || len(page.Events) == 0 {
		return time.Time{}, err
	}
	return page.Events[0].Time, nil
}

func (s storeLookup) AddedSince(ctx context.Context, user string, t time.Time) (bool, error) {
	page, err := s.st.SearchAudit(ctx, store.AuditQuery{Type: string(audit.AdminGroupAddMember), User: user, Since: t, Limit: 1})
	if err != nil {
		return false, err
	}
	return len(page.Events) > 0, nil
}

// ErrScope is returned for a scope the policy has nothing of, or too
// much.
var ErrScope = errors.New("scope")

// ErrNotRevocable is returned for a line whose access a review cannot
// take away by itself (an IdP group: that is done at the IdP).
var ErrNotRevocable = errors.New("not revocable by a review")
