package dns

import (
	"fmt"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// BenchmarkHandle measures one query end to end (parse, decide, pack) with
// 10,000 apps and 100,000 devices; bench/dns measures it over sockets
// against CoreDNS.
func BenchmarkHandle(b *testing.B) {
	const apps, devices, groups = 10000, 100000, 100
	var wire []controlproto.App
	var rules []policy.Rule
	for i := range apps {
		a := controlproto.App{Name: fmt.Sprintf("app%05d", i), DNSName: fmt.Sprintf("app%05d.hosp.internal", i),
			Addr:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
			Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}}
		wire = append(wire, a)
		rules = append(rules, policy.Rule{ID: policy.RuleID("r-" + a.Name), App: a.Name, Dst: []netip.Prefix{a.Addr}, Proto: a.Proto, Ports: a.Ports})
	}
	per := apps / groups
	peers := make([]policy.Peer, devices)
	for d := range devices {
		var ids []policy.RuleID
		g := d % groups
		for j := range per {
			ids = append(ids, rules[g*per+j].ID)
		}
		peers[d] = policy.Peer{DeviceID: fmt.Sprint(d), Addr: netip.AddrFrom4([4]byte{100, 64 + byte(d>>16), byte(d >> 8), byte(d)}), Rules: ids}
	}
	pol, err := policy.Compile(rules, peers)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := New(Config{Policy: func() Decider { return pol }})
	defer s.Close()
	if err := s.SetMap([]controlproto.DNSZone{{Name: "hosp.internal.", TTL: 5}}, wire); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		app  int // asked by device 0 (group 0: apps 0-99)
	}{{"entitled", 7}, {"hidden", 5000}, {"nonexistent", -1}} {
		b.Run(tc.name, func(b *testing.B) {
			q := new(mdns.Msg)
			if tc.app < 0 {
				q.SetQuestion("nosuch.hosp.internal.", mdns.TypeA)
			} else {
				q.SetQuestion(fmt.Sprintf("app%05d.hosp.internal.", tc.app), mdns.TypeA)
			}
			raw, _ := q.Pack()
			src := netip.AddrPortFrom(peers[0].Addr, 5353)
			b.ReportAllocs()
			for b.Loop() {
				if s.Handle(src, raw, false) == nil {
					b.Fatal("dropped")
				}
			}
		})
	}
}
