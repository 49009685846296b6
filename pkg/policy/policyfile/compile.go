package policyfile

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Device is a directory entry the compiler needs: an enrolled device, its
// owner and what the IdP says about the owner.
type Device struct {
	ID   string
	User string
	Addr netip.Addr // overlay address
	Tags []string
	IdP  []IdPRef
}

// WireRules is the whole policy in the gateway's wire form, one
// [policy.Rule] per (rule, app, service), sorted by ID. Segment, if not
// empty, keeps only the rules for apps in that segment.
func (pol *Policy) WireRules(segment string) []policy.Rule {
	var out []policy.Rule
	for _, r := range slices.Concat(pol.Denies, pol.Rules) {
		for _, name := range r.apps {
			a := pol.Apps[name]
			if segment != "" && a.Segment != segment {
				continue
			}
			for i, s := range ruleServices(a, r) {
				w := policy.Rule{
					ID: WireID(r.Name, name, i), App: name, Name: r.Name, Deny: r.Deny,
					Dst: slices.Clone(a.Addrs), Proto: s.Proto, Ports: slices.Clone(s.Ports),
				}
				if !r.Deny && !r.When.IsZero() {
					c := r.When
					w.When = &c
				}
				out = append(out, w)
			}
		}
	}
	slices.SortFunc(out, func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Peers computes, for each device, the wire rules that apply to it (those
// whose subjects name its user, one of the user's groups, or one of its
// tags), restricted to wireRules, sorted by ID. Devices with no rule are
// left out. The result is sorted by device ID; devices with the same
// identity share one Rules slice (read-only). Devices with the same user, tags and IdP
// claims share one computation, so cost grows with distinct identities,
// not devices.
func (pol *Policy) Peers(devices []Device, wireRules []policy.Rule) []policy.Peer {
	if !slices.IsSortedFunc(wireRules, func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) }) {
		wireRules = slices.SortedFunc(slices.Values(wireRules), func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) })
	}
	byName := map[string][]int{} // rule name → positions in wireRules
	for i, w := range wireRules {
		byName[w.Name] = append(byName[w.Name], i)
	}
	// Subject index: the ordinals (deny rules first, then allow rules, in
	// file order) of the rules naming each user, group, tag.
	all := slices.Concat(pol.Denies, pol.Rules)
	idx := map[Subject][]int{}
	byOrd := make([][]int, len(all))
	for i, r := range all {
		byOrd[i] = byName[r.Name]
		if len(byOrd[i]) == 0 {
			continue
		}
		for _, s := range r.From {
			idx[s] = append(idx[s], i)
		}
	}
	cache := map[string][]policy.RuleID{}
	var ords, pos []int
	var out []policy.Peer
	for _, d := range devices {
		groups := pol.GroupsOf(d.User, d.IdP)
		_, named := idx[Subject{SubjectUser, d.User}]
		key := identityKey(d, groups, named)
		ids, ok := cache[key]
		if !ok {
			ords = append(ords[:0], idx[Subject{SubjectUser, d.User}]...)
			for _, g := range groups {
				ords = append(ords, idx[Subject{SubjectGroup, g}]...)
			}
			for _, t := range d.Tags {
				ords = append(ords, idx[Subject{SubjectTag, t}]...)
			}
			pos = pos[:0]
			for _, o := range ords {
				pos = append(pos, byOrd[o]...)
			}
			slices.Sort(pos) // wireRules is sorted by ID, so IDs come out sorted
			pos = slices.Compact(pos)
			ids = make([]policy.RuleID, len(pos))
			for i, p := range pos {
				ids[i] = wireRules[p].ID
			}
			cache[key] = ids // shared by every device with this identity
		}
		if len(ids) == 0 {
			continue
		}
		out = append(out, policy.Peer{DeviceID: d.ID, User: d.User, Addr: d.Addr, Rules: ids})
	}
	slices.SortFunc(out, func(a, b policy.Peer) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	return out
}

// identityKey is what decides a device's rules: its user's groups, its
// tags, and its user only when a rule names that user.
func identityKey(d Device, groups []string, userNamed bool) string {
	var b strings.Builder
	if userNamed {
		b.WriteString(d.User)
	}
	for _, g := range groups {
		b.WriteString("\x00g")
		b.WriteString(g)
	}
	tags := slices.Clone(d.Tags)
	slices.Sort(tags)
	for _, t := range tags {
		b.WriteString("\x00t")
		b.WriteString(t)
	}
	return b.String()
}

// Compile builds the compiled policy a gateway serving segment (empty: all
// segments) would enforce for devices.
func (pol *Policy) Compile(segment string, devices []Device) (*policy.Compiled, error) {
	rules := pol.WireRules(segment)
	c, err := policy.Compile(rules, pol.Peers(devices, rules))
	if err != nil {
		return nil, fmt.Errorf("compile policy: %w", err)
	}
	return c, nil
}
