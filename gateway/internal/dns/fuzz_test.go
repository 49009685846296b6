package dns

import (
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzHandle feeds raw bytes to the query handler: it must never panic, and
// whatever it answers must be a parseable response to the same ID no larger
// than a UDP answer may be.
func FuzzHandle(f *testing.F) {
	for _, name := range []string{"ehr.hosp.internal.", "billing.hosp.internal.", "_https._tcp.ehr.hosp.internal.",
		"10.0.20.10.in-addr.arpa.", "charts.hosp.internal.", "example.com.", "hosp.internal."} {
		for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypePTR, mdns.TypeANY} {
			q := new(mdns.Msg)
			q.SetQuestion(name, qt)
			q.SetEdns0(4096, true)
			b, _ := q.Pack()
			f.Add(b, false)
		}
	}
	f.Add([]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, true)
	fx := newFixture(f, testApps(), "ehr", "pacs")
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		for _, src := range []netip.Addr{nurse, clerk, unknown} {
			resp := fx.s.Handle(netip.AddrPortFrom(src, 5353), b, tcp)
			if resp == nil {
				continue
			}
			if !tcp && len(resp) > 1232 {
				t.Fatalf("UDP answer of %d bytes", len(resp))
			}
			var r mdns.Msg
			if err := r.Unpack(resp); err != nil && !r.Truncated {
				t.Fatalf("unparseable answer: %v", err)
			}
			if len(b) >= 2 && r.Id != uint16(b[0])<<8|uint16(b[1]) {
				t.Fatalf("answer ID %d for query %x", r.Id, b[:2])
			}
		}
		for len(fx.events) > 0 {
			<-fx.events
		}
	})
}
