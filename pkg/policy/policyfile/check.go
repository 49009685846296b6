package policyfile

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/pkg/policy"
)

// check resolves every reference and enforces the secure defaults.
func (p *parser) check(pol *Policy) {
	pol.GroupNames = slices.Sorted(maps.Keys(pol.Groups))
	pol.SegmentNames = slices.Sorted(maps.Keys(pol.Segments))
	pol.AppNames = slices.Sorted(maps.Keys(pol.Apps))

	for _, name := range pol.GroupNames {
		g := pol.Groups[name]
		for _, sub := range g.Groups {
			if _, ok := pol.Groups[sub]; !ok {
				p.errAt(g.Pos, "group %q includes unknown group %q; define it under groups or remove it%s", name, sub, suggest(sub, pol.GroupNames))
			}
		}
	}
	if cycle := groupCycle(pol); cycle != nil {
		p.errAt(pol.Groups[cycle[0]].Pos, "groups include each other in a cycle (%s); remove one of the includes", strings.Join(cycle, " → "))
	} else {
		pol.derive()
	}

	for _, name := range pol.AppNames {
		a := pol.Apps[name]
		sg, ok := pol.Segments[a.Segment]
		if !ok {
			if a.Segment != "" {
				p.errAt(a.Pos, "app %q is in unknown segment %q; define it under segments%s", name, a.Segment, suggest(a.Segment, pol.SegmentNames))
			}
			continue
		}
		for _, addr := range a.Addrs {
			in := false
			for _, sp := range sg.Prefixes {
				in = in || (sp.Bits() <= addr.Bits() && sp.Contains(addr.Addr()))
			}
			if !in {
				p.errAt(a.Pos, "app %q address %s is outside its segment %q (%s); move the app or widen the segment", name, addr, a.Segment, prefixList(sg))
			}
		}
	}

	byTag, byClass := map[string][]string{}, map[string][]string{}
	for _, name := range pol.AppNames {
		a := pol.Apps[name]
		for _, t := range a.Tags {
			byTag[t] = append(byTag[t], name)
		}
		byClass[string(a.Classification)] = append(byClass[string(a.Classification)], name)
	}
	names := map[string]Pos{}
	for _, r := range slices.Concat(pol.Rules, pol.Denies) {
		if r.Name == "" {
			continue
		}
		if at, dup := names[r.Name]; dup {
			p.errAt(r.Pos, "rule name %q is already used at line %d; rule names are unique across rules and deny", r.Name, at.Line)
		}
		names[r.Name] = r.Pos
		p.checkRule(pol, r, byTag, byClass)
	}

	for _, t := range pol.Tests {
		if _, ok := pol.Apps[t.App]; !ok && t.App != "" {
			p.errAt(t.Pos, "test %q names unknown app %q; name an app defined under apps%s", t.Name, t.App, suggest(t.App, pol.AppNames))
		}
		for _, c := range t.Device.Posture {
			if _, ok := pol.PostureChecks[c]; !ok {
				p.errAt(t.Pos, "test %q names unknown posture check %q; declare it under posture_checks", t.Name, c)
			}
		}
		if t.Reason != "" && !knownReason(t.Reason) {
			p.errAt(t.Pos, "test %q expects unknown reason %q; use one of %s", t.Name, t.Reason, strings.Join(reasonNames(), ", "))
		}
	}
}

func (p *parser) checkRule(pol *Policy, r *Rule, byTag, byClass map[string][]string) {
	for _, s := range r.From {
		if s.Kind == SubjectGroup {
			if _, ok := pol.Groups[s.Name]; !ok {
				p.errAt(r.Pos, "rule %q: from group %q is not defined; define it under groups%s", r.Name, s.Name, suggest(s.Name, pol.GroupNames))
			}
		}
	}
	apps := map[string]bool{}
	for _, t := range r.To {
		switch t.Kind {
		case TargetApp:
			if _, ok := pol.Apps[t.Name]; !ok {
				p.errAt(r.Pos, "rule %q: to app %q is not defined; define it under apps%s", r.Name, t.Name, suggest(t.Name, pol.AppNames))
				continue
			}
			apps[t.Name] = true
		case TargetTag:
			for _, name := range byTag[t.Name] {
				apps[name] = true
			}
		case TargetClass:
			for _, name := range byClass[t.Name] {
				apps[name] = true
			}
		}
	}
	r.apps = slices.Sorted(maps.Keys(apps))
	for _, name := range r.apps {
		if r.Ports != nil && len(ruleServices(pol.Apps[name], r)) == 0 {
			p.errAt(r.Pos, "rule %q: ports %s match none of app %q's ports (%s); narrow to ports the app serves", r.Name, serviceList(r.Ports), name, serviceList(pol.Apps[name].Services))
		}
	}
	for _, c := range r.When.Posture {
		if _, ok := pol.PostureChecks[c]; !ok {
			p.errAt(r.Pos, "rule %q: posture check %q is not declared; add it under posture_checks%s", r.Name, c, suggest(c, slices.Sorted(maps.Keys(pol.PostureChecks))))
		}
	}
	if r.Deny {
		return
	}
	if r.Waiver == "" && (!r.When.MFA || len(r.When.Posture) == 0) {
		for _, name := range r.apps {
			if pol.Apps[name].Classification == ClassPHI {
				p.errAt(r.Pos, "rule %q reaches phi app %q without MFA and a posture check; add when: {mfa: true, posture: [CHECK]}, or a waiver: with the written reason", r.Name, name)
				break
			}
		}
	}
}

