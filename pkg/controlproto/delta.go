package controlproto

// Map deltas (capability 6).
//
// A delta turns the map of revision From into the map of revision To. The
// agent applies it to the map it last applied, and only if that map's
// revision is From; otherwise it acknowledges To with Ack.Resync set and
// the controller sends the whole map. Revisions need not be consecutive:
// the controller sends only the newest of a burst of maps, so To may skip.
//
// Every field of a map is covered: keyed lists (peers by device ID, rules
// by ID, apps and segments by name, a client's gateways by gateway ID) by
// what was added, removed and changed (a changed element travels whole);
// every other field, when it changed, whole in a [Set]; a client's gateway
// that stays is patched the same way, its apps by name
// ([ClientGatewayPatch]). The lists of a map
// built by [ApplyGatewayDelta] or [ApplyClientDelta] are in key order, as
// the controller sends them, so for maps whose lists are sorted by key
// and free of duplicate keys
//
//	Apply(old, Diff(old, new)) == new
//
// exactly (an empty list comes back nil). Maps are values here: neither
// function changes its arguments, and the maps they return share element
// contents (slices inside elements) with their inputs; nobody may modify
// a map once it was sent or applied.

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// ErrRevisionGap is returned by the Apply functions when a delta does not
// start from the revision of the map it is applied to. The agent answers
// with Ack.Resync and gets the whole map.
var ErrRevisionGap = errors.New("map delta does not start from the applied revision")

// ErrBadDelta is returned for a delta that does not fit the map it is
// applied to (it removes or changes an element the map lacks, adds one it
// has, names a key twice) or that breaks the map (duplicate keys). Like a
// gap, it asks for the whole map.
var ErrBadDelta = errors.New("map delta does not fit the applied map")

// Set carries the new value of a field that a delta replaces whole; a nil
// *Set leaves the field as it was. (A pointer to the value alone could not
// say "set to nil" once encoded.)
type Set[T any] struct {
	V T `json:"v"`
}

// ListDelta is how one keyed list changed: elements added, keys removed,
// elements replaced (whole, matched by key). Each key appears at most once
// across the three.
type ListDelta[T any, K cmp.Ordered] struct {
	Add    []T `json:"add,omitempty"`
	Remove []K `json:"remove,omitempty"`
	Change []T `json:"change,omitempty"`
}

// IsZero reports whether the list did not change.
func (d ListDelta[T, K]) IsZero() bool {
	return len(d.Add) == 0 && len(d.Remove) == 0 && len(d.Change) == 0
}

// weight estimates the delta's encoded size in elements: an added or
// changed element costs what it costs in a whole map, a removed key about
// a quarter of that.
func (d ListDelta[T, K]) weight() int {
	return len(d.Add) + len(d.Change) + (len(d.Remove)+3)/4
}

