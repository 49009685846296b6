package netmap

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

func key(t *testing.T) wgkey.Public {
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func snapshot(t *testing.T) *store.Snapshot {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	return &store.Snapshot{
		Segments: []store.Segment{{Name: "lan", CIDRs: []netip.Prefix{pfx("10.20.0.0/24")}}, {Name: "lab", CIDRs: []netip.Prefix{pfx("10.30.0.0/24")}}},
		Apps: []store.App{
			{Name: "billing", Segment: "lan", DNSName: "billing.h.internal", Addr: pfx("10.20.0.11/32"), Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 80, Last: 80}}},
			{Name: "ehr", Segment: "lan", DNSName: "ehr.h.internal", Addr: pfx("10.20.0.10/32"), Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
			{Name: "lis", Segment: "lab", DNSName: "lis.h.internal", Addr: pfx("10.30.0.5/32"), Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
		},
		Users:  []store.User{{Name: "nurse"}, {Name: "clerk"}, {Name: "gone", Disabled: true}},
		Groups: []store.Group{{Name: "clinicians", Members: []string{"gone", "nurse"}}, {Name: "lab", Members: []string{"nurse"}}},
		Rules:  []store.Rule{{Name: "clin-ehr", Group: "clinicians", App: "ehr"}, {Name: "lab-lis", Group: "lab", App: "lis"}},
		Gateways: []store.Gateway{
			{ID: "gw-b", Segment: "lan", PublicKey: key(t), OverlayAddr: addr("100.64.0.2"), Endpoint: "192.0.2.2:51820"},
			{ID: "gw-a", Segment: "lan", PublicKey: key(t), OverlayAddr: addr("100.64.0.1"), Endpoint: "192.0.2.1:51820"},
			{ID: "gw-lab", Segment: "lab", PublicKey: key(t), OverlayAddr: addr("100.64.0.3")},
		},
		Devices: []store.Device{
			{ID: "dev-n", User: "nurse", PublicKey: key(t), OverlayAddr: addr("100.64.0.10")},
			{ID: "dev-c", User: "clerk", PublicKey: key(t), OverlayAddr: addr("100.64.0.11")},
			{ID: "dev-g", User: "gone", PublicKey: key(t), OverlayAddr: addr("100.64.0.12")},
		},
	}
}

func TestGatewayMapHasOnlyEntitledPeers(t *testing.T) {
	snap := snapshot(t)
	ix := NewIndex(snap)
	gw, _ := ix.Gateway("gw-a")
	m := ix.GatewayMap(gw)
	if len(m.Peers) != 1 || m.Peers[0].DeviceID != "dev-n" {
		t.Fatalf("peers = %+v, want only the nurse's device (clerk has no rule, gone is disabled)", m.Peers)
	}
	if !slices.Equal(m.Peers[0].Rules, []policy.RuleID{"clin-ehr"}) {
		t.Fatalf("nurse rules at lan gateway = %v, want [clin-ehr] (lab-lis belongs to another segment)", m.Peers[0].Rules)
	}
	if len(m.Rules) != 1 || m.Rules[0].App != "ehr" || m.Rules[0].Ports[0].First != 443 {
		t.Fatalf("rules = %+v", m.Rules)
	}
	if _, err := policy.Compile(m.Rules, []policy.Peer{m.Peers[0].Peer}); err != nil {
		t.Fatalf("gateway map does not compile: %v", err)
	}
}

func TestClientMapAllowedIPsOnlyEntitledApps(t *testing.T) {
	ix := NewIndex(snapshot(t))
	d, _ := ix.Device("dev-n")
	m := ix.ClientMap(d)
	// lab's only gateway has no endpoint yet, so only lan is reachable; of
	// lan, the nurse may reach ehr and not billing. Both of lan's gateways
	// are listed, each routing only its overlay address; the segment
	// carries ehr's address and the device's order of the two.
	if len(m.Gateways) != 2 || m.Gateways[0].GatewayID != "gw-a" || m.Gateways[1].GatewayID != "gw-b" {
		t.Fatalf("gateways = %+v", m.Gateways)
	}
	for _, g := range m.Gateways {
		if !slices.Equal(g.AllowedIPs, []netip.Prefix{netip.PrefixFrom(g.OverlayAddr, 32)}) || len(g.Apps) != 0 {
			t.Fatalf("gateway %s routes %v and carries %d apps: want only its overlay address", g.GatewayID, g.AllowedIPs, len(g.Apps))
		}
	}
	order := RankGateways("dev-n", []string{"gw-a", "gw-b"}, nil)
	if len(m.Segments) != 1 || m.Segments[0].Name != "lan" || !slices.Equal(m.Segments[0].Gateways, order) ||
		!slices.Equal(m.Segments[0].AllowedIPs, []netip.Prefix{netip.MustParsePrefix("10.20.0.10/32")}) {
		t.Fatalf("segments = %+v, want lan with ehr on %v", m.Segments, order)
	}
	// An old client gets lan on the first of its order only.
	l := m.Legacy()
	first, _ := ix.Gateway(order[0])
	want := []netip.Prefix{netip.MustParsePrefix("10.20.0.10/32"), netip.PrefixFrom(first.OverlayAddr, 32)}
	slices.SortFunc(want, controlproto.ComparePrefix)
	if len(l.Gateways) != 1 || l.Gateways[0].GatewayID != order[0] || !slices.Equal(l.Gateways[0].AllowedIPs, want) {
		t.Fatalf("legacy gateways = %+v, want %s routing %v", l.Gateways, order[0], want)
	}
	for _, dev := range []string{"dev-c", "dev-g"} {
		d, _ := ix.Device(dev)
		if m := ix.ClientMap(d); len(m.Gateways) != 0 {
			t.Fatalf("%s sees gateways %+v, want none", dev, m.Gateways)
		}
	}
}

// A drained gateway is marked in client maps and ordered after the live
// one; its own map tells it to drain.
func TestDrainedGatewayInMaps(t *testing.T) {
	snap := snapshot(t)
	for i := range snap.Gateways {
		if snap.Gateways[i].ID == "gw-a" {
			snap.Gateways[i].DrainedAt = time.Unix(1_800_000_000, 0)
		}
	}
	ix := NewIndex(snap)
	d, _ := ix.Device("dev-n")
	m := ix.ClientMap(d)
	if len(m.Segments) != 1 || !slices.Equal(m.Segments[0].Gateways, []string{"gw-b", "gw-a"}) {
		t.Fatalf("segments = %+v, want lan on gw-b then the draining gw-a", m.Segments)
	}
	for _, g := range m.Gateways {
		if g.Draining != (g.GatewayID == "gw-a") || g.Down {
			t.Fatalf("gateway %s: draining %v down %v, want only gw-a draining", g.GatewayID, g.Draining, g.Down)
		}
	}
	ga, _ := ix.Gateway("gw-a")
	gb, _ := ix.Gateway("gw-b")
	if !ix.GatewayMap(ga).Draining || ix.GatewayMap(gb).Draining {
		t.Fatal("gateway maps: want gw-a told to drain, gw-b not")
	}
}

func TestMapsAreDeterministic(t *testing.T) {
	a, b := snapshot(t), snapshot(t)
	b.Gateways, b.Devices = a.Gateways, a.Devices // same keys
	slices.Reverse(b.Apps)
	slices.Reverse(b.Rules)
	slices.Reverse(b.Gateways)
	ia, ib := NewIndex(a), NewIndex(b)
	ga, _ := ia.Gateway("gw-a")
	gb, _ := ib.Gateway("gw-a")
	ja, _ := json.Marshal(ia.GatewayMap(ga))
	jb, _ := json.Marshal(ib.GatewayMap(gb))
	if string(ja) != string(jb) {
		t.Fatalf("gateway map depends on input order:\n%s\n%s", ja, jb)
	}
	da, _ := ia.Device("dev-n")
	db, _ := ib.Device("dev-n")
	if !reflect.DeepEqual(ia.ClientMap(da), ib.ClientMap(db)) {
		t.Fatal("client map depends on input order")
	}
}
