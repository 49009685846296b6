// Package dnszone holds what the gateway's split-horizon DNS server and the
// client's stub resolver must agree on byte for byte: which names are
// internal (the zones), and the negative answer for a name that does not
// exist for the asker.
//
// Hiding works only if "you may not see this name" and "this name never
// existed" are the same answer. Both the gateway (for a name the asking
// device is not entitled to) and the client stub (for an internal name in no
// segment the device can reach, which it answers without asking anyone)
// build that answer with [NXDomain], from nothing but the query and the
// zone: never from the name's existence, the asker, or the time.
package dnszone

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of every internal answer, positive and negative, in
// seconds, when the controller configures none. It is short so that a
// revoked entitlement outlives its last positive answer by at most this.
const DefaultTTL = 5

// MaxUDPSize is the largest UDP response the gateway sends and the largest
// EDNS0 buffer it advertises (the DNS flag day 2020 value; it fits the
// overlay MTU without fragmentation).
const MaxUDPSize = 1232

// SOA timers. They do not matter to stub resolvers (no zone transfers), but
// they are fixed so that every SOA Cordon sends is the same.
const (
	soaSerial  = 1
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// Zone is one internal zone: a forward zone such as "hosp.internal." or a
// reverse zone such as "0.20.10.in-addr.arpa.".
type Zone struct {
	Name string // fully qualified, lower case
	TTL  uint32 // seconds, for positive and negative answers
}

// Canonical returns name lower-cased and fully qualified.
func Canonical(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}

// Validate checks that z is usable: a valid, canonical domain name and a TTL.
func (z Zone) Validate() error {
	if _, ok := dns.IsDomainName(z.Name); !ok || z.Name == "" || z.Name == "." {
		return fmt.Errorf("dns zone %q: not a domain name", z.Name)
	}
	if z.Name != Canonical(z.Name) {
		return fmt.Errorf("dns zone %q: must be lower case and end in a dot", z.Name)
	}
	if z.TTL == 0 {
		return fmt.Errorf("dns zone %q: TTL must be at least 1 second", z.Name)
	}
	return nil
}

// SOA returns the zone's SOA record, the same in every answer.
func (z Zone) SOA() *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: z.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: z.TTL},
		Ns:      z.Name,
		Mbox:    "hostmaster." + z.Name,
		Serial:  soaSerial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  z.TTL,
	}
}

// Set is an immutable set of zones that finds the zone of a name.
type Set struct {
	zones map[string]Zone
}

// NewSet builds a set. It rejects invalid or duplicate zones. Nested zones
// are allowed; a name belongs to the longest zone that contains it.
func NewSet(zones []Zone) (*Set, error) {
	s := &Set{zones: make(map[string]Zone, len(zones))}
	for _, z := range zones {
		if err := z.Validate(); err != nil {
			return nil, err
		}
		if _, dup := s.zones[z.Name]; dup {
			return nil, fmt.Errorf("dns zone %q listed twice", z.Name)
		}
		s.zones[z.Name] = z
	}
	return s, nil
}

// Match returns the zone of a canonical name (the longest zone containing
// it), if the name is internal.
func (s *Set) Match(name string) (Zone, bool) {
	if s == nil {
		return Zone{}, false
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if z, ok := s.zones[name[off:]]; ok {
			return z, true
		}
	}
	return Zone{}, false
}

// Zones returns the zones, sorted by name.
func (s *Set) Zones() []Zone {
	if s == nil {
		return nil
	}
	out := make([]Zone, 0, len(s.zones))
	for _, z := range s.zones {
		out = append(out, z)
	}
	slices.SortFunc(out, func(a, b Zone) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Len returns the number of zones.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.zones)
}

// Reply starts an authoritative response to q with rcode: the header flags
// every Cordon answer carries, the question echoed, and an EDNS0 record if
// the query had one. It never depends on anything but q.
func Reply(q *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id = q.Id
	m.Response = true
	m.Opcode = q.Opcode
	m.Authoritative = true
	m.RecursionDesired = q.RecursionDesired
	m.CheckingDisabled = q.CheckingDisabled
	m.Rcode = rcode
	m.Question = slices.Clone(q.Question)
	if q.IsEdns0() != nil {
		m.SetEdns0(MaxUDPSize, false)
	}
	return m
}

// NXDomain is the answer for a name in zone z that does not exist for the
// asker, whether it exists for someone else or for nobody: NXDOMAIN, the
// zone's SOA in the authority section (its TTL is the negative TTL).
func NXDomain(q *dns.Msg, z Zone) *dns.Msg {
	m := Reply(q, dns.RcodeNameError)
	m.Ns = []dns.RR{z.SOA()}
	return m
}

// NoData is the answer for a name that exists for the asker but has no
// record of the asked type.
func NoData(q *dns.Msg, z Zone) *dns.Msg {
	m := Reply(q, dns.RcodeSuccess)
	m.Ns = []dns.RR{z.SOA()}
	return m
}

// ReverseZone returns the reverse zone (in-addr.arpa or ip6.arpa) that
// covers prefix p: the longest one whose labels p fixes completely (octet
// boundaries for IPv4, nibble boundaries for IPv6), so a /22 gets the zone of
// its /16.
func ReverseZone(p netip.Prefix) string {
	p = p.Masked()
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		n := p.Bits() / 8
		var labels []string
		for i := n - 1; i >= 0; i-- {
			labels = append(labels, fmt.Sprint(b[i]))
		}
		return strings.Join(append(labels, "in-addr.arpa."), ".")
	}
	b := a.As16()
	n := p.Bits() / 4
	var labels []string
	for i := n - 1; i >= 0; i-- {
		v := b[i/2]
		if i%2 == 0 {
			v >>= 4
		}
		labels = append(labels, fmt.Sprintf("%x", v&0xf))
	}
	return strings.Join(append(labels, "ip6.arpa."), ".")
}

// Apex is the answer for the zone's own name, which exists for everyone and
// says nothing about any app: its SOA for SOA (and ANY) queries, NODATA
// otherwise.
func Apex(q *dns.Msg, z Zone) *dns.Msg {
	qt := q.Question[0].Qtype
	if qt != dns.TypeSOA && qt != dns.TypeANY {
		return NoData(q, z)
	}
	m := Reply(q, dns.RcodeSuccess)
	soa := z.SOA()
	soa.Hdr.Name = q.Question[0].Name
	m.Answer = []dns.RR{soa}
	return m
}
