// Package netmap computes what each agent may see: for a gateway, the client
// devices it serves and the rules it enforces; for a client device, the
// gateways it peers with and the app addresses it may route to each.
//
// It is a pure function of a store snapshot, so every controller computes the
// same maps (all lists are sorted). When a policy was applied
// (Snapshot.Policy), segments, apps and rules come from it (policy.go);
// until then from the store's skeleton directory.
package netmap

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Index is a snapshot prepared for map computation.
type Index struct {
	snap       *store.Snapshot
	apps       map[string]store.App
	segments   map[string]store.Segment
	users      map[string]store.User
	userGroups map[string][]string // user → groups
	rulesByApp map[string][]store.Rule
	gwBySeg    map[string][]store.Gateway
	gateways   map[string]store.Gateway
	devices    map[string]store.Device
	// For Affects (affected.go): who a change reaches.
	userDevices  map[string][]string // user → device IDs (revoked ones too)
	groupMembers map[string][]string // group → members, sorted
	rulesByGroup map[string][]store.Rule
	pol          *policyIndex          // nil while no policy was ever applied
	public       map[string]netip.Addr // device ID → public address; see SetPublicAddrs
	sess         *sessionGate          // nil: not gated on sessions; see SetSessions
}

// NewIndex indexes a snapshot. It sorts its own copies of the lists, so
// the maps do not depend on the order the store returned them in.
func NewIndex(snap *store.Snapshot) *Index { return NewIndexCached(snap, nil) }

// NewIndexCached is NewIndex taking the active policy's parse from cache
// (nil: parse it).
func NewIndexCached(snap *store.Snapshot, cache *PolicyCache) *Index {
	s := &store.Snapshot{
		Segments: snap.Segments, Users: snap.Users, Groups: snap.Groups,
		Apps:     slices.SortedFunc(slices.Values(snap.Apps), func(a, b store.App) int { return cmp.Compare(a.Name, b.Name) }),
		Rules:    slices.SortedFunc(slices.Values(snap.Rules), func(a, b store.Rule) int { return cmp.Compare(a.Name, b.Name) }),
		Gateways: slices.SortedFunc(slices.Values(snap.Gateways), func(a, b store.Gateway) int { return cmp.Compare(a.ID, b.ID) }),
		Devices:  slices.SortedFunc(slices.Values(snap.Devices), func(a, b store.Device) int { return cmp.Compare(a.ID, b.ID) }),
		Posture:  snap.Posture,
		// OIDC identities: users' IdP group claims (policy.go, idpRefs).
		Identities: snap.Identities,
	}
	ix := &Index{
		snap:       s,
		apps:       map[string]store.App{},
		segments:   map[string]store.Segment{},
		users:      map[string]store.User{},
		userGroups: map[string][]string{},
		rulesByApp: map[string][]store.Rule{},
		gwBySeg:    map[string][]store.Gateway{},
		gateways:   map[string]store.Gateway{},
		devices:    map[string]store.Device{},

		userDevices:  map[string][]string{},
		groupMembers: map[string][]string{},
		rulesByGroup: map[string][]store.Rule{},
	}
	for _, d := range s.Devices {
		ix.devices[d.ID] = d
		ix.userDevices[d.User] = append(ix.userDevices[d.User], d.ID)
	}
	for _, a := range s.Apps {
		ix.apps[a.Name] = a
	}
	for _, sg := range s.Segments {
		ix.segments[sg.Name] = sg
	}
	for _, u := range s.Users {
		ix.users[u.Name] = u
	}
	for _, g := range s.Groups {
		ix.groupMembers[g.Name] = g.Members
		for _, m := range g.Members {
			ix.userGroups[m] = append(ix.userGroups[m], g.Name)
		}
	}
	for _, r := range s.Rules {
		ix.rulesByApp[r.App] = append(ix.rulesByApp[r.App], r)
		ix.rulesByGroup[r.Group] = append(ix.rulesByGroup[r.Group], r)
	}
	for _, g := range s.Gateways {
		ix.gwBySeg[g.Segment] = append(ix.gwBySeg[g.Segment], g)
		ix.gateways[g.ID] = g
	}
	if snap.Policy != nil {
		ix.pol = newPolicyIndex(ix, snap.Policy, cache)
		s.Segments, s.Apps = ix.pol.derivedDirectory()
		s.Rules = nil
	}
	return ix
}