// GatewayMapDelta changes a gateway's map from revision From to To.
type GatewayMapDelta struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`

	GatewayID        *Set[string]          `json:"gateway_id,omitempty"`
	OverlayAddr      *Set[netip.Addr]      `json:"overlay_addr,omitempty"`
	DNSZones         *Set[[]DNSZone]       `json:"dns_zones,omitempty"`
	ActivityInterval *Set[time.Duration]   `json:"activity_interval_ns,omitempty"`
	GrantLifetime    *Set[time.Duration]   `json:"grant_lifetime_ns,omitempty"`
	PolicyVersion    *Set[int64]           `json:"policy_version,omitempty"` // capability 11
	Cluster          *Set[*GatewayCluster] `json:"cluster,omitempty"`        // capability 12
	Draining         *Set[bool]            `json:"draining,omitempty"`       // capability 14

	Segments ListDelta[Segment, string]            `json:"segments,omitzero"`
	Peers    ListDelta[GatewayPeer, string]        `json:"peers,omitzero"`
	Rules    ListDelta[policy.Rule, policy.RuleID] `json:"rules,omitzero"`
	Apps     ListDelta[App, string]                `json:"apps,omitzero"`
}

// ClientMapDelta changes a client device's map from revision From to To.
type ClientMapDelta struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`

	DeviceID        *Set[string]        `json:"device_id,omitempty"`
	User            *Set[string]        `json:"user,omitempty"`
	OverlayAddr     *Set[netip.Addr]    `json:"overlay_addr,omitempty"`
	DNSZones        *Set[[]DNSZone]     `json:"dns_zones,omitempty"`
	Session         *Set[*SessionInfo]  `json:"session,omitempty"`
	PostureInterval *Set[time.Duration] `json:"posture_interval_ns,omitempty"`

	Gateways ListDelta[ClientGateway, string] `json:"gateways,omitzero"`
	// GatewayPatches change gateways the map keeps, field by field, their
	// apps by name: a new app for everyone costs each client the app, not
	// the gateway's whole list. A patched gateway is in no list of
	// Gateways.
	GatewayPatches []ClientGatewayPatch `json:"gateway_patches,omitempty"`
	// Segments (capability 10): a changed segment travels whole (its
	// gateway order, routes and apps).
	Segments ListDelta[ClientSegment, string] `json:"segments,omitzero"`
}

// ClientGatewayPatch is how one gateway of a client's map changed.
type ClientGatewayPatch struct {
	GatewayID   string               `json:"gateway_id"`
	PublicKey   *Set[wgkey.Public]   `json:"public_key,omitempty"`
	Endpoint    *Set[string]         `json:"endpoint,omitempty"`
	OverlayAddr *Set[netip.Addr]     `json:"overlay_addr,omitempty"`
	AllowedIPs  *Set[[]netip.Prefix] `json:"allowed_ips,omitempty"`
	// AllowedIPsDelta (capability 9) replaces AllowedIPs for clients that
	// take it; a patch carries at most one of the two.
	AllowedIPsDelta *PrefixDelta           `json:"allowed_ips_delta,omitempty"`
	Apps            ListDelta[App, string] `json:"apps,omitzero"`
	Instance        *Set[InstanceID]       `json:"instance,omitempty"`
	Down            *Set[bool]             `json:"down,omitempty"`         // capability 10
	TCPEndpoint     *Set[string]           `json:"tcp_endpoint,omitempty"` // capability 13
	Draining        *Set[bool]             `json:"draining,omitempty"`     // capability 14
}

// diffClientGateway returns the patch from old to new (same gateway ID),
// for a client of capability caps.
func diffClientGateway(old, new *ClientGateway, caps int) (ClientGatewayPatch, error) {
	p := ClientGatewayPatch{GatewayID: new.GatewayID,
		PublicKey:   setIfChanged(old.PublicKey, new.PublicKey),
		Endpoint:    setIfChanged(old.Endpoint, new.Endpoint),
		OverlayAddr: setIfChanged(old.OverlayAddr, new.OverlayAddr),
		Instance:    setIfChanged(old.Instance, new.Instance),
		Down:        setIfChanged(old.Down, new.Down),
		TCPEndpoint: setIfChanged(old.TCPEndpoint, new.TCPEndpoint),
		Draining:    setIfChanged(old.Draining, new.Draining),
	}
	if !slices.Equal(old.AllowedIPs, new.AllowedIPs) {
		d, ok := diffPrefixes(old.AllowedIPs, new.AllowedIPs)
		if ok && caps >= MinPrefixDeltaCapability {
			p.AllowedIPsDelta = &d
		} else {
			p.AllowedIPs = &Set[[]netip.Prefix]{V: new.AllowedIPs}
		}
	}
	var err error
	p.Apps, err = diffList(old.Apps, new.Apps, appKey, appEq)
	return p, err
}

