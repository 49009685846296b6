package netmap

import (
	"net/netip"
	"slices"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// Incremental maps. A committed mutation comes with a [store.Change] naming
// what it changed; [Affects] works out, from the index the agents' maps
// were last computed from (old) and the index after the change (cur),
// which agents' maps may differ, so only those are computed again.
//
// The rule it keeps: for every agent it leaves out, the map cur gives is
// the map old gave. It may include agents whose map turns out the same
// (their push is then dropped as unchanged); it must never leave out one
// whose map changed. The property test (affected_test.go) checks exactly
// that against a real store, for random sequences of changes.
//
// What reaches whom (each relation read in old and in cur, so an agent
// that gains and one that loses are both found):
//
//	user u          → u's devices
//	group g         → the devices of users who joined or left g; if g's
//	                  rules changed, their apps, as below
//	app a           → the gateways of a's segment; the devices entitled to a
//	                  (rules of a → groups → members → devices); a rule
//	                  change is named by its app
//	segment s       → the gateways enrolled in s; s's apps, as above
//	gateway g       → g; every device that is or was g's peer (its client
//	                  map carries g, and g may now serve a segment in
//	                  another gateway's place)
//	device d        → d; every gateway d is or was a peer of
//	policy, all     → everyone
//
// and, whatever the change named, everyone when the active policy or the
// DNS zones (sent to every agent) differ between old and cur. Time-driven
// changes (a session crossing an idle limit, a step-up) arrive as Devices
// from whoever notices them.

// Affected is the agents a change reaches: all of them, or the gateways
// and devices named.
type Affected struct {
	All      bool
	Gateways map[string]bool
	Devices  map[string]bool
	// Whole is the gateways in Gateways whose maps may differ in more
	// than the peer entries of Devices (their segments, apps or rules, or
	// the gateway itself changed); the others' maps can be patched
	// (Index.PatchGatewayMap).
	Whole map[string]bool
}

// PeersOnly reports whether gateway id's map may differ only in the peer
// entries of the devices in Devices.
func (a Affected) PeersOnly(id string) bool { return !a.All && a.Gateways[id] && !a.Whole[id] }

// Gateway reports whether gateway id's map may have changed.
func (a Affected) Gateway(id string) bool { return a.All || a.Gateways[id] }

// Device reports whether device id's map may have changed.
func (a Affected) Device(id string) bool { return a.All || a.Devices[id] }

// Affects returns the agents whose maps may differ between old (nil: none
// computed yet) and cur after change c. Both indexes must carry the same
// session gating and public addresses as the maps computed from them; dns
// is the configuration the maps' DNS zones come from.
func Affects(old, cur *Index, c store.Change, dns DNSConfig) Affected {
	if old == nil || c.All || c.Policy || !samePolicy(old, cur) ||
		!slices.Equal(old.DNSZones(dns), cur.DNSZones(dns)) {
		return Affected{All: true}
	}
	aff := Affected{Gateways: map[string]bool{}, Devices: map[string]bool{}, Whole: map[string]bool{}}
	both := [2]*Index{old, cur}
	devs := map[string]bool{} // devices whose own entitlements may have changed

	for _, id := range c.Devices {
		devs[id] = true
	}
	users := map[string]bool{}
	for _, u := range c.Users {
		users[u] = true
	}
	apps := map[string]bool{}
	for _, a := range c.Apps {
		apps[a] = true
	}
	for _, g := range c.Groups {
		// Members who joined or left; and, if the group's rules changed
		// (a rule change may be named by its group or its app), their
		// apps, which reach every member.
		for _, r := range ruleDiff(old.rulesByGroup[g], cur.rulesByGroup[g]) {
			apps[r.App] = true
		}
		membersMoved(old.groupMembers[g], cur.groupMembers[g], users)
	}
	for u := range users {
		for _, ix := range both {
			for _, id := range ix.userDevices[u] {
				devs[id] = true
			}
		}
	}

	for _, s := range c.Segments {
		for _, ix := range both {
			for _, g := range ix.gwBySeg[s] {
				aff.Gateways[g.ID], aff.Whole[g.ID] = true, true
			}
			for _, a := range ix.snap.Apps {
				if a.Segment == s {
					apps[a.Name] = true
				}
			}
			for _, a := range ix.apps { // under a policy snap.Apps is the policy's
				if a.Segment == s {
					apps[a.Name] = true
				}
			}
		}
	}
	for a := range apps {
		for _, ix := range both {
			if app, ok := ix.apps[a]; ok {
				for _, g := range ix.gwBySeg[app.Segment] {
					aff.Gateways[g.ID], aff.Whole[g.ID] = true, true
				}
			}
			for _, r := range ix.rulesByApp[a] {
				for _, u := range ix.groupMembers[r.Group] {
					for _, id := range ix.userDevices[u] {
						devs[id] = true
					}
				}
			}
		}
	}

	// A changed gateway changes its peers' client maps.
	for _, g := range c.Gateways {
		aff.Gateways[g], aff.Whole[g] = true, true
		for _, ix := range both {
			if gw, ok := ix.gateways[g]; ok {
				for id := range ix.peersOf(gw) {
					aff.Devices[id] = true
				}
			}
		}
	}
	// A device whose entitlements changed changes the maps of the gateways
	// it is or was a peer of.
	for id := range devs {
		aff.Devices[id] = true
		for _, ix := range both {
			if d, ok := ix.devices[id]; ok {
				ix.peerOf(d, aff.Gateways)
			}
		}
	}
	return aff
}

// membersMoved adds to out the members in only one of was and is (a
// group's members before and after; group "all" may have 10,000).
func membersMoved(was, is []string, out map[string]bool) {
	in := make(map[string]bool, len(was))
	for _, u := range was {
		in[u] = true
	}
	for _, u := range is {
		if in[u] {
			delete(in, u)
		} else {
			out[u] = true
		}
	}
	for u := range in {
		out[u] = true
	}
}

// ruleDiff returns the rules in only one of a and b (by name, group and
// app).
func ruleDiff(a, b []store.Rule) []store.Rule {
	same := func(x, y store.Rule) bool { return x.Name == y.Name && x.Group == y.Group && x.App == y.App }
	var out []store.Rule
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y store.Rule) bool { return same(x, y) }) {
			out = append(out, x)
		}
	}
	for _, y := range b {
		if !slices.ContainsFunc(a, func(x store.Rule) bool { return same(x, y) }) {
			out = append(out, y)
		}
	}
	return out
}

