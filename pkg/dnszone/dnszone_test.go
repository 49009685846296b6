package dnszone

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func TestMatchLongestZone(t *testing.T) {
	s, err := NewSet([]Zone{{Name: "hosp.internal.", TTL: 5}, {Name: "lab.hosp.internal.", TTL: 9}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"ehr.hosp.internal.":      "hosp.internal.",
		"hosp.internal.":          "hosp.internal.",
		"x.lab.hosp.internal.":    "lab.hosp.internal.",
		"internal.":               "",
		"nothosp.internal.":       "",
		"ehr.hosp.internal.evil.": "",
	} {
		z, ok := s.Match(name)
		if ok != (want != "") || z.Name != want {
			t.Errorf("Match(%q) = %q %v, want %q", name, z.Name, ok, want)
		}
	}
	if _, err := NewSet([]Zone{{Name: "a.", TTL: 5}, {Name: "a.", TTL: 5}}); err == nil {
		t.Error("duplicate zone accepted")
	}
}

func TestReverseZone(t *testing.T) {
	for p, want := range map[string]string{
		"10.20.0.0/24":  "0.20.10.in-addr.arpa.",
		"10.20.4.0/22":  "20.10.in-addr.arpa.",
		"10.0.0.0/8":    "10.in-addr.arpa.",
		"10.20.0.10/32": "10.0.20.10.in-addr.arpa.",
		"fd00:1::/64":   "0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
	} {
		if got := ReverseZone(netip.MustParsePrefix(p)); got != want {
			t.Errorf("ReverseZone(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestNXDomainDependsOnlyOnQueryAndZone(t *testing.T) {
	z := Zone{Name: "hosp.internal.", TTL: 5}
	q := new(dns.Msg)
	q.SetQuestion("ehr.hosp.internal.", dns.TypeA)
	q.SetEdns0(4096, true)
	a, _ := NXDomain(q, z).Pack()
	b, _ := NXDomain(q, z).Pack()
	if string(a) != string(b) {
		t.Fatal("NXDomain not deterministic")
	}
	r := NXDomain(q, z)
	if r.Rcode != dns.RcodeNameError || !r.Authoritative || r.RecursionAvailable || len(r.Ns) != 1 ||
		r.Ns[0].Header().Ttl != 5 || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != MaxUDPSize {
		t.Errorf("NXDomain = %v", r)
	}
}
