package netmap

import (
	"maps"
	"slices"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// NewIndexFrom indexes snap, the snapshot of prev patched with change c
// (store.Snapshot.Patch), reusing what c cannot have changed: it re-indexes
// only the users, groups and devices c covers, and recomputes the rules of
// only the devices whose identity may have changed. Indexing every device
// again cost a change about 40 ms at 10,000 devices; this costs what the
// change touches (and a copy of a few maps). When c is not a partial
// change, or the policy, rules, apps, segments or gateways differ from
// prev's, it is NewIndexCached. The property test (affected_test.go)
// checks its maps against ones from scratch.
func NewIndexFrom(prev *Index, snap *store.Snapshot, c store.Change, cache *PolicyCache) *Index {
	if prev == nil || !c.FewEntities() || !sameDirectory(prev.source, snap) {
		return NewIndexCached(snap, cache)
	}
	if !slices.IsSortedFunc(snap.Devices, func(a, b store.Device) int { return cmpString(a.ID, b.ID) }) {
		return NewIndexCached(snap, cache)
	}
	cover := prev.source.Cover(c)
	users := set(cover.Users)
	groups := set(cover.Groups)
	devs := set(cover.Devices)
	for _, d := range snap.Devices {
		if users[d.User] {
			devs[d.ID] = true
		}
	}
	for _, g := range snap.Groups {
		if slices.ContainsFunc(g.Members, func(m string) bool { return users[m] }) {
			groups[g.Name] = true
		}
	}

	ix := &Index{
		source: snap,
		snap: &store.Snapshot{
			Segments: prev.snap.Segments, Apps: prev.snap.Apps, Rules: prev.snap.Rules, Gateways: prev.snap.Gateways,
			Users: snap.Users, Groups: snap.Groups, Devices: snap.Devices,
			Posture: snap.Posture, Identities: snap.Identities,
		},
		apps: prev.apps, segments: prev.segments, rulesByApp: prev.rulesByApp, gwBySeg: prev.gwBySeg,
		gateways: prev.gateways, rulesByGroup: prev.rulesByGroup,
		users:        maps.Clone(prev.users),
		devices:      maps.Clone(prev.devices),
		userDevices:  maps.Clone(prev.userDevices),
		groupMembers: maps.Clone(prev.groupMembers),
	}

	// Users.
	for u := range users {
		delete(ix.users, u)
	}
	for _, u := range snap.Users {
		if users[u.Name] {
			ix.users[u.Name] = u
		}
	}
	// Devices, and the device lists of their users (old and new).
	owners := map[string]bool{}
	for id := range devs {
		if d, ok := prev.devices[id]; ok {
			owners[d.User] = true
		}
		delete(ix.devices, id)
	}
	for _, d := range snap.Devices {
		if devs[d.ID] {
			ix.devices[d.ID] = d
			owners[d.User] = true
		}
	}
	for u := range owners {
		list := slices.DeleteFunc(slices.Clone(prev.userDevices[u]), func(id string) bool { return devs[id] })
		for _, d := range snap.Devices {
			if devs[d.ID] && d.User == u {
				list = append(list, d.ID)
			}
		}
		slices.Sort(list)
		if len(list) == 0 {
			delete(ix.userDevices, u)
		} else {
			ix.userDevices[u] = list
		}
	}
	// Groups: members who joined or left change their users' groups.
	moved := maps.Clone(users) // users whose groups may differ
	now := map[string][]string{}
	for _, g := range snap.Groups {
		if groups[g.Name] {
			now[g.Name] = g.Members
		}
	}
	for g := range groups {
		is := now[g]
		membersMoved(prev.groupMembers[g], is, moved)
		if _, ok := now[g]; ok {
			ix.groupMembers[g] = is
		} else {
			delete(ix.groupMembers, g)
		}
	}
	// Rules per device: those whose user changed (enabled, identities,
	// groups) or which changed themselves.
	redo := maps.Clone(devs)
	for u := range moved {
		for _, id := range ix.userDevices[u] {
			redo[id] = true
		}
		for _, id := range prev.userDevices[u] {
			redo[id] = true
		}
	}
	ix.pol = prev.pol.patched(ix, snap, groups, moved, redo)
	return ix
}

// sameDirectory reports whether a and b (a patched from b or b from a)
// share what NewIndexFrom reuses: the policy, rules, apps, segments and
// gateways.
func sameDirectory(a, b *store.Snapshot) bool {
	return a.Policy == b.Policy && sameSlice(a.Segments, b.Segments) && sameSlice(a.Apps, b.Apps) &&
		sameSlice(a.Gateways, b.Gateways) && slices.EqualFunc(a.Rules, b.Rules, func(x, y store.Rule) bool {
		return x.Name == y.Name && x.Group == y.Group && x.App == y.App
	})
}

// sameSlice reports whether a and b are the same slice (not only equal).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// patched is p for index ix after a partial change: the directory policy
// rebuilt when its groups changed, the IdP claims of users re-read, and
// the rules of devices in redo computed again (the others' are kept).
func (p *policyIndex) patched(ix *Index, snap *store.Snapshot, groups, users, redo map[string]bool) *policyIndex {
	out := *p
	if p.directory != nil {
		if len(groups) > 0 {
			// Members joined or left: the wire rules stay (they name apps,
			// not members); only the policy's groups change.
			members := make(map[string][]string, len(groups))
			for g := range groups {
				if m, ok := ix.groupMembers[g]; ok {
					members[g] = m
				}
			}
			var pol *policyfile.Policy
			if p.pol != nil && len(members) == len(groups) { // none deleted
				pol, _ = p.pol.WithMembers(members)
			}
			if pol != nil {
				out.pol = pol
			} else {
				d := directoryPolicy(ix)
				out.pol, out.rules, out.byID, out.named, out.classList = d.pol, d.rules, d.byID, d.named, d.classList
			}
		}
		out.directory = ix.apps
	}
	if out.pol == nil {
		return &out
	}
	out.idp = maps.Clone(p.idp)
	if len(users) > 0 {
		for u := range users {
			delete(out.idp, u)
		}
		var ids []store.Identity
		for _, id := range snap.Identities {
			if users[id.User] {
				ids = append(ids, id)
			}
		}
		maps.Copy(out.idp, idpRefs(ids))
	}
	out.peers = maps.Clone(p.peers)
	var devs []policyfile.Device
	for id := range redo {
		delete(out.peers, id)
		d, ok := ix.devices[id]
		if !ok {
			continue
		}
		if u, ok := ix.users[d.User]; ok && !u.Disabled {
			devs = append(devs, policyfile.Device{ID: d.ID, User: d.User, Addr: d.OverlayAddr, IdP: out.idp[d.User]})
		}
	}
	for _, pe := range out.pol.Peers(devs, out.peerRules()) {
		out.peers[pe.DeviceID] = pe.Rules
	}
	return &out
}