// apply returns g with p applied.
func (p *ClientGatewayPatch) apply(g ClientGateway) (ClientGateway, error) {
	setField(&g.PublicKey, p.PublicKey)
	setField(&g.Endpoint, p.Endpoint)
	setField(&g.OverlayAddr, p.OverlayAddr)
	setField(&g.AllowedIPs, p.AllowedIPs)
	setField(&g.Instance, p.Instance)
	setField(&g.TCPEndpoint, p.TCPEndpoint)
	if p.AllowedIPsDelta != nil {
		if p.AllowedIPs != nil {
			return g, fmt.Errorf("%w: allowed IPs both set and patched", ErrBadDelta)
		}
		ips, err := applyPrefixes(g.AllowedIPs, p.AllowedIPsDelta)
		if err != nil {
			return g, fmt.Errorf("allowed IPs: %w", err)
		}
		g.AllowedIPs = ips
	}
	setField(&g.Down, p.Down)
	setField(&g.Draining, p.Draining)
	apps, err := applyList(g.Apps, p.Apps, appKey)
	if err != nil {
		return g, fmt.Errorf("apps: %w", err)
	}
	g.Apps = apps
	return g, nil
}

// Key functions of the keyed lists.
func segmentKey(s *Segment) string             { return s.Name }
func peerKey(p *GatewayPeer) string            { return p.DeviceID }
func ruleKey(r *policy.Rule) policy.RuleID     { return r.ID }
func appKey(a *App) string                     { return a.Name }
func clientGatewayKey(g *ClientGateway) string { return g.GatewayID }
func clientSegmentKey(s *ClientSegment) string { return s.Name }

// DiffGatewayMap returns the delta from old to new (From and To are their
// revisions). It fails only when a list holds a key twice: such a map can
// only be sent whole.
func DiffGatewayMap(old, new *GatewayMap) (*GatewayMapDelta, error) {
	d := &GatewayMapDelta{From: old.Revision, To: new.Revision,
		GatewayID:        setIfChanged(old.GatewayID, new.GatewayID),
		OverlayAddr:      setIfChanged(old.OverlayAddr, new.OverlayAddr),
		DNSZones:         setIfChanged(old.DNSZones, new.DNSZones),
		ActivityInterval: setIfChanged(old.ActivityInterval, new.ActivityInterval),
		GrantLifetime:    setIfChanged(old.GrantLifetime, new.GrantLifetime),
		PolicyVersion:    setIfChanged(old.PolicyVersion, new.PolicyVersion),
		Draining:         setIfChanged(old.Draining, new.Draining),
	}
	if !ptrEq(old.Cluster, new.Cluster, clusterEq) {
		d.Cluster = &Set[*GatewayCluster]{V: new.Cluster}
	}
	var err error
	if d.Segments, err = diffList(old.Segments, new.Segments, segmentKey, segmentEq); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	if d.Peers, err = diffList(old.Peers, new.Peers, peerKey, peerEq); err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	if d.Rules, err = diffList(old.Rules, new.Rules, ruleKey, ruleEq); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if d.Apps, err = diffList(old.Apps, new.Apps, appKey, appEq); err != nil {
		return nil, fmt.Errorf("apps: %w", err)
	}
	return d, nil
}

// ApplyGatewayDelta returns the map d makes of old, or an error wrapping
// ErrRevisionGap or ErrBadDelta; old is not changed either way.
func ApplyGatewayDelta(old *GatewayMap, d *GatewayMapDelta) (*GatewayMap, error) {
	if err := checkRevisions(old.Revision, d.From, d.To); err != nil {
		return nil, err
	}
	m := *old
	m.Revision = d.To
	setField(&m.GatewayID, d.GatewayID)
	setField(&m.OverlayAddr, d.OverlayAddr)
	setField(&m.DNSZones, d.DNSZones)
	setField(&m.ActivityInterval, d.ActivityInterval)
	setField(&m.GrantLifetime, d.GrantLifetime)
	setField(&m.PolicyVersion, d.PolicyVersion)
	setField(&m.Cluster, d.Cluster)
	setField(&m.Draining, d.Draining)
	var err error
	if m.Segments, err = applyList(old.Segments, d.Segments, segmentKey); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	if m.Peers, err = applyList(old.Peers, d.Peers, peerKey); err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	if m.Rules, err = applyList(old.Rules, d.Rules, ruleKey); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if m.Apps, err = applyList(old.Apps, d.Apps, appKey); err != nil {
		return nil, fmt.Errorf("apps: %w", err)
	}
	return &m, nil
}

