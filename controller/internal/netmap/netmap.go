// Package netmap computes what each agent may see: for a gateway, the client
// devices it serves and the rules it enforces; for a client device, the
// gateways it peers with and the app addresses it may route to each.
//
// It is a pure function of a store snapshot, so every controller computes the
// same maps (all lists are sorted). Maps are computed one way, from a
// policy (policy.go): the applied policy file (Snapshot.Policy) or, until
// one is applied, the store's one-by-one directory (segments, apps,
// groups, rules) as a policy. affected.go says which maps a change
// reaches.
package netmap

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Index is a snapshot prepared for map computation.
type Index struct {
	source     *store.Snapshot // as given to NewIndex
	snap       *store.Snapshot
	apps       map[string]store.App
	segments   map[string]store.Segment
	users      map[string]store.User
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
	instances    map[string]controlproto.InstanceID
	tcpEndpoints map[string]string

	// clientGateways caches client maps' gateways by identity
	// (policyClientMap); maps are computed on several goroutines.
	clientMu       sync.Mutex
	clientGateways map[clientKey]*clientTemplate
	// down is the gateways the controller knows to be down; see
	// SetGatewayDown.
	down map[string]bool
}

// SetGatewayDown gives the gateways the controller knows to be down (their
// control channel gone for longer than a grace period): client maps order
// them last in every segment and mark them (ClientGateway.Down). Call it
// before computing maps; m is not copied and must not change afterwards.
// The source of "down" is the caller's: today the control channel, later
// the gateways' own cluster; a change of it is a store.Change naming the
// gateways, like any other change of a gateway.
func (ix *Index) SetGatewayDown(m map[string]bool) { ix.down = m }

// SetGatewayInstances gives the process run each gateway last said hello
// from, which client maps carry (ClientGateway.Instance). Call it before
// computing maps; m is not copied and must not change afterwards.
func (ix *Index) SetGatewayInstances(m map[string]controlproto.InstanceID) { ix.instances = m }

// SetGatewayTCPEndpoints gives where each gateway accepts WireGuard over
// TLS, which client maps carry (ClientGateway.TCPEndpoint). Call it before
// computing maps; m is not copied and must not change afterwards.
func (ix *Index) SetGatewayTCPEndpoints(m map[string]string) { ix.tcpEndpoints = m }

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
		source:     snap,
		snap:       s,
		apps:       map[string]store.App{},
		segments:   map[string]store.Segment{},
		users:      map[string]store.User{},
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
	} else {
		ix.pol = newDirectoryIndex(ix)
	}
	return ix
}

// Snapshot returns the snapshot ix was built from, which nobody may
// modify: a change's partial snapshot is patched into a copy of it
// (store.Snapshot.Patch).
func (ix *Index) Snapshot() *store.Snapshot { return ix.source }

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

func wireApp(a store.App) controlproto.App {
	return controlproto.App{
		Name: a.Name, DNSName: a.DNSName, Addr: a.Addr, Proto: a.Proto,
		Ports: slices.Clone(a.Ports), Segment: a.Segment, Classification: string(a.Classification),
	}
}

// GatewayMap computes the map of one gateway: the segments it serves,
// their apps, every rule for those apps, and the devices with at least one
// of those rules.
func (ix *Index) GatewayMap(gw store.Gateway) *controlproto.GatewayMap {
	return ix.policyGatewayMap(gw)
}

// ClientMap computes the map of one device in the shape of capability 9
// (controlproto.ClientMap.Segments): each segment it may reach with every
// gateway (with an endpoint and a key) serving it, in the device's order
// (RankGateways); AllowedIPs hold only the entitled apps' addresses, and
// the gateways only their overlay addresses. Clients before capability 9
// get its Legacy shape.
func (ix *Index) ClientMap(d store.Device) *controlproto.ClientMap {
	return ix.policyClientMap(d)
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
