package netmap

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// policyIndex is the policy maps are computed from: the applied policy
// file, or, until one is applied, the store's one-by-one directory as a
// policy (newDirectoryIndex). When a file is active, segments, apps and
// rules come from it alone; the store's directory segments, apps and rules
// are ignored (the store's segments still name the segment a gateway
// enrolled into).
//
// A gateway serves the policy segments that carry its enrolled segment's
// name or list the gateway's name under gateways:. Devices are entitled
// through their user (local users by name, through the policy's groups);
// device tags and IdP claims are not in the directory yet, so rules that
// name only those reach no device.
type policyIndex struct {
	pol   *policyfile.Policy // nil: the stored policy does not parse (fail closed)
	err   error
	rules []policy.Rule // every wire rule, sorted by ID
	byID  map[policy.RuleID]*policy.Rule
	peers map[string][]policy.RuleID     // device ID → its rules (devices of enabled users only)
	idp   map[string][]policyfile.IdPRef // user → IdP group claims from valid OIDC identities
	// directory is the store's apps by name when this is the one-by-one
	// directory rather than an applied file (directoryPolicy); named is
	// then its rules before their names were cleared.
	directory map[string]store.App
	named     []policy.Rule
	classList []string // the policy's distinct app classifications, sorted
	version   int64    // the policy version (0: the directory, no applied policy)
}

// PolicyCache keeps the last policy parsed, so recomputing maps after a
// change that is not a policy change (a device enrolls, a user is
// disabled) does not parse the same text again. A parsed policy is
// read-only, so indexes built from it share it. The zero value is ready;
// it is safe for concurrent use.
type PolicyCache struct {
	mu   sync.Mutex
	key  string // SHA-256 and file name of the cached parse
	pol  *policyfile.Policy
	perr error
}

func (c *PolicyCache) parse(v *store.PolicyVersion) (*policyfile.Policy, error) {
	if c == nil {
		return policyfile.Parse(v.File, v.Source)
	}
	sum := sha256.Sum256(v.Source) // not v.SHA256: never trust a cache key the source may disagree with
	key := hex.EncodeToString(sum[:]) + "\x00" + v.File
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key != key {
		c.pol, c.perr = policyfile.Parse(v.File, v.Source)
		c.key = key
	}
	return c.pol, c.perr
}

func newPolicyIndex(ix *Index, v *store.PolicyVersion, cache *PolicyCache) *policyIndex {
	p := &policyIndex{}
	if v != nil {
		p.version = v.Version
	}
	p.pol, p.err = cache.parse(v)
	if p.err != nil {
		// It parsed when it was applied; only a stricter reader refuses it
		// now. Serve no rules rather than stale or guessed ones.
		p.pol = nil
		return p
	}
	p.rules = p.pol.WireRules("")
	p.setClasses()
	p.index(ix)
	return p
}

// directoryPolicy is the store's one-by-one directory as a policy
// (policyfile.FromDirectory), so its maps come from the same computation
// as an applied file's. What agents see is what the directory always gave
// them: each rule is one wire rule named like the directory rule, apps
// keep their stored shape (wireApp), and peers carry no session (the
// directory has no conditions to evaluate against one).
func directoryPolicy(ix *Index) *policyIndex {
	p := &policyIndex{pol: DirectoryPolicy(ix.snap), directory: ix.apps}
	// One wire rule per directory rule (one app, one service), known by
	// the rule's name, as gateways and the audit trail always knew it.
	p.named = p.pol.WireRules("")
	for i := range p.named {
		p.named[i].ID = policy.RuleID(p.named[i].Name)
	}
	slices.SortFunc(p.named, func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) })
	p.rules = slices.Clone(p.named)
	for i := range p.rules {
		p.rules[i].Name = "" // Peers matches by it; the wire never carried it
	}
	p.byID = make(map[policy.RuleID]*policy.Rule, len(p.rules))
	for i := range p.rules {
		p.byID[p.rules[i].ID] = &p.rules[i]
	}
	p.setClasses()
	return p
}

// newDirectoryIndex is directoryPolicy with every device's rules.
func newDirectoryIndex(ix *Index) *policyIndex {
	p := directoryPolicy(ix)
	p.index(ix)
	return p
}

