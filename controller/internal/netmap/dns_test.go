package netmap

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

func TestDNSZones(t *testing.T) {
	snap := snapshot(t)
	snap.Apps = append(snap.Apps, store.App{Name: "odd", Segment: "lab", DNSName: "Odd.Elsewhere.Example", Addr: netip.MustParsePrefix("10.30.0.6/32")})
	snap.Segments = append(snap.Segments, store.Segment{Name: "wide", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/7"), netip.MustParsePrefix("fd00:1::/62")}})
	ix := NewIndex(snap)
	got := ix.DNSZones(DNSConfig{Zones: []string{"H.internal", "h.internal."}, TTL: 7})
	want := []controlproto.DNSZone{
		{Name: "0.20.10.in-addr.arpa.", TTL: 7},
		{Name: "0.30.10.in-addr.arpa.", TTL: 7},
		{Name: "0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.", TTL: 7}, // a /62 rounds to its /60
		{Name: "elsewhere.example.", TTL: 7},                      // derived: an app outside every configured zone
		{Name: "h.internal.", TTL: 7},
	}
	// sorted by name
	if !reflect.DeepEqual(got, sortedZones(want)) {
		t.Errorf("zones:\n got %v\nwant %v", got, sortedZones(want))
	}
	// Without configuration, zones come from the app names; TTL defaults.
	got = NewIndex(snapshot(t)).DNSZones(DNSConfig{})
	if len(got) != 3 || got[2].Name != "h.internal." || got[2].TTL != 5 {
		t.Errorf("derived zones: %v", got)
	}
	if err := (DNSConfig{Zones: []string{"bad..name"}}).Validate(); err == nil {
		t.Error("bad zone name accepted")
	}
	if err := (DNSConfig{Zones: []string{"."}}).Validate(); err == nil {
		t.Error("root zone accepted")
	}
}

func sortedZones(z []controlproto.DNSZone) []controlproto.DNSZone {
	out := append([]controlproto.DNSZone(nil), z...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Name < out[i].Name {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
