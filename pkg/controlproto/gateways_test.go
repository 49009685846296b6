package controlproto

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// twoSegmentMap is a capability-9 map: segment ehr on gw-a then gw-b, lab
// on gw-b then gw-a.
func twoSegmentMap() *ClientMap {
	return &ClientMap{
		DeviceID: "d1",
		Gateways: []ClientGateway{
			{GatewayID: "gw-a", OverlayAddr: netip.MustParseAddr("100.64.0.1"), AllowedIPs: []netip.Prefix{pfx("100.64.0.1/32")}},
			{GatewayID: "gw-b", OverlayAddr: netip.MustParseAddr("100.64.0.2"), AllowedIPs: []netip.Prefix{pfx("100.64.0.2/32")}, Down: true},
		},
		Segments: []ClientSegment{
			{Name: "ehr", Gateways: []string{"gw-a", "gw-b"}, AllowedIPs: []netip.Prefix{pfx("10.20.0.5/32")}, Apps: []App{{Name: "ehr", Segment: "ehr"}}},
			{Name: "lab", Gateways: []string{"gw-b", "gw-a"}, AllowedIPs: []netip.Prefix{pfx("10.30.0.0/24")}, Apps: []App{{Name: "lab", Segment: "lab"}}},
		},
	}
}

func TestLegacyPutsEachSegmentOnItsFirstGateway(t *testing.T) {
	m := twoSegmentMap()
	l := m.Legacy()
	want := []ClientGateway{
		{GatewayID: "gw-a", OverlayAddr: netip.MustParseAddr("100.64.0.1"), AllowedIPs: []netip.Prefix{pfx("10.20.0.5/32"), pfx("100.64.0.1/32")}, Apps: []App{{Name: "ehr", Segment: "ehr"}}},
		{GatewayID: "gw-b", OverlayAddr: netip.MustParseAddr("100.64.0.2"), AllowedIPs: []netip.Prefix{pfx("10.30.0.0/24"), pfx("100.64.0.2/32")}, Apps: []App{{Name: "lab", Segment: "lab"}}},
	}
	if !reflect.DeepEqual(l.Gateways, want) || l.Segments != nil {
		t.Fatalf("legacy map:\n got %+v\nwant %+v", l.Gateways, want)
	}
	if !reflect.DeepEqual(m, twoSegmentMap()) {
		t.Fatal("Legacy modified its map")
	}
}

func TestResolveMovesSegmentAndKeepsIdlePeers(t *testing.T) {
	m := twoSegmentMap()
	// ehr fails over to gw-b: gw-a carries nothing.
	got := m.Resolve(func(sg ClientSegment) string { return "gw-b" }, false)
	if len(got) != 1 || got[0].GatewayID != "gw-b" || len(got[0].Apps) != 2 || got[0].Apps[0].Name != "ehr" {
		t.Fatalf("both on gw-b, idle dropped: %+v", got)
	}
	got = m.Resolve(func(sg ClientSegment) string { return "gw-b" }, true)
	if len(got) != 2 || !reflect.DeepEqual(got[0].AllowedIPs, []netip.Prefix{pfx("100.64.0.1/32")}) || got[0].Apps != nil {
		t.Fatalf("idle gw-a kept with its overlay address only: %+v", got)
	}
	// A choice outside the segment's list falls back to its first.
	got = m.Resolve(func(sg ClientSegment) string { return "gw-x" }, false)
	if !reflect.DeepEqual(got, m.Legacy().Gateways) {
		t.Fatalf("unknown choice: got %+v", got)
	}
	// A map from an older controller is used as it is.
	old := &ClientMap{Gateways: []ClientGateway{{GatewayID: "gw-a"}}}
	if got := old.Resolve(First, true); !reflect.DeepEqual(got, old.Gateways) {
		t.Fatalf("pre-9 map: %+v", got)
	}
}

// FuzzResolve: a client map from the network (JSON, as DecodeFrame reads
// it) never makes Resolve or Legacy panic, whatever its segments name; no
// gateway comes out more often than the map lists it, and each one's
// AllowedIPs come out sorted without repeats.
func FuzzResolve(f *testing.F) {
	seed, _ := json.Marshal(twoSegmentMap())
	f.Add(seed, uint8(0))
	f.Add([]byte(`{"gateways":[{"gateway_id":"a"},{"gateway_id":"a"}],"segments":[{"name":"s","gateways":["a","b",""]},{"name":"s","gateways":[]}]}`), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, pick uint8) {
		var m ClientMap
		if json.Unmarshal(body, &m) != nil {
			return
		}
		use := func(sg ClientSegment) string {
			return sg.Gateways[int(pick)%len(sg.Gateways)] // Resolve never asks about an empty list
		}
		listed := map[string]int{}
		for _, g := range m.Gateways {
			listed[g.GatewayID]++
		}
		for _, idle := range []bool{false, true} {
			out := map[string]int{}
			for _, g := range m.Resolve(use, idle) {
				out[g.GatewayID]++
				if m.Segments != nil && !slices.IsSortedFunc(g.AllowedIPs, func(a, b netip.Prefix) int {
					return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
				}) {
					t.Fatalf("gateway %s: AllowedIPs %v not sorted", g.GatewayID, g.AllowedIPs)
				}
			}
			for id, n := range out {
				if n > listed[id] {
					t.Fatalf("gateway %s out %d times, listed %d", id, n, listed[id])
				}
			}
		}
		m.Legacy()
	})
}

// Clients of capability 10 to 13 see a draining gateway as down; the map
// itself keeps Draining for newer ones.
func TestDrainAsDown(t *testing.T) {
	m := twoSegmentMap()
	if m.DrainAsDown() != m {
		t.Fatal("a map without a draining gateway was copied")
	}
	m.Gateways[0].Draining = true
	old := m.DrainAsDown()
	if !old.Gateways[0].Down || old.Gateways[0].Draining || !old.Gateways[1].Down {
		t.Fatalf("old shape: %+v, want gw-a down, not draining; gw-b still down", old.Gateways)
	}
	if !m.Gateways[0].Draining || m.Gateways[0].Down {
		t.Fatal("DrainAsDown modified its map")
	}
}