// peerRules is the wire rules Peers matches devices against: under the
// directory, the rules before their names were cleared.
func (p *policyIndex) peerRules() []policy.Rule {
	if p.named != nil {
		return p.named
	}
	return p.rules
}

// index computes the rule lookup (unless made) and each device's rules.
func (p *policyIndex) index(ix *Index) {
	if p.byID == nil {
		p.byID = make(map[policy.RuleID]*policy.Rule, len(p.rules))
		for i := range p.rules {
			p.byID[p.rules[i].ID] = &p.rules[i]
		}
	}
	var devs []policyfile.Device
	p.idp = idpRefs(ix.snap.Identities)
	for _, d := range ix.snap.Devices {
		if u, ok := ix.users[d.User]; ok && !u.Disabled {
			devs = append(devs, policyfile.Device{ID: d.ID, User: d.User, Addr: d.OverlayAddr, IdP: p.idp[d.User]})
		}
	}
	p.peers = map[string][]policy.RuleID{}
	for _, pe := range p.pol.Peers(devs, p.peerRules()) {
		p.peers[pe.DeviceID] = pe.Rules
	}
}

// wireApps is policy app name as agents see it.
func (p *policyIndex) wireApps(name string) []controlproto.App {
	if p.directory != nil {
		return []controlproto.App{wireApp(p.directory[name])}
	}
	return policyWireApps(p.pol.Apps[name])
}

// idpRefs is each user's IdP group claims ({claim, value}), from the OIDC
// identities the provider still accepts (a refused refresh drops them).
func idpRefs(ids []store.Identity) map[string][]policyfile.IdPRef {
	out := map[string][]policyfile.IdPRef{}
	for _, id := range ids {
		if !id.InvalidAt.IsZero() {
			continue
		}
		for _, g := range id.Groups {
			out[id.User] = append(out[id.User], policyfile.IdPRef{Claim: id.Claim, Value: g})
		}
	}
	return out
}

// derivedDirectory is the policy's segments and apps in the store's shape,
// one store.App per DNS name, for the parts of the package (DNS zones)
// that read the snapshot's lists.
func (p *policyIndex) derivedDirectory() ([]store.Segment, []store.App) {
	if p.pol == nil {
		return nil, nil
	}
	var segs []store.Segment
	for _, name := range p.pol.SegmentNames {
		segs = append(segs, store.Segment{Name: name, CIDRs: slices.Clone(p.pol.Segments[name].Prefixes)})
	}
	var apps []store.App
	for _, name := range p.pol.AppNames {
		a := p.pol.Apps[name]
		base := store.App{Name: name, Segment: a.Segment, Classification: store.Classification(a.Classification), Emergency: a.Emergency}
		if len(a.Addrs) > 0 {
			base.Addr = a.Addrs[0]
		}
		if len(a.Names) == 0 {
			apps = append(apps, base)
		}
		for _, n := range a.Names {
			x := base
			x.DNSName = n
			apps = append(apps, x)
		}
	}
	return segs, apps
}

// PolicyError is why the active policy could not be used (its maps then
// carry no rules, failing closed), or nil.
func (ix *Index) PolicyError() error {
	if ix.pol == nil {
		return nil
	}
	return ix.pol.err
}

// servesSegment reports whether gateway gw serves policy segment name.
func (p *policyIndex) servesSegment(gw store.Gateway, name string) bool {
	sg := p.pol.Segments[name]
	return sg != nil && (name == gw.Segment || slices.Contains(sg.Gateways, gw.Name))
}

