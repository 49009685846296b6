package dns

import (
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Deny reasons recorded in dns-deny events.
const (
	reasonHidden      = "not-entitled"
	reasonNonexistent = "no-such-name"
)

// Handle answers one raw DNS query from src and returns the raw response,
// or nil to drop it. tcp says the query came over TCP (no size limit below
// 64 KiB; over UDP the answer is truncated to the asker's EDNS0 size, at
// most [dnszone.MaxUDPSize]). It never panics on any input.
func (s *Server) Handle(src netip.AddrPort, query []byte, tcp bool) []byte {
	if len(query) < 12 || len(query) > maxQuerySize {
		s.stats.dropped.Add(1)
		return nil
	}
	q := new(mdns.Msg)
	if err := q.Unpack(query); err != nil {
		// A header we could read gets FORMERR; anything less is dropped.
		var h mdns.Msg
		headerOnly(query, &h)
		if h.Response {
			s.stats.dropped.Add(1)
			return nil
		}
		s.stats.formErr.Add(1)
		return s.pack(formErr(&h), 512, tcp)
	}
	if q.Response {
		s.stats.dropped.Add(1)
		return nil
	}
	r := s.answer(src, q, tcp)
	size := 512
	if o := q.IsEdns0(); o != nil {
		size = max(512, min(int(o.UDPSize()), dnszone.MaxUDPSize))
	}
	return s.pack(r, size, tcp)
}

// headerOnly fills h from the first bytes of b (ID, flags); len(b) >= 12.
func headerOnly(b []byte, h *mdns.Msg) {
	h.Id = uint16(b[0])<<8 | uint16(b[1])
	h.Response = b[2]&0x80 != 0
	h.Opcode = int(b[2]>>3) & 0xf
	h.RecursionDesired = b[2]&0x01 != 0
}

func formErr(h *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.Id = h.Id
	m.Response = true
	m.Opcode = h.Opcode
	m.RecursionDesired = h.RecursionDesired
	m.Rcode = mdns.RcodeFormatError
	return m
}

func (s *Server) pack(m *mdns.Msg, size int, tcp bool) []byte {
	if tcp {
		size = mdns.MaxMsgSize
	}
	m.Truncate(size)
	b, err := m.Pack()
	if err != nil {
		s.stats.dropped.Add(1)
		return nil
	}
	return b
}

// answer decides the response to a parsed query. The order of the checks
// matters for hiding: everything that can refuse a query does so from the
// query alone, before the name's existence or the asker's entitlements are
// looked at; from then on a name the asker may not see takes exactly the
// path of a name that does not exist.
func (s *Server) answer(src netip.AddrPort, q *mdns.Msg, tcp bool) *mdns.Msg {
	if q.Opcode != mdns.OpcodeQuery {
		s.stats.notImp.Add(1)
		r := dnszone.Reply(q, mdns.RcodeNotImplemented)
		r.Authoritative = false
		return r
	}
	if len(q.Question) != 1 || len(q.Answer) != 0 || len(q.Ns) != 0 {
		s.stats.formErr.Add(1)
		r := dnszone.Reply(q, mdns.RcodeFormatError)
		r.Authoritative = false
		return r
	}
	qs := q.Question[0]
	name := dnszone.Canonical(qs.Name)
	v := s.view.Load()
	z, internal := v.zones.Match(name)
	if !internal || qs.Qclass != mdns.ClassINET {
		s.stats.refused.Add(1)
		r := dnszone.Reply(q, mdns.RcodeRefused)
		r.Authoritative = false
		return r
	}
	switch qs.Qtype {
	case mdns.TypeAXFR, mdns.TypeIXFR:
		s.stats.refused.Add(1)
		return dnszone.Reply(q, mdns.RcodeRefused)
	}
	pol := s.cfg.Policy()
	l := lookup{s: s, v: v, pol: pol, src: src.Addr().Unmap(), z: z, q: q}
	r, denied := l.resolve(name, qs.Qtype)
	if denied != nil {
		s.stats.nxdomain.Add(1)
		s.denied(src, tcp, pol, name, denied)
		return dnszone.NXDomain(q, z)
	}
	s.stats.answered.Add(1)
	return r
}

// lookup is one query's resolution.
type lookup struct {
	s   *Server
	v   *view
	pol Decider
	src netip.Addr
	z   dnszone.Zone
	q   *mdns.Msg
}

// denial says why a name did not exist for the asker.
type denial struct {
	reason string
	app    string // an app the name would have shown, if hidden
}

// visible reports whether src may reach app a: the flow authorizer's
// decision for any of the app's (proto, port) pairs.
func (l *lookup) visible(a *app) bool {
	if l.pol == nil {
		return false
	}
	for _, p := range a.probes {
		if l.pol.Decide(l.src, a.dst, p.proto, p.port).Verdict == policy.Allow {
			return true
		}
	}
	return false
}

func (l *lookup) visibleAny(apps []*app) bool {
	for _, a := range apps {
		if l.visible(a) {
			return true
		}
	}
	return false
}

func (l *lookup) hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: l.z.TTL}
}