// SmallerThan reports whether d is expected to encode smaller than the
// whole map it produces, full; when not, the controller sends full. It
// counts elements rather than encoding both.
func (d *GatewayMapDelta) SmallerThan(full *GatewayMap) bool {
	w := d.Segments.weight() + d.Peers.weight() + d.Rules.weight() + d.Apps.weight()
	n := len(full.Segments) + len(full.Peers) + len(full.Rules) + len(full.Apps)
	if d.DNSZones != nil {
		w += len(d.DNSZones.V)
		n += len(full.DNSZones)
	}
	return w < n
}

// IsEmpty reports whether d changes nothing but the revision.
func (d *GatewayMapDelta) IsEmpty() bool {
	return d.GatewayID == nil && d.OverlayAddr == nil && d.DNSZones == nil && d.ActivityInterval == nil &&
		d.GrantLifetime == nil && d.PolicyVersion == nil && d.Cluster == nil && d.Draining == nil && d.Segments.IsZero() && d.Peers.IsZero() && d.Rules.IsZero() && d.Apps.IsZero()
}

// DiffClientMap returns the delta from old to new for a client of
// capability caps (what it can apply); see DiffGatewayMap.
func DiffClientMap(old, new *ClientMap, caps int) (*ClientMapDelta, error) {
	d := &ClientMapDelta{From: old.Revision, To: new.Revision,
		DeviceID:        setIfChanged(old.DeviceID, new.DeviceID),
		User:            setIfChanged(old.User, new.User),
		OverlayAddr:     setIfChanged(old.OverlayAddr, new.OverlayAddr),
		DNSZones:        setIfChanged(old.DNSZones, new.DNSZones),
		Session:         setIfChanged(old.Session, new.Session),
		PostureInterval: setIfChanged(old.PostureInterval, new.PostureInterval),
	}
	var err error
	if d.Gateways, err = diffList(old.Gateways, new.Gateways, clientGatewayKey, clientGatewayEq); err != nil {
		return nil, fmt.Errorf("gateways: %w", err)
	}
	// A changed gateway goes as a patch.
	for _, g := range d.Gateways.Change {
		i := slices.IndexFunc(old.Gateways, func(o ClientGateway) bool { return o.GatewayID == g.GatewayID })
		p, err := diffClientGateway(&old.Gateways[i], &g, caps)
		if err != nil {
			return nil, fmt.Errorf("gateway %s: %w", g.GatewayID, err)
		}
		d.GatewayPatches = append(d.GatewayPatches, p)
	}
	d.Gateways.Change = nil
	if d.Segments, err = diffList(old.Segments, new.Segments, clientSegmentKey, clientSegmentEq); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	return d, nil
}