func knownReason(s string) bool { return slices.Contains(reasonNames(), s) }

func reasonNames() []string {
	var out []string
	for r := policy.ReasonAllowed; r <= policy.ReasonExpression; r++ {
		if r != policy.ReasonUnknownPeer {
			out = append(out, r.String())
		}
	}
	return out
}

func suggest(s string, names []string) string {
	if c := closest(s, names); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}

func prefixList(s *Segment) string {
	parts := make([]string, len(s.Prefixes))
	for i, p := range s.Prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

func serviceList(svcs []Service) string {
	parts := make([]string, len(svcs))
	for i, s := range svcs {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// groupCycle returns a cycle of group includes, or nil.
func groupCycle(pol *Policy) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(g string) []string {
		color[g] = grey
		stack = append(stack, g)
		for _, sub := range pol.Groups[g].Groups {
			if _, ok := pol.Groups[sub]; !ok {
				continue
			}
			switch color[sub] {
			case grey:
				i := slices.Index(stack, sub)
				return append(slices.Clone(stack[i:]), sub)
			case white:
				if c := visit(sub); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[g] = black
		return nil
	}
	for _, g := range pol.GroupNames {
		if color[g] == white {
			if c := visit(g); c != nil {
				return c
			}
		}
	}
	return nil
}

// derive computes transitive group membership.
func (pol *Policy) derive() {
	pol.groupUsers = map[string]map[string]bool{}
	pol.groupIdP = map[string][]IdPRef{}
	var expand func(g string) (map[string]bool, []IdPRef)
	expand = func(g string) (map[string]bool, []IdPRef) {
		if u, ok := pol.groupUsers[g]; ok {
			return u, pol.groupIdP[g]
		}
		users := map[string]bool{}
		var idp []IdPRef
		grp := pol.Groups[g]
		for _, m := range grp.Members {
			users[m] = true
		}
		idp = append(idp, grp.IdP...)
		for _, sub := range grp.Groups {
			if _, ok := pol.Groups[sub]; !ok {
				continue
			}
			u, i := expand(sub)
			for m := range u {
				users[m] = true
			}
			idp = append(idp, i...)
		}
		slices.SortFunc(idp, func(a, b IdPRef) int { return strings.Compare(a.Claim+"\x00"+a.Value, b.Claim+"\x00"+b.Value) })
		idp = slices.Compact(idp)
		pol.groupUsers[g], pol.groupIdP[g] = users, idp
		return users, idp
	}
	pol.userGroups = map[string][]string{}
	for _, g := range pol.GroupNames {
		users, _ := expand(g)
		for u := range users {
			pol.userGroups[u] = append(pol.userGroups[u], g)
		}
	}
	for u := range pol.userGroups {
		slices.Sort(pol.userGroups[u])
	}
}

// GroupsOf returns the groups user belongs to, directly, through nested
// groups, or through the IdP groups in idp; sorted.
func (pol *Policy) GroupsOf(user string, idp []IdPRef) []string {
	out := slices.Clone(pol.userGroups[user])
	if len(idp) > 0 {
		for _, g := range pol.GroupNames {
			if slices.Contains(out, g) {
				continue
			}
			for _, r := range pol.groupIdP[g] {
				if slices.Contains(idp, r) {
					out = append(out, g)
					break
				}
			}
		}
		slices.Sort(out)
	}
	return out
}

// Users returns every local user the policy names (group members and
// user: subjects), sorted.
func (pol *Policy) Users() []string {
	set := map[string]bool{}
	for u := range pol.userGroups {
		set[u] = true
	}
	for _, r := range slices.Concat(pol.Rules, pol.Denies) {
		for _, s := range r.From {
			if s.Kind == SubjectUser {
				set[s.Name] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// ruleServices is what rule r admits of app a: the app's services narrowed
// to the rule's ports (all of them when the rule names none).
func ruleServices(a *App, r *Rule) []Service {
	if r.Ports == nil {
		return a.Services
	}
	var out []Service
	for _, as := range a.Services {
		for _, rs := range r.Ports {
			proto := as.Proto
			switch {
			case as.Proto == rs.Proto:
			case as.Proto == policy.ProtoAny:
				proto = rs.Proto
			case rs.Proto == policy.ProtoAny:
			default:
				continue
			}
			ported := proto == policy.ProtoTCP || proto == policy.ProtoUDP || proto == policy.ProtoAny
			if !ported {
				out = append(out, Service{Proto: proto})
				continue
			}
			ports := intersect(rangesOrAll(as.Ports), rangesOrAll(rs.Ports))
			if len(ports) > 0 {
				out = append(out, Service{Proto: proto, Ports: ports})
			}
		}
	}
	return out
}

func rangesOrAll(r []policy.PortRange) []policy.PortRange {
	if len(r) == 0 {
		return []policy.PortRange{policy.AllPorts}
	}
	return r
}

func intersect(a, b []policy.PortRange) []policy.PortRange {
	var out []policy.PortRange
	for _, x := range a {
		for _, y := range b {
			lo, hi := max(x.First, y.First), min(x.Last, y.Last)
			if lo <= hi {
				out = append(out, policy.PortRange{First: lo, Last: hi})
			}
		}
	}
	return out
}
