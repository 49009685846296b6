package policyfile

import (
	"maps"
	"slices"
)

// DirectoryRule is one rule of the controller's one-by-one directory: a
// group may reach an app, on every service of the app, without conditions.
type DirectoryRule struct {
	Name, Group, App string
}

// FromDirectory is the policy the controller's one-by-one directory
// (cordonctl segment/app/group/rule) grants, so that maps come from one
// computation whether an admin applied a file or built the directory step
// by step. It is built from data, not parsed: the directory is checked as
// it is written (the store refuses unknown references), and the language's
// secure defaults (no PHI without MFA and posture, or a waiver) are not
// applied, because the directory cannot state conditions (Export writes
// them as waivers when it becomes a file).
//
// Apps keep their services as given, including protocol "any" with ports,
// which a file cannot state. Rules name one group and one app; references
// to groups or apps not given are kept and reach nothing. The maps and
// slices given become the policy's; the caller must not change them.
func FromDirectory(groups []*Group, segments []*Segment, apps []*App, rules []DirectoryRule) *Policy {
	pol := &Policy{
		Version:  1,
		Groups:   make(map[string]*Group, len(groups)),
		Segments: make(map[string]*Segment, len(segments)),
		Apps:     make(map[string]*App, len(apps)),
	}
	for _, g := range groups {
		pol.Groups[g.Name] = g
	}
	for _, s := range segments {
		pol.Segments[s.Name] = s
	}
	for _, a := range apps {
		pol.Apps[a.Name] = a
	}
	pol.GroupNames = slices.Sorted(maps.Keys(pol.Groups))
	pol.SegmentNames = slices.Sorted(maps.Keys(pol.Segments))
	pol.AppNames = slices.Sorted(maps.Keys(pol.Apps))
	for _, r := range rules {
		rule := &Rule{
			Name: r.Name,
			From: []Subject{{Kind: SubjectGroup, Name: r.Group}},
			To:   []Target{{Kind: TargetApp, Name: r.App}},
		}
		if _, ok := pol.Apps[r.App]; ok {
			rule.apps = []string{r.App}
		}
		pol.Rules = append(pol.Rules, rule)
	}
	slices.SortFunc(pol.Rules, func(a, b *Rule) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	pol.derive() // directory groups have members only: no nesting, no cycles
	return pol
}

// WithMembers returns pol with the groups named in members given those
// members, sharing everything else with pol, which it does not change.
// It is for a member joining or leaving a group: it re-derives the groups
// and users that moved instead of every group (derive was a quarter of a
// member change at 10,000 users). ok is false, and the caller builds the
// policy anew, when a group named is not in pol or is not a plain group
// of members (nested groups or IdP groups: a change there reaches other
// groups).
func (pol *Policy) WithMembers(members map[string][]string) (out *Policy, ok bool) {
	for g := range members {
		grp, ok := pol.Groups[g]
		if !ok || len(grp.Groups) > 0 || len(grp.IdP) > 0 {
			return nil, false
		}
	}
	for _, grp := range pol.Groups {
		if len(grp.Groups) > 0 {
			return nil, false // a group that includes one named would change too
		}
	}
	out = &Policy{
		Version: pol.Version, Groups: maps.Clone(pol.Groups), PostureChecks: pol.PostureChecks,
		Segments: pol.Segments, Apps: pol.Apps, Rules: pol.Rules, Denies: pol.Denies, Tests: pol.Tests,
		GroupNames: pol.GroupNames, SegmentNames: pol.SegmentNames, AppNames: pol.AppNames,
		groupUsers: maps.Clone(pol.groupUsers), groupIdP: pol.groupIdP, userGroups: maps.Clone(pol.userGroups),
		warnings: pol.warnings,
	}
	moved := map[string]bool{}
	for g, m := range members {
		grp := *pol.Groups[g]
		grp.Members = m
		out.Groups[g] = &grp
		users := make(map[string]bool, len(m))
		for _, u := range m {
			users[u] = true
		}
		for u := range users {
			if !pol.groupUsers[g][u] {
				moved[u] = true
			}
		}
		for u := range pol.groupUsers[g] {
			if !users[u] {
				moved[u] = true
			}
		}
		out.groupUsers[g] = users
	}
	for u := range moved {
		var gs []string
		for _, g := range out.GroupNames { // sorted, as derive leaves them
			if out.groupUsers[g][u] {
				gs = append(gs, g)
			}
		}
		if gs == nil {
			delete(out.userGroups, u)
		} else {
			out.userGroups[u] = gs
		}
	}
	return out, true
}