// ApplyClientDelta returns the map d makes of old; see ApplyGatewayDelta.
func ApplyClientDelta(old *ClientMap, d *ClientMapDelta) (*ClientMap, error) {
	if err := checkRevisions(old.Revision, d.From, d.To); err != nil {
		return nil, err
	}
	m := *old
	m.Revision = d.To
	setField(&m.DeviceID, d.DeviceID)
	setField(&m.User, d.User)
	setField(&m.OverlayAddr, d.OverlayAddr)
	setField(&m.DNSZones, d.DNSZones)
	setField(&m.Session, d.Session)
	setField(&m.PostureInterval, d.PostureInterval)
	var err error
	if m.Gateways, err = applyList(old.Gateways, d.Gateways, clientGatewayKey); err != nil {
		return nil, fmt.Errorf("gateways: %w", err)
	}
	if m.Segments, err = applyList(old.Segments, d.Segments, clientSegmentKey); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	if len(d.GatewayPatches) > 0 {
		// Patch a copy: applyList may return old's own list.
		m.Gateways = slices.Clone(m.Gateways)
		listed := make(map[string]bool, len(d.Gateways.Add)+len(d.Gateways.Change)+len(d.Gateways.Remove)+len(d.GatewayPatches))
		for _, g := range slices.Concat(d.Gateways.Add, d.Gateways.Change) {
			listed[g.GatewayID] = true
		}
		for _, id := range d.Gateways.Remove {
			listed[id] = true
		}
		for i := range d.GatewayPatches {
			p := &d.GatewayPatches[i]
			if listed[p.GatewayID] {
				return nil, fmt.Errorf("%w: gateway %s named twice", ErrBadDelta, p.GatewayID)
			}
			listed[p.GatewayID] = true
			j, ok := slices.BinarySearchFunc(m.Gateways, p.GatewayID, func(g ClientGateway, id string) int { return cmp.Compare(g.GatewayID, id) })
			if !ok {
				return nil, fmt.Errorf("%w: patches gateway %s, which does not exist", ErrBadDelta, p.GatewayID)
			}
			if m.Gateways[j], err = p.apply(m.Gateways[j]); err != nil {
				return nil, fmt.Errorf("gateway %s: %w", p.GatewayID, err)
			}
		}
	}
	return &m, nil
}

// SmallerThan reports whether d is expected to encode smaller than full;
// see GatewayMapDelta.SmallerThan. A client map is small and its session
// changes often, so the session counts as one element.
func (d *ClientMapDelta) SmallerThan(full *ClientMap) bool {
	// In apps: a gateway costs one plus its apps.
	w, n := (len(d.Gateways.Remove)+3)/4, 1
	for _, g := range slices.Concat(d.Gateways.Add, d.Gateways.Change) {
		w += 1 + len(g.Apps)
	}
	for _, p := range d.GatewayPatches {
		w += 1 + p.Apps.weight()
	}
	for _, g := range full.Gateways {
		n += 1 + len(g.Apps)
	}
	for _, sg := range slices.Concat(d.Segments.Add, d.Segments.Change) {
		w += 1 + len(sg.Apps)
	}
	w += (len(d.Segments.Remove) + 3) / 4
	for _, sg := range full.Segments {
		n += 1 + len(sg.Apps)
	}
	if d.Session != nil {
		w++
	}
	if d.DNSZones != nil {
		w += len(d.DNSZones.V)
		n += len(full.DNSZones)
	}
	return w < n
}

// IsEmpty reports whether d changes nothing but the revision.
func (d *ClientMapDelta) IsEmpty() bool {
	return d.DeviceID == nil && d.User == nil && d.OverlayAddr == nil && d.DNSZones == nil && d.Session == nil &&
		d.PostureInterval == nil && d.Gateways.IsZero() && len(d.GatewayPatches) == 0 && d.Segments.IsZero()
}

// EqualGatewayMaps reports whether a and b are the same map, revisions
// aside: what the controller uses to skip sending a map that did not
// change. It compares values as reflect.DeepEqual would, without
// encoding either.
func EqualGatewayMaps(a, b *GatewayMap) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GatewayID == b.GatewayID && a.OverlayAddr == b.OverlayAddr && sliceEq(a.DNSZones, b.DNSZones) &&
		a.ActivityInterval == b.ActivityInterval && a.GrantLifetime == b.GrantLifetime && a.PolicyVersion == b.PolicyVersion && a.Draining == b.Draining &&
		ptrEq(a.Cluster, b.Cluster, clusterEq) && listEq(a.Segments, b.Segments, segmentEq) && listEq(a.Peers, b.Peers, peerEq) &&
		listEq(a.Rules, b.Rules, ruleEq) && listEq(a.Apps, b.Apps, appEq)
}