// policyWireApps is app a as agents see it: one controlproto.App per
// address, carrying the app's first DNS name (the first entry also its
// other names, as aliases). Services with different protocols merge into
// protocol "any" with the union of their ports.
func policyWireApps(a *policyfile.App) []controlproto.App {
	proto := policy.ProtoAny
	if len(a.Services) > 0 {
		proto = a.Services[0].Proto
	}
	var ports []policy.PortRange
	for _, s := range a.Services {
		if s.Proto != proto {
			proto = policy.ProtoAny
		}
		switch {
		case len(s.Ports) > 0:
			ports = append(ports, s.Ports...)
		case s.Proto != policy.ProtoICMP && s.Proto != policy.ProtoICMP6:
			ports = append(ports, policy.AllPorts)
		}
	}
	slices.SortFunc(ports, func(x, y policy.PortRange) int {
		return cmp.Or(cmp.Compare(x.First, y.First), cmp.Compare(x.Last, y.Last))
	})
	ports = slices.Compact(ports)
	out := make([]controlproto.App, 0, len(a.Addrs))
	for i, addr := range a.Addrs {
		w := controlproto.App{Name: a.Name, Addr: addr, Proto: proto, Ports: slices.Clone(ports), Segment: a.Segment,
			Classification: string(a.Classification)}
		if len(a.Names) > 0 {
			w.DNSName = a.Names[0]
			if i == 0 && len(a.Names) > 1 {
				w.DNSAliases = slices.Clone(a.Names[1:])
			}
		}
		out = append(out, w)
	}
	return out
}

// policyGatewayMap is GatewayMap under an applied policy: the segments the
// gateway serves, their apps, every allow and deny rule (with conditions)
// for those apps, and the devices with at least one of those rules.
func (ix *Index) policyGatewayMap(gw store.Gateway) *controlproto.GatewayMap {
	m := &controlproto.GatewayMap{GatewayID: gw.ID, OverlayAddr: gw.OverlayAddr, Draining: !gw.DrainedAt.IsZero()}
	p := ix.pol
	if p.pol == nil {
		return m
	}
	m.PolicyVersion = p.version
	served := p.served(gw)
	for _, name := range p.pol.SegmentNames {
		if served[name] {
			m.Segments = append(m.Segments, controlproto.Segment{Name: name, CIDRs: slices.Clone(p.pol.Segments[name].Prefixes)})
		}
	}
	for _, name := range p.pol.AppNames {
		if a := p.pol.Apps[name]; served[a.Segment] {
			m.Apps = append(m.Apps, p.wireApps(name)...)
		}
	}
	for _, r := range p.rules {
		if served[p.pol.Apps[r.App].Segment] {
			m.Rules = append(m.Rules, r)
		}
	}
	pk := ix.newPeerPicker(served)
	for _, d := range ix.snap.Devices { // sorted by ID
		if pe, ok := pk.peer(d); ok {
			m.Peers = append(m.Peers, pe)
		}
	}
	return m
}

// served is the policy segments gw serves.
func (p *policyIndex) served(gw store.Gateway) map[string]bool {
	out := map[string]bool{}
	for _, name := range p.pol.SegmentNames {
		if p.servesSegment(gw, name) {
			out[name] = true
		}
	}
	return out
}

// peerPicker computes a gateway's peer entries device by device.
//
// Devices of one identity share one rule list (Peers), so the rules of
// this gateway are picked once per identity and shared (read-only) by
// every device whose session allows all of their classifications: a
// gateway map with 10,000 peers is computed for every change that
// reaches one of them.
type peerPicker struct {
	ix     *Index
	mine   map[policy.RuleID]bool // the rules of the gateway's apps
	shared map[*policy.RuleID]*picked
}

type picked struct {
	ids     []policy.RuleID
	classes []string // of the rules' apps, distinct
}

func (ix *Index) newPeerPicker(served map[string]bool) *peerPicker {
	p := ix.pol
	mine := map[policy.RuleID]bool{}
	for _, r := range p.rules {
		if served[p.pol.Apps[r.App].Segment] {
			mine[r.ID] = true
		}
	}
	return &peerPicker{ix: ix, mine: mine, shared: map[*policy.RuleID]*picked{}}
}