// resolve answers name/qtype, or says why the name does not exist for the
// asker.
func (l *lookup) resolve(name string, qtype uint16) (*mdns.Msg, *denial) {
	qname := l.q.Question[0].Name // answers use the asker's spelling
	n := l.v.names[name]
	if name == l.z.Name {
		// The apex exists for everyone and says nothing about any app,
		// unless it is itself the name of an app the asker may see.
		if qtype == mdns.TypeSOA || n == nil || !l.visibleAny(n.hosts) {
			return dnszone.Apex(l.q, l.z), nil
		}
		r := dnszone.Reply(l.q, mdns.RcodeSuccess)
		if r.Answer = l.addrs(qname, n.hosts, qtype); len(r.Answer) == 0 {
			r.Ns = []mdns.RR{l.z.SOA()}
		}
		return r, nil
	}
	if n == nil {
		if r, ok := l.srv(name, qname, qtype); ok {
			return r, nil
		}
		return nil, &denial{reason: reasonNonexistent}
	}
	if !l.visibleAny(n.below) {
		d := &denial{reason: reasonHidden, app: n.below[0].name}
		return nil, d
	}
	r := dnszone.Reply(l.q, mdns.RcodeSuccess)
	switch {
	case n.alias != nil && l.visible(n.alias):
		// A CNAME answers every type but CNAME itself by following the
		// chain to the app's addresses.
		a := n.alias
		r.Answer = append(r.Answer, &mdns.CNAME{Hdr: l.hdr(qname, mdns.TypeCNAME), Target: a.fqdn})
		if qtype != mdns.TypeCNAME {
			r.Answer = append(r.Answer, l.addrs(a.fqdn, []*app{a}, qtype)...)
		}
	case len(n.hosts) > 0:
		r.Answer = l.addrs(qname, n.hosts, qtype)
	case len(n.ptrs) > 0 && (qtype == mdns.TypePTR || qtype == mdns.TypeANY):
		for _, a := range n.ptrs {
			if l.visible(a) {
				r.Answer = append(r.Answer, &mdns.PTR{Hdr: l.hdr(qname, mdns.TypePTR), Ptr: a.fqdn})
			}
		}
	}
	if len(r.Answer) == 0 || r.Answer[len(r.Answer)-1].Header().Rrtype == mdns.TypeCNAME && qtype != mdns.TypeCNAME {
		r.Ns = []mdns.RR{l.z.SOA()}
	}
	return r, nil
}

// addrs returns the A or AAAA records of the visible apps among hosts.
func (l *lookup) addrs(owner string, hosts []*app, qtype uint16) []mdns.RR {
	var out []mdns.RR
	for _, a := range hosts {
		if !a.addr.IsValid() || !l.visible(a) {
			continue
		}
		switch {
		case a.addr.Is4() && (qtype == mdns.TypeA || qtype == mdns.TypeANY):
			out = append(out, &mdns.A{Hdr: l.hdr(owner, mdns.TypeA), A: a.addr.AsSlice()})
		case a.addr.Is6() && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY):
			out = append(out, &mdns.AAAA{Hdr: l.hdr(owner, mdns.TypeAAAA), AAAA: a.addr.AsSlice()})
		}
	}
	return out
}

// srv answers _service._proto.<app name>: one SRV record per port of each
// visible app at that name that speaks proto, with its addresses as
// additional records. Any service label matches: apps have ports, not
// service names.
func (l *lookup) srv(name, qname string, qtype uint16) (*mdns.Msg, bool) {
	labels := mdns.SplitDomainName(name)
	if len(labels) < 3 || !strings.HasPrefix(labels[0], "_") {
		return nil, false
	}
	var proto policy.Proto
	switch labels[1] {
	case "_tcp":
		proto = policy.ProtoTCP
	case "_udp":
		proto = policy.ProtoUDP
	default:
		return nil, false
	}
	base := strings.Join(labels[2:], ".") + "."
	n := l.v.names[base]
	if n == nil {
		return nil, false
	}
	r := dnszone.Reply(l.q, mdns.RcodeSuccess)
	found := false
	for _, a := range n.hosts {
		if (a.proto != proto && a.proto != policy.ProtoAny) || len(a.ports) == 0 || !l.visible(a) {
			continue
		}
		found = true
		if qtype != mdns.TypeSRV && qtype != mdns.TypeANY {
			continue
		}
		for _, p := range a.ports {
			r.Answer = append(r.Answer, &mdns.SRV{Hdr: l.hdr(qname, mdns.TypeSRV), Port: p, Target: a.fqdn})
		}
		r.Extra = append(r.Extra, l.addrs(a.fqdn, []*app{a}, mdns.TypeANY)...)
	}
	if !found {
		return nil, false
	}
	if len(r.Answer) == 0 {
		r.Ns = []mdns.RR{l.z.SOA()}
	}
	return r, true
}

// denied records a dns-deny event, rate-limited per device.
func (s *Server) denied(src netip.AddrPort, tcp bool, pol Decider, name string, d *denial) {
	if s.cfg.Events == nil {
		return
	}
	if !s.auditLimit.allow(src.Addr(), s.now()) {
		s.stats.eventsSuppressed.Add(1)
		return
	}
	ev := controlproto.FlowEvent{
		Time:   s.now(),
		Action: controlproto.FlowDNSDeny,
		App:    d.app,
		Reason: d.reason,
		Proto:  policy.ProtoUDP,
		Src:    src,
		Dst:    netip.AddrPortFrom(s.cfg.Addr, Port),
		Name:   strings.TrimSuffix(name, "."),
	}
	if tcp {
		ev.Proto = policy.ProtoTCP
	}
	if pol != nil {
		if p, ok := pol.Peer(src.Addr().Unmap()); ok {
			ev.DeviceID, ev.User = p.DeviceID, p.User
		}
	}
	select {
	case s.cfg.Events <- ev:
	default:
		s.stats.eventsDropped.Add(1)
	}
}