// EqualClientMaps is EqualGatewayMaps for client maps.
func EqualClientMaps(a, b *ClientMap) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.DeviceID == b.DeviceID && a.User == b.User && a.OverlayAddr == b.OverlayAddr &&
		sliceEq(a.DNSZones, b.DNSZones) && reflect.DeepEqual(a.Session, b.Session) &&
		a.PostureInterval == b.PostureInterval && listEq(a.Gateways, b.Gateways, clientGatewayEq) &&
		listEq(a.Segments, b.Segments, clientSegmentEq)
}

func listEq[T any](a, b []T, eq func(a, b *T) bool) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !eq(&a[i], &b[i]) {
			return false
		}
	}
	return true
}

func checkRevisions(applied, from, to uint64) error {
	if to <= from {
		return fmt.Errorf("%w: revision %d to %d goes backwards", ErrBadDelta, from, to)
	}
	if from != applied {
		return fmt.Errorf("%w: delta from revision %d, applied revision is %d", ErrRevisionGap, from, applied)
	}
	return nil
}

func setIfChanged[T any](old, new T) *Set[T] {
	if reflect.DeepEqual(old, new) {
		return nil
	}
	return &Set[T]{V: new}
}

func setField[T any](f *T, s *Set[T]) {
	if s != nil {
		*f = s.V
	}
}

// sortedByKey returns l if its keys are strictly increasing, otherwise a
// sorted copy; it fails on a duplicate key.
func sortedByKey[T any, K cmp.Ordered](l []T, key func(*T) K) ([]T, error) {
	sorted := true
	for i := 1; i < len(l); i++ {
		if c := cmp.Compare(key(&l[i-1]), key(&l[i])); c == 0 {
			return nil, fmt.Errorf("%w: key %v twice", ErrBadDelta, key(&l[i]))
		} else if c > 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return l, nil
	}
	s := slices.Clone(l)
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(&a), key(&b)) })
	for i := 1; i < len(s); i++ {
		if key(&s[i-1]) == key(&s[i]) {
			return nil, fmt.Errorf("%w: key %v twice", ErrBadDelta, key(&s[i]))
		}
	}
	return s, nil
}

// diffList walks both lists in key order.
func diffList[T any, K cmp.Ordered](old, new []T, key func(*T) K, eq func(a, b *T) bool) (ListDelta[T, K], error) {
	var d ListDelta[T, K]
	old, err := sortedByKey(old, key)
	if err != nil {
		return d, err
	}
	if new, err = sortedByKey(new, key); err != nil {
		return d, err
	}
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		var c int
		switch {
		case i == len(old):
			c = 1
		case j == len(new):
			c = -1
		default:
			c = cmp.Compare(key(&old[i]), key(&new[j]))
		}
		switch {
		case c < 0:
			d.Remove = append(d.Remove, key(&old[i]))
			i++
		case c > 0:
			d.Add = append(d.Add, new[j])
			j++
		default:
			if !eq(&old[i], &new[j]) {
				d.Change = append(d.Change, new[j])
			}
			i++
			j++
		}
	}
	return d, nil
}