// SetPublicAddrs gives the public (underlay) addresses devices connect to
// the control server from, by device ID, for the policy's source-network
// conditions: gateway maps carry each peer's address in its session. A
// device missing from m has no known address (source-network rules then
// do not admit it). Call it before computing maps; m is not copied and
// must not change afterwards.
func (ix *Index) SetPublicAddrs(m map[string]netip.Addr) { ix.public = m }

// Gateway returns a gateway by ID.
func (ix *Index) Gateway(id string) (store.Gateway, bool) {
	g, ok := ix.gateways[id]
	return g, ok
}

// Device returns a device by ID.
func (ix *Index) Device(id string) (store.Device, bool) {
	d, ok := ix.devices[id]
	return d, ok
}

// entitled reports the rules that let user reach app (nil if none). A
// disabled or unknown user is entitled to nothing.
func (ix *Index) entitled(user string, app string) []store.Rule {
	u, ok := ix.users[user]
	if !ok || u.Disabled {
		return nil
	}
	var out []store.Rule
	for _, r := range ix.rulesByApp[app] {
		if slices.Contains(ix.userGroups[user], r.Group) {
			out = append(out, r)
		}
	}
	return out
}

// all reports whether ok holds for every element of s.
func all(s []string, ok func(string) bool) bool {
	for _, x := range s {
		if !ok(x) {
			return false
		}
	}
	return true
}