// peer is device d's entry in the gateway's map, if d has a rule there
// that its session allows now.
func (pk *peerPicker) peer(d store.Device) (controlproto.GatewayPeer, bool) {
	ix, p := pk.ix, pk.ix.pol
	all := p.peers[d.ID]
	if len(all) == 0 {
		return controlproto.GatewayPeer{}, false
	}
	pkd := pk.shared[&all[0]]
	if pkd == nil {
		pkd = &picked{}
		for _, id := range all {
			if pk.mine[id] {
				pkd.ids = append(pkd.ids, id)
				if c := string(p.pol.Apps[p.byID[id].App].Classification); !slices.Contains(pkd.classes, c) {
					pkd.classes = append(pkd.classes, c)
				}
			}
		}
		pk.shared[&all[0]] = pkd
	}
	allows := ix.allowsCached(d)
	emergency := ix.emergencyOnly(d)
	ids := pkd.ids
	if emergency || slices.ContainsFunc(pkd.classes, func(c string) bool { return !allows(c) }) {
		ids = nil // some not allowed now: this device's own list
		for _, id := range pkd.ids {
			a := p.pol.Apps[p.byID[id].App]
			if allows(string(a.Classification)) && (!emergency || a.Emergency) {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return controlproto.GatewayPeer{}, false // only entitled devices become peers
	}
	return controlproto.GatewayPeer{
		Peer:      policy.Peer{DeviceID: d.ID, User: d.User, Addr: d.OverlayAddr, Rules: ids, Session: ix.policySession(d)},
		PublicKey: d.PublicKey,
	}, true
}

// PatchGatewayMap returns prev, gateway gw's map computed from an earlier
// index, with the peer entries of devices replaced by this index's (added,
// changed or removed). It equals GatewayMap(gw) when nothing but those
// devices' entries can differ: Affected.Whole says when that is not so.
// It copies prev's other fields as they are (the control server's too)
// and does not modify prev; peers not in devices keep their entries.
func (ix *Index) PatchGatewayMap(prev *controlproto.GatewayMap, gw store.Gateway, devices map[string]bool) *controlproto.GatewayMap {
	m := *prev
	m.Peers = make([]controlproto.GatewayPeer, 0, len(prev.Peers)+len(devices))
	for _, pe := range prev.Peers {
		if !devices[pe.DeviceID] {
			m.Peers = append(m.Peers, pe)
		}
	}
	if ix.pol.pol != nil {
		pk := ix.newPeerPicker(ix.pol.served(gw))
		for id := range devices {
			if d, ok := ix.devices[id]; ok {
				if pe, ok := pk.peer(d); ok {
					m.Peers = append(m.Peers, pe)
				}
			}
		}
	}
	slices.SortFunc(m.Peers, func(a, b controlproto.GatewayPeer) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	if len(m.Peers) == 0 {
		m.Peers = nil // as GatewayMap
	}
	return &m
}

// policySession is what the controller knows of device d's session, for
// the gateway to evaluate rule conditions against on every new flow: the
// last login with both factors on the device, its public address as the
// control server sees it (SetPublicAddrs), and its user's groups in the
// policy, and the posture checks it passes (posture.go); device tags are
// not in the directory yet.
func (ix *Index) policySession(d store.Device) *policy.Session {
	if ix.pol.directory != nil {
		return nil
	}
	return &policy.Session{
		MFAAt:      ix.sessionMFAAt(d),
		PublicAddr: ix.public[d.ID],
		Groups:     ix.pol.pol.GroupsOf(d.User, ix.pol.idp[d.User]),
		Posture:    ix.posturePassing(d.ID),
	}
}

// reachableApps is the apps device id may reach under some context: those
// with an allow rule for it that no deny rule of its covers whole. It errs
// toward including an app; the gateway decides every flow.
func (p *policyIndex) reachableApps(id string) map[string]bool {
	mine := p.peers[id]
	var denies []*policy.Rule // few, usually none: checked per allow rule
	for _, did := range mine {
		if d := p.byID[did]; d.Deny {
			denies = append(denies, d)
		}
	}
	out := map[string]bool{}
	for _, aid := range mine {
		a := p.byID[aid]
		if a.Deny || out[a.App] {
			continue
		}
		covered := slices.ContainsFunc(denies, func(d *policy.Rule) bool { return d.App == a.App && denyCovers(d, a) })
		if !covered {
			out[a.App] = true
		}
	}
	return out
}

// denyCovers reports whether deny rule d refuses every flow allow rule a
// admits (both are for the same app, so the same destinations).
func denyCovers(d, a *policy.Rule) bool {
	if d.Proto != policy.ProtoAny && d.Proto != a.Proto {
		return false
	}
	if len(d.Ports) == 0 || a.Proto == policy.ProtoICMP || a.Proto == policy.ProtoICMP6 {
		return true
	}
	aports := a.Ports
	if len(aports) == 0 {
		aports = []policy.PortRange{policy.AllPorts}
	}
	for _, ar := range aports {
		if !slices.ContainsFunc(d.Ports, func(dr policy.PortRange) bool { return dr.First <= ar.First && ar.Last <= dr.Last }) {
			return false
		}
	}
	return true
}

// policyClientMap is ClientMap under an applied policy: for each segment
// with an app the device may reach under some context, the apps'
// addresses and every gateway serving the segment in the device's order.
//
// The gateways part, but for each segment's order, depends only on the
// device's rules (devices of one identity share one rule list, Peers) and
// on which classifications its session allows now, so it is computed
// once per index for each such pair and shared, read-only, by every map
// that has it (clientTemplate): a change that reaches every device
// computes it once per identity, not 10,000 times; each device then only
// ranks each segment's gateways.
func (ix *Index) policyClientMap(d store.Device) *controlproto.ClientMap {
	m := &controlproto.ClientMap{DeviceID: d.ID, User: d.User, OverlayAddr: d.OverlayAddr}
	p := ix.pol
	if p.pol == nil {
		return m
	}
	rules := p.peers[d.ID]
	allows := ix.allowsCached(d)
	classes := p.classes()
	key := clientKey{allowed: 0, emergency: ix.emergencyOnly(d)}
	if len(rules) > 0 {
		key.rules = &rules[0]
	}
	for i, c := range classes {
		if allows(c) {
			key.allowed |= 1 << i
		}
	}
	cacheable := len(classes) <= 64
	var t *clientTemplate
	if cacheable {
		ix.clientMu.Lock()
		t = ix.clientGateways[key]
		ix.clientMu.Unlock()
	}
	if t == nil {
		t = ix.clientTemplateOf(d, allows, key.emergency)
		if cacheable {
			ix.clientMu.Lock()
			if ix.clientGateways == nil {
				ix.clientGateways = map[clientKey]*clientTemplate{}
			}
			ix.clientGateways[key] = t
			ix.clientMu.Unlock()
		}
	}
	ix.clientGatewaysOf(m, d, t)
	return m
}

// clientKey identifies the gateways part of a client map within one
// index: the device's rule list (shared by its identity) and the
// classifications (bits of policyIndex.classes) its session allows, and
// whether the session is a break-glass one (emergency apps only).
type clientKey struct {
	rules     *policy.RuleID
	allowed   uint64
	emergency bool
}

// classes is the policy's distinct app classifications, sorted.
func (p *policyIndex) classes() []string { return p.classList }

// setClasses computes classes from p.pol.
func (p *policyIndex) setClasses() {
	p.classList = nil
	for _, a := range p.pol.Apps {
		if c := string(a.Classification); !slices.Contains(p.classList, c) {
			p.classList = append(p.classList, c)
		}
	}
	slices.Sort(p.classList)
}

// clientTemplate is the device-independent part of a client map's
// gateways (shared by every device of one identity and allowed classes):
// the segments it may reach with their apps and eligible gateways, and
// every such gateway's entry. Read-only once built.
type clientTemplate struct {
	segs     []segTemplate                // by segment name
	gateways []controlproto.ClientGateway // by gateway ID, overlay address only
}

type segTemplate struct {
	name    string
	gateway []string // eligible gateways' IDs, sorted
	allowed []netip.Prefix
	apps    []controlproto.App
}

func (ix *Index) clientTemplateOf(d store.Device, allows func(string) bool, emergencyOnly bool) *clientTemplate {
	p := ix.pol
	reach := p.reachableApps(d.ID)
	bySeg := map[string]*segTemplate{}
	gws := map[string]store.Gateway{}
	// The apps it may reach, in name order (as AppNames), without walking
	// every app of the policy per device.
	for _, name := range slices.Sorted(maps.Keys(reach)) {
		a := p.pol.Apps[name]
		if !allows(string(a.Classification)) || emergencyOnly && !a.Emergency {
			continue
		}
		st := bySeg[a.Segment]
		if st == nil {
			serving := ix.policyServingGateways(a.Segment)
			if len(serving) == 0 {
				continue
			}
			st = &segTemplate{name: a.Segment}
			for _, g := range serving {
				st.gateway = append(st.gateway, g.ID)
				gws[g.ID] = g
			}
			bySeg[a.Segment] = st
		}
		for _, addr := range a.Addrs {
			st.allowed = append(st.allowed, addr.Masked())
		}
		st.apps = append(st.apps, p.wireApps(name)...)
	}
	t := &clientTemplate{}
	for _, name := range slices.Sorted(maps.Keys(bySeg)) {
		st := bySeg[name]
		slices.SortFunc(st.allowed, controlproto.ComparePrefix)
		st.allowed = slices.Compact(st.allowed)
		t.segs = append(t.segs, *st)
	}
	for _, id := range slices.Sorted(maps.Keys(gws)) {
		cg := clientGateway(map[string]*controlproto.ClientGateway{}, gws[id])
		cg.Instance = ix.instances[id]
		cg.TCPEndpoint = ix.tcpEndpoints[id]
		cg.Down = ix.down[id]
		cg.Draining = !gws[id].DrainedAt.IsZero()
		t.gateways = append(t.gateways, *cg)
	}
	return t
}

// clientGatewaysOf fills m's gateways and segments from template t for
// device d: t's gateways (shared), and each segment's gateways in d's
// order (RankGateways).
func (ix *Index) clientGatewaysOf(m *controlproto.ClientMap, d store.Device, t *clientTemplate) {
	if len(t.segs) == 0 {
		return
	}
	m.Gateways = t.gateways
	m.Segments = make([]controlproto.ClientSegment, len(t.segs))
	for i, st := range t.segs {
		m.Segments[i] = controlproto.ClientSegment{Name: st.name, Gateways: RankGateways(d.ID, st.gateway, ix.gatewayTier),
			AllowedIPs: st.allowed, Apps: st.apps}
	}
}

// gatewayTier is gateway id's tier for RankGateways: down, draining or
// live.
func (ix *Index) gatewayTier(id string) int {
	switch {
	case ix.down[id]:
		return TierDown
	case !ix.gateways[id].DrainedAt.IsZero():
		return TierDraining
	}
	return TierLive
}

// policyServingGateways is the gateways, with an endpoint and a key,
// that serve policy segment name, by ID.
func (ix *Index) policyServingGateways(name string) []store.Gateway {
	var out []store.Gateway
	for _, g := range ix.snap.Gateways {
		if g.Endpoint != "" && !g.PublicKey.IsZero() && ix.pol.servesSegment(g, name) {
			out = append(out, g)
		}
	}
	return out
}

// DirectoryPolicy is the store's one-by-one directory in snap as the
// policy maps are computed from (policyfile.FromDirectory): what it
// grants, with no conditions and no waivers. Access reviews read it too.
func DirectoryPolicy(snap *store.Snapshot) *policyfile.Policy {
	var groups []*policyfile.Group
	for _, g := range snap.Groups {
		groups = append(groups, &policyfile.Group{Name: g.Name, Members: g.Members})
	}
	var segs []*policyfile.Segment
	for _, sg := range snap.Segments {
		segs = append(segs, &policyfile.Segment{Name: sg.Name, Prefixes: sg.CIDRs})
	}
	var apps []*policyfile.App
	for _, a := range snap.Apps {
		pa := &policyfile.App{Name: a.Name, Segment: a.Segment, Addrs: []netip.Prefix{a.Addr},
			Services: []policyfile.Service{{Proto: a.Proto, Ports: a.Ports}}, Classification: policyfile.Classification(a.Classification),
			Emergency: a.Emergency}
		if a.DNSName != "" {
			pa.Names = []string{a.DNSName}
		}
		apps = append(apps, pa)
	}
	var rules []policyfile.DirectoryRule
	for _, r := range snap.Rules {
		rules = append(rules, policyfile.DirectoryRule{Name: r.Name, Group: r.Group, App: r.App})
	}
	return policyfile.FromDirectory(groups, segs, apps, rules)
}