// applyList returns old with d applied, in key order; nil when empty.
func applyList[T any, K cmp.Ordered](old []T, d ListDelta[T, K], key func(*T) K) ([]T, error) {
	if d.IsZero() {
		if len(old) == 0 {
			return nil, nil
		}
		return sortedByKey(old, key)
	}
	old, err := sortedByKey(old, key)
	if err != nil {
		return nil, err
	}
	// Every key at most once across the delta.
	named := make(map[K]struct{}, len(d.Add)+len(d.Remove)+len(d.Change))
	name := func(k K) error {
		if _, dup := named[k]; dup {
			return fmt.Errorf("%w: key %v named twice", ErrBadDelta, k)
		}
		named[k] = struct{}{}
		return nil
	}
	for _, k := range d.Remove {
		if err := name(k); err != nil {
			return nil, err
		}
	}
	for i := range d.Add {
		if err := name(key(&d.Add[i])); err != nil {
			return nil, err
		}
	}
	for i := range d.Change {
		if err := name(key(&d.Change[i])); err != nil {
			return nil, err
		}
	}
	rm, err := sortedKeys(d.Remove)
	if err != nil {
		return nil, err
	}
	ch, err := sortedByKey(d.Change, key)
	if err != nil {
		return nil, err
	}
	add, err := sortedByKey(d.Add, key)
	if err != nil {
		return nil, err
	}
	n := len(old) - len(rm) + len(add)
	if n < 0 {
		return nil, fmt.Errorf("%w: removes %d of %d elements", ErrBadDelta, len(rm), len(old))
	}
	out := make([]T, 0, n)
	ri, ci, ai := 0, 0, 0
	for i := range old {
		k := key(&old[i])
		// Additions before k; one equal to k adds what exists.
		for ai < len(add) && key(&add[ai]) <= k {
			if key(&add[ai]) == k {
				return nil, fmt.Errorf("%w: adds %v, which exists", ErrBadDelta, k)
			}
			out = append(out, add[ai])
			ai++
		}
		if ri < len(rm) && rm[ri] < k || ci < len(ch) && key(&ch[ci]) < k {
			break // a remove or change of a key old lacks: reported below
		}
		switch {
		case ri < len(rm) && rm[ri] == k:
			ri++
		case ci < len(ch) && key(&ch[ci]) == k:
			out = append(out, ch[ci])
			ci++
		default:
			out = append(out, old[i])
		}
	}
	if ri < len(rm) {
		return nil, fmt.Errorf("%w: removes %v, which does not exist", ErrBadDelta, rm[ri])
	}
	if ci < len(ch) {
		return nil, fmt.Errorf("%w: changes %v, which does not exist", ErrBadDelta, key(&ch[ci]))
	}
	out = append(out, add[ai:]...)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func sortedKeys[K cmp.Ordered](ks []K) ([]K, error) {
	if slices.IsSorted(ks) {
		return ks, nil
	}
	return slices.Sorted(slices.Values(ks)), nil
}

// MapRevision returns the revision of a whole-map frame; ok is false for
// any other frame.
func (f *Frame) MapRevision() (rev uint64, ok bool) {
	switch {
	case f.GatewayMap != nil:
		return f.GatewayMap.Revision, true
	case f.ClientMap != nil:
		return f.ClientMap.Revision, true
	}
	return 0, false
}

// Maps is the last whole map an agent accepted on its connection: what the
// next delta applies to.
type Maps struct {
	Gateway *GatewayMap
	Client  *ClientMap
}

// Expand returns the whole-map frame the delta frame f makes of the last
// map, and the delta's To revision (also on error, for the resync ack).
// The last map is not changed: Remember it once it was applied.
func (m *Maps) Expand(f *Frame) (*Frame, uint64, error) {
	switch {
	case f.GatewayDelta != nil:
		d := f.GatewayDelta
		if m.Gateway == nil {
			return nil, d.To, fmt.Errorf("%w: no gateway map yet", ErrRevisionGap)
		}
		gm, err := ApplyGatewayDelta(m.Gateway, d)
		if err != nil {
			return nil, d.To, err
		}
		return &Frame{Type: TypeGatewayMap, GatewayMap: gm}, d.To, nil
	case f.ClientDelta != nil:
		d := f.ClientDelta
		if m.Client == nil {
			return nil, d.To, fmt.Errorf("%w: no client map yet", ErrRevisionGap)
		}
		cm, err := ApplyClientDelta(m.Client, d)
		if err != nil {
			return nil, d.To, err
		}
		return &Frame{Type: TypeClientMap, ClientMap: cm}, d.To, nil
	}
	return nil, 0, fmt.Errorf("%w: %s frame without its delta", ErrBadDelta, f.Type)
}

// Remember makes the whole map in f the one the next delta applies to.
func (m *Maps) Remember(f *Frame) { m.Gateway, m.Client = f.GatewayMap, f.ClientMap }