// entitledApps is the apps some rule lets user reach, sorted (none for a
// disabled or unknown user).
func (ix *Index) entitledApps(user string) []string {
	if u, ok := ix.users[user]; !ok || u.Disabled {
		return nil
	}
	var out []string
	for _, g := range ix.userGroups[user] {
		for _, r := range ix.rulesByGroup[g] {
			if _, ok := ix.apps[r.App]; ok {
				out = append(out, r.App)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func wireApp(a store.App) controlproto.App {
	return controlproto.App{
		Name: a.Name, DNSName: a.DNSName, Addr: a.Addr, Proto: a.Proto,
		Ports: slices.Clone(a.Ports), Segment: a.Segment,
	}
}

// GatewayMap computes the map of one gateway.
func (ix *Index) GatewayMap(gw store.Gateway) *controlproto.GatewayMap {
	if ix.pol != nil {
		return ix.policyGatewayMap(gw)
	}
	m := &controlproto.GatewayMap{GatewayID: gw.ID, OverlayAddr: gw.OverlayAddr}
	if sg, ok := ix.segments[gw.Segment]; ok {
		m.Segments = []controlproto.Segment{{Name: sg.Name, CIDRs: slices.Clone(sg.CIDRs)}}
	}
	var apps []store.App
	for _, a := range ix.snap.Apps {
		if a.Segment == gw.Segment {
			apps = append(apps, a)
			m.Apps = append(m.Apps, wireApp(a))
		}
	}
	for _, a := range apps {
		for _, r := range ix.rulesByApp[a.Name] {
			m.Rules = append(m.Rules, policy.Rule{
				ID: policy.RuleID(r.Name), App: a.Name, Dst: []netip.Prefix{a.Addr},
				Proto: a.Proto, Ports: slices.Clone(a.Ports),
			})
		}
	}
	slices.SortFunc(m.Rules, func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) })
	// Per device, only its user's rules (not every app of the segment):
	// a gateway map with 10,000 peers is computed for every change that
	// reaches one of them.
	inSeg := make(map[string]store.App, len(apps))
	for _, a := range apps {
		inSeg[a.Name] = a
	}
	// Users with the same groups have the same rules here: computed once
	// per group set, shared (read-only) by every device whose session
	// allows all of their classifications.
	type ruleSet struct {
		ids     []policy.RuleID // sorted
		classes []string        // of the rules' apps, distinct
	}
	sets := map[string]*ruleSet{}
	for _, d := range ix.snap.Devices {
		if u, ok := ix.users[d.User]; !ok || u.Disabled {
			continue
		}
		groups := ix.userGroups[d.User]
		key := strings.Join(groups, "\x00")
		rs := sets[key]
		if rs == nil {
			rs = &ruleSet{}
			for _, g := range groups {
				for _, r := range ix.rulesByGroup[g] {
					if a, ok := inSeg[r.App]; ok {
						rs.ids = append(rs.ids, policy.RuleID(r.Name))
						if c := string(a.Classification); !slices.Contains(rs.classes, c) {
							rs.classes = append(rs.classes, c)
						}
					}
				}
			}
			slices.Sort(rs.ids)
			rs.ids = slices.Compact(rs.ids)
			sets[key] = rs
		}
		if len(rs.ids) == 0 {
			continue // only entitled devices become peers
		}
		allows := ix.allowsCached(d)
		ids := rs.ids
		if !all(rs.classes, allows) {
			ids = nil
			for _, g := range groups {
				for _, r := range ix.rulesByGroup[g] {
					if a, ok := inSeg[r.App]; ok && allows(string(a.Classification)) {
						ids = append(ids, policy.RuleID(r.Name))
					}
				}
			}
			if len(ids) == 0 {
				continue
			}
			slices.Sort(ids)
			ids = slices.Compact(ids)
		}
		m.Peers = append(m.Peers, controlproto.GatewayPeer{
			Peer:      policy.Peer{DeviceID: d.ID, User: d.User, Addr: d.OverlayAddr, Rules: ids},
			PublicKey: d.PublicKey,
		})
	}
	slices.SortFunc(m.Peers, func(a, b controlproto.GatewayPeer) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	return m
}

// ClientMap computes the map of one device. Each segment is served by one
// gateway (the first by ID that has an endpoint); AllowedIPs toward it hold
// only the entitled apps' addresses and the gateway's overlay address.
func (ix *Index) ClientMap(d store.Device) *controlproto.ClientMap {
	if ix.pol != nil {
		return ix.policyClientMap(d)
	}
	m := &controlproto.ClientMap{DeviceID: d.ID, User: d.User, OverlayAddr: d.OverlayAddr}
	byGW := map[string]*controlproto.ClientGateway{}
	allows := ix.allowsCached(d)
	for _, name := range ix.entitledApps(d.User) { // sorted
		a := ix.apps[name]
		if !allows(string(a.Classification)) {
			continue
		}
		gw, ok := ix.servingGateway(a.Segment)
		if !ok {
			continue
		}
		cg := clientGateway(byGW, gw)
		cg.AllowedIPs = append(cg.AllowedIPs, a.Addr.Masked())
		cg.Apps = append(cg.Apps, wireApp(a))
	}
	for _, cg := range byGW {
		slices.SortFunc(cg.AllowedIPs, comparePrefix)
		cg.AllowedIPs = slices.Compact(cg.AllowedIPs)
		m.Gateways = append(m.Gateways, *cg)
	}
	slices.SortFunc(m.Gateways, func(a, b controlproto.ClientGateway) int { return cmp.Compare(a.GatewayID, b.GatewayID) })
	return m
}

// clientGateway returns the client-map entry of gw, creating it (with the
// gateway's own overlay address routed, for its DNS) on first use.
func clientGateway(byGW map[string]*controlproto.ClientGateway, gw store.Gateway) *controlproto.ClientGateway {
	cg := byGW[gw.ID]
	if cg == nil {
		cg = &controlproto.ClientGateway{
			GatewayID: gw.ID, PublicKey: gw.PublicKey, Endpoint: gw.Endpoint,
			OverlayAddr: gw.OverlayAddr,
			AllowedIPs:  []netip.Prefix{netip.PrefixFrom(gw.OverlayAddr, gw.OverlayAddr.BitLen())},
		}
		byGW[gw.ID] = cg
	}
	return cg
}

func (ix *Index) servingGateway(segment string) (store.Gateway, bool) {
	for _, g := range ix.gwBySeg[segment] {
		if g.Endpoint != "" && !g.PublicKey.IsZero() {
			return g, true
		}
	}
	return store.Gateway{}, false
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