// samePolicy reports whether old and cur were built from the same active
// policy (a policy applied always reaches everyone, named or not).
func samePolicy(old, cur *Index) bool {
	a, b := old.snap.Policy, cur.snap.Policy
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Version == b.Version && a.SHA256 == b.SHA256
}

// peerOf adds to out the gateways whose maps may list device d as a peer:
// those serving an app d has a rule for. It ignores sessions and
// classifications (a superset is enough).
func (ix *Index) peerOf(d store.Device, out map[string]bool) {
	p := ix.pol
	if p.pol == nil {
		return
	}
	segs := map[string]bool{}
	for _, id := range p.peers[d.ID] {
		segs[p.pol.Apps[p.byID[id].App].Segment] = true
	}
	for _, g := range ix.snap.Gateways {
		if out[g.ID] {
			continue
		}
		for s := range segs {
			if p.servesSegment(g, s) {
				out[g.ID] = true
				break
			}
		}
	}
}

// peersOf is the devices gw's map may list as peers, and so the devices
// whose client maps may carry gw (a superset, as for peerOf).
func (ix *Index) peersOf(gw store.Gateway) map[string]bool {
	out := map[string]bool{}
	p := ix.pol
	if p.pol == nil {
		return out
	}
	served := map[string]bool{}
	for _, name := range p.pol.SegmentNames {
		if p.servesSegment(gw, name) {
			served[name] = true
		}
	}
	for id, rules := range p.peers {
		for _, r := range rules {
			if served[p.pol.Apps[p.byID[r].App].Segment] {
				out[id] = true
				break
			}
		}
	}
	return out
}

// PublicAddrChanged reports whether device id connecting from addr
// changes any map computed from ix: its address differs from the one ix
// has, and a gateway's map carries it (only under an applied policy
// file, and only for a device that is some gateway's peer; directory peers
// carry no session). Otherwise the connection costs only the device's own
// map.
func (ix *Index) PublicAddrChanged(id string, addr netip.Addr) bool {
	if ix.public[id] == addr || ix.pol.pol == nil || ix.pol.directory != nil {
		return false
	}
	return len(ix.pol.peers[id]) > 0
}
