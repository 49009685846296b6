package controlproto

import (
	"cmp"
	"net/netip"
	"slices"
)

// Every gateway of a segment (capability 10).
//
// A map of capability 10 lists each segment's gateways in the device's
// order of preference (ClientMap.Segments) and every one of those gateways
// as a peer routing only its overlay address. The client picks one gateway
// per segment, the first of the list that it believes alive, and routes
// the segment through it: Resolve turns the map and that choice into the
// per-gateway shape WireGuard, routes and the DNS stub apply (each
// gateway's AllowedIPs and Apps the segments it carries). Legacy is the
// same resolution with the controller's choice, the first of each list,
// for clients older than capability 10.

// Resolve returns the gateways of m with each segment's apps and
// AllowedIPs on the gateway use picks for it (its ID must be one of the
// segment's Gateways; an unknown or empty answer picks the first). With
// idle set, gateways that carry no segment stay in the result routing
// only their overlay address (the client keeps them as peers, to probe
// them and fail over without a new peer); otherwise they are dropped. A
// map without Segments (controllers before capability 10) is returned as
// it is. m is not modified; the result shares apps with it.
func (m *ClientMap) Resolve(use func(ClientSegment) string, idle bool) []ClientGateway {
	if m.Segments == nil {
		return m.Gateways
	}
	byID := make(map[string]int, len(m.Gateways))
	out := make([]ClientGateway, len(m.Gateways))
	for i, g := range m.Gateways {
		out[i] = g
		out[i].AllowedIPs = []netip.Prefix{netip.PrefixFrom(g.OverlayAddr, g.OverlayAddr.BitLen())}
		out[i].Apps = nil
		out[i].Down, out[i].Draining = false, false // not in the old shape
		byID[g.GatewayID] = i
	}
	carries := make([]bool, len(out))
	for _, sg := range m.Segments {
		if len(sg.Gateways) == 0 {
			continue
		}
		id := use(sg)
		if !slices.Contains(sg.Gateways, id) {
			id = sg.Gateways[0]
		}
		i, ok := byID[id]
		if !ok {
			continue // a map that names a gateway it does not list: route nothing there
		}
		carries[i] = true
		out[i].AllowedIPs = append(out[i].AllowedIPs, sg.AllowedIPs...)
		out[i].Apps = append(out[i].Apps, sg.Apps...)
	}
	kept := out[:0]
	for i, g := range out {
		if !carries[i] && !idle {
			continue
		}
		slices.SortFunc(g.AllowedIPs, ComparePrefix)
		g.AllowedIPs = slices.Compact(g.AllowedIPs)
		// Apps in name order, as one gateway's apps always were.
		slices.SortStableFunc(g.Apps, func(a, b App) int { return cmp.Compare(a.Name, b.Name) })
		kept = append(kept, g)
	}
	return kept
}

// First picks the first gateway of a segment's list: the controller's
// preference.
func First(sg ClientSegment) string { return sg.Gateways[0] }

// Legacy returns m in the shape clients before capability 10 know: each
// segment on the first gateway of its list, no Segments. m is not
// modified.
func (m *ClientMap) Legacy() *ClientMap {
	if m.Segments == nil {
		return m
	}
	out := *m
	out.Gateways = m.Resolve(First, false)
	if len(out.Gateways) == 0 {
		out.Gateways = nil
	}
	out.Segments = nil
	return &out
}

// DrainAsDown returns m in the shape clients of capability 10 to 13 know:
// a draining gateway marked Down, so that they move off it (at once,
// cutting the connections open through it, as on a failover) instead of
// staying on it, which is all they know to do with a gateway that is
// merely ordered later. m is not modified.
func (m *ClientMap) DrainAsDown() *ClientMap {
	if !slices.ContainsFunc(m.Gateways, func(g ClientGateway) bool { return g.Draining }) {
		return m
	}
	out := *m
	out.Gateways = slices.Clone(m.Gateways)
	for i := range out.Gateways {
		g := &out.Gateways[i]
		g.Down, g.Draining = g.Down || g.Draining, false
	}
	return &out
}
