package netmap

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// The directory's maps come from the directory as a policy (the one map
// path); these are the maps as the directory's own path computed them
// before (every device against every app), to check on random directories
// that agents see exactly what they saw.

func refEntitled(ix *Index, user string, app string) []store.Rule {
	u, ok := ix.users[user]
	if !ok || u.Disabled {
		return nil
	}
	var out []store.Rule
	for _, r := range ix.rulesByApp[app] {
		if slices.Contains(ix.groupMembers[r.Group], user) {
			out = append(out, r)
		}
	}
	return out
}

func refGatewayMap(ix *Index, gw store.Gateway) *controlproto.GatewayMap {
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
	for _, d := range ix.snap.Devices {
		var ids []policy.RuleID
		for _, a := range apps {
			if !ix.allows(d, string(a.Classification)) {
				continue
			}
			for _, r := range refEntitled(ix, d.User, a.Name) {
				ids = append(ids, policy.RuleID(r.Name))
			}
		}
		if len(ids) == 0 {
			continue
		}
		slices.Sort(ids)
		m.Peers = append(m.Peers, controlproto.GatewayPeer{
			Peer:      policy.Peer{DeviceID: d.ID, User: d.User, Addr: d.OverlayAddr, Rules: slices.Compact(ids)},
			PublicKey: d.PublicKey,
		})
	}
	slices.SortFunc(m.Peers, func(a, b controlproto.GatewayPeer) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	return m
}

func refClientMap(ix *Index, d store.Device) *controlproto.ClientMap {
	m := &controlproto.ClientMap{DeviceID: d.ID, User: d.User, OverlayAddr: d.OverlayAddr}
	byGW := map[string]*controlproto.ClientGateway{}
	for _, a := range ix.snap.Apps {
		if len(refEntitled(ix, d.User, a.Name)) == 0 || !ix.allows(d, string(a.Classification)) {
			continue
		}
		gw, ok := refServingGateway(ix, a.Segment, d.ID)
		if !ok {
			continue
		}
		cg := clientGateway(byGW, gw)
		cg.AllowedIPs = append(cg.AllowedIPs, a.Addr.Masked())
		cg.Apps = append(cg.Apps, wireApp(a))
	}
	for _, cg := range byGW {
		slices.SortFunc(cg.AllowedIPs, controlproto.ComparePrefix)
		cg.AllowedIPs = slices.Compact(cg.AllowedIPs)
		m.Gateways = append(m.Gateways, *cg)
	}
	slices.SortFunc(m.Gateways, func(a, b controlproto.ClientGateway) int { return cmp.Compare(a.GatewayID, b.GatewayID) })
	return m
}

// refServingGateway is the gateway an old client routes segment through:
// the first of the device's order of the segment's gateways with an
// endpoint and a key.
func refServingGateway(ix *Index, segment, device string) (store.Gateway, bool) {
	var ids []string
	for _, g := range ix.gwBySeg[segment] {
		if g.Endpoint != "" && !g.PublicKey.IsZero() {
			ids = append(ids, g.ID)
		}
	}
	if len(ids) == 0 {
		return store.Gateway{}, false
	}
	return ix.gateways[RankGateways(device, ids, nil)[0]], true
}

func TestDirectoryMapsMatchReference(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	limits := session.Limits{DefaultIdle: time.Hour, Idle: map[session.Classification]time.Duration{"phi": 20 * time.Minute}, Absolute: 12 * time.Hour}
	for seed := range 200 {
		r := rand.New(rand.NewPCG(uint64(seed), 3))
		snap := &store.Snapshot{}
		for i := range 3 {
			snap.Segments = append(snap.Segments, store.Segment{Name: fmt.Sprint("s", i), CIDRs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", i))}})
		}
		for i := range 8 {
			a := store.App{Name: fmt.Sprint("a", i), Segment: fmt.Sprint("s", r.IntN(3)),
				Addr:           netip.MustParsePrefix(fmt.Sprintf("10.%d.0.%d/%d", r.IntN(3), 8*r.IntN(4), []int{32, 29}[r.IntN(2)])),
				Proto:          []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoAny, policy.ProtoICMP}[r.IntN(4)],
				DNSName:        []string{"", fmt.Sprintf("a%d.h.internal", i), "shared.h.internal"}[r.IntN(3)],
				Classification: []store.Classification{"phi", "internal", "public", ""}[r.IntN(4)]}
			switch r.IntN(3) {
			case 0:
				a.Ports = []policy.PortRange{{First: 443, Last: 443}, {First: 80, Last: 80}}
			case 1:
				a.Ports = []policy.PortRange{}
			}
			snap.Apps = append(snap.Apps, a)
		}
		for i := range 6 {
			snap.Users = append(snap.Users, store.User{Name: fmt.Sprint("u", i), Disabled: r.IntN(6) == 0})
		}
		for i := range 4 {
			g := store.Group{Name: fmt.Sprint("g", i)}
			for j := range 6 {
				if r.IntN(3) == 0 {
					g.Members = append(g.Members, fmt.Sprint("u", j))
				}
			}
			snap.Groups = append(snap.Groups, g)
		}
		for i := range 10 {
			snap.Rules = append(snap.Rules, store.Rule{Name: fmt.Sprint("r", i), Group: fmt.Sprint("g", r.IntN(4)), App: fmt.Sprint("a", r.IntN(8))})
		}
		for i := range 4 {
			g := store.Gateway{ID: fmt.Sprint("gw", i), Segment: fmt.Sprint("s", r.IntN(3)), OverlayAddr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), PublicKey: key(t)}
			if r.IntN(3) > 0 {
				g.Endpoint = "192.0.2.1:51820"
			}
			snap.Gateways = append(snap.Gateways, g)
		}
		view := map[string]*session.Session{}
		for i := range 10 {
			d := store.Device{ID: fmt.Sprint("d", i), User: fmt.Sprint("u", r.IntN(7)), OverlayAddr: netip.AddrFrom4([4]byte{100, 65, 0, byte(i + 1)})}
			if r.IntN(8) == 0 {
				d.RevokedAt = now
			}
			snap.Devices = append(snap.Devices, d)
			if r.IntN(4) > 0 {
				started := now.Add(-time.Duration(5+r.IntN(60)) * time.Minute)
				view[d.ID] = &session.Session{ID: "s" + d.ID, DeviceID: d.ID, User: d.User, Started: started, LastActivity: started}
			}
		}
		ix := NewIndex(snap)
		if seed%2 == 0 {
			ix.SetSessions(limits, view, now)
		}
		js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
		for _, g := range ix.snap.Gateways {
			if got, want := js(ix.GatewayMap(g)), js(refGatewayMap(ix, g)); got != want {
				t.Fatalf("seed %d: gateway %s:\n got %s\nwant %s", seed, g.ID, got, want)
			}
		}
		for _, d := range ix.snap.Devices {
			if got, want := js(ix.ClientMap(d).Legacy()), js(refClientMap(ix, d)); got != want {
				t.Fatalf("seed %d: device %s:\n got %s\nwant %s", seed, d.ID, got, want)
			}
		}
	}
}
