package dns

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
	"github.com/cordonhq/cordon/pkg/policy"
)

var (
	nurse   = netip.MustParseAddr("100.64.0.11")
	clerk   = netip.MustParseAddr("100.64.0.12") // a device with no rule for anything here
	unknown = netip.MustParseAddr("100.64.0.99") // not a peer of this gateway
	gwAddr  = netip.MustParseAddr("100.64.0.1")
)

var testZones = []controlproto.DNSZone{
	{Name: "hosp.internal.", TTL: 5},
	{Name: "0.20.10.in-addr.arpa.", TTL: 5},
	{Name: "d.f.ip6.arpa.", TTL: 5},
}

func testApps() []controlproto.App {
	return []controlproto.App{
		{Name: "ehr", DNSName: "ehr.hosp.internal", Addr: netip.MustParsePrefix("10.20.0.10/32"),
			Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}, {First: 8443, Last: 8443}},
			DNSAliases: []string{"charts.hosp.internal"}},
		{Name: "pacs", DNSName: "pacs.radiology.hosp.internal", Addr: netip.MustParsePrefix("fd00::20/128"),
			Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 104, Last: 104}}},
		{Name: "billing", DNSName: "billing.hosp.internal", Addr: netip.MustParsePrefix("10.20.0.11/32"),
			Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 80, Last: 80}},
			DNSAliases: []string{"money.hosp.internal"}},
		{Name: "lab", DNSName: "lab.radiology.hosp.internal", Addr: netip.MustParsePrefix("10.20.0.12/32"),
			Proto: policy.ProtoUDP, Ports: []policy.PortRange{{First: 5000, Last: 5000}}},
	}
}

// compile builds a policy where nurse may reach the apps named.
func compile(t testing.TB, nurseApps ...string) *policy.Compiled {
	t.Helper()
	var rules []policy.Rule
	var ids []policy.RuleID
	for _, a := range testApps() {
		id := policy.RuleID("r-" + a.Name)
		rules = append(rules, policy.Rule{ID: id, App: a.Name, Dst: []netip.Prefix{a.Addr}, Proto: a.Proto, Ports: a.Ports})
		for _, n := range nurseApps {
			if n == a.Name {
				ids = append(ids, id)
			}
		}
	}
	c, err := policy.Compile(rules, []policy.Peer{
		{DeviceID: "dev-nurse", User: "nurse", Addr: nurse, Rules: ids},
		{DeviceID: "dev-clerk", User: "clerk", Addr: clerk},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type fixture struct {
	s      *Server
	pol    atomic.Pointer[policy.Compiled]
	events chan controlproto.FlowEvent
}

func newFixture(t testing.TB, apps []controlproto.App, nurseApps ...string) *fixture {
	t.Helper()
	f := &fixture{events: make(chan controlproto.FlowEvent, 1000)}
	f.pol.Store(compile(t, nurseApps...))
	s, err := New(Config{Addr: gwAddr, Policy: func() Decider { return f.pol.Load() }, Events: f.events,
		QueriesPerSecond: 1e9, Burst: 1e9, DenyEventsPerSecond: 1e9, DenyEventBurst: 1e9})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetMap(testZones, apps); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.s = s
	return f
}

// ask sends one query through Handle and parses the answer.
func (f *fixture) ask(t *testing.T, src netip.Addr, name string, qtype uint16, edns bool) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.Id = 4242
	if edns {
		q.SetEdns0(1232, false)
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp := f.s.Handle(netip.AddrPortFrom(src, 40000), b, false)
	if resp == nil {
		t.Fatalf("%s %s from %s: dropped", name, mdns.TypeToString[qtype], src)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	if r.Id != q.Id {
		t.Fatalf("answer ID %d, want %d", r.Id, q.Id)
	}
	return r
}

func rrStrings(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

func TestRecordTypes(t *testing.T) {
	f := newFixture(t, testApps(), "ehr", "pacs", "lab")
	soa := "hosp.internal.\t5\tIN\tSOA\thosp.internal. hostmaster.hosp.internal. 1 3600 600 86400 5"
	for _, tc := range []struct {
		name      string
		qtype     uint16
		rcode     int
		answer    []string
		extra     []string
		authority []string
	}{
		{"ehr.hosp.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"ehr.hosp.internal.\t5\tIN\tA\t10.20.0.10"}, nil, nil},
		{"EHR.Hosp.Internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"EHR.Hosp.Internal.\t5\tIN\tA\t10.20.0.10"}, nil, nil},
		{"ehr.hosp.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, nil, []string{soa}},
		{"pacs.radiology.hosp.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"pacs.radiology.hosp.internal.\t5\tIN\tAAAA\tfd00::20"}, nil, nil},
		{"pacs.radiology.hosp.internal.", mdns.TypeA, mdns.RcodeSuccess, nil, nil, []string{soa}},
		// An empty non-terminal above visible apps exists (NODATA).
		{"radiology.hosp.internal.", mdns.TypeA, mdns.RcodeSuccess, nil, nil, []string{soa}},
		{"charts.hosp.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{
			"charts.hosp.internal.\t5\tIN\tCNAME\tehr.hosp.internal.",
			"ehr.hosp.internal.\t5\tIN\tA\t10.20.0.10"}, nil, nil},
		{"charts.hosp.internal.", mdns.TypeCNAME, mdns.RcodeSuccess, []string{
			"charts.hosp.internal.\t5\tIN\tCNAME\tehr.hosp.internal."}, nil, nil},
		{"_https._tcp.ehr.hosp.internal.", mdns.TypeSRV, mdns.RcodeSuccess, []string{
			"_https._tcp.ehr.hosp.internal.\t5\tIN\tSRV\t0 0 443 ehr.hosp.internal.",
			"_https._tcp.ehr.hosp.internal.\t5\tIN\tSRV\t0 0 8443 ehr.hosp.internal."},
			[]string{"ehr.hosp.internal.\t5\tIN\tA\t10.20.0.10"}, nil},
		{"_x._udp.lab.radiology.hosp.internal.", mdns.TypeSRV, mdns.RcodeSuccess, []string{
			"_x._udp.lab.radiology.hosp.internal.\t5\tIN\tSRV\t0 0 5000 lab.radiology.hosp.internal."},
			[]string{"lab.radiology.hosp.internal.\t5\tIN\tA\t10.20.0.12"}, nil},
		{"10.0.20.10.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"10.0.20.10.in-addr.arpa.\t5\tIN\tPTR\tehr.hosp.internal."}, nil, nil},
		{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", mdns.TypePTR, mdns.RcodeSuccess,
			[]string{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.\t5\tIN\tPTR\tpacs.radiology.hosp.internal."}, nil, nil},
		{"hosp.internal.", mdns.TypeSOA, mdns.RcodeSuccess, []string{soa}, nil, nil},
		{"hosp.internal.", mdns.TypeA, mdns.RcodeSuccess, nil, nil, []string{soa}},
		// Wrong protocol for the app: the SRV name does not exist.
		{"_x._udp.ehr.hosp.internal.", mdns.TypeSRV, mdns.RcodeNameError, nil, nil, []string{soa}},
		{"www.example.com.", mdns.TypeA, mdns.RcodeRefused, nil, nil, nil},
		{"hosp.internal.", mdns.TypeAXFR, mdns.RcodeRefused, nil, nil, nil},
	} {
		t.Run(tc.name+"/"+mdns.TypeToString[tc.qtype], func(t *testing.T) {
			r := f.ask(t, nurse, tc.name, tc.qtype, false)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode], r)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"answer", rrStrings(r.Answer), tc.answer}, {"extra", rrStrings(r.Extra), tc.extra}, {"authority", rrStrings(r.Ns), tc.authority}} {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s:\n got %q\nwant %q", c.what, c.got, c.want)
				}
			}
			if tc.rcode != mdns.RcodeRefused && !r.Authoritative {
				t.Error("answer not authoritative")
			}
		})
	}
}

// TestHiddenNameIsNXDomainLikeNonexistent is the hiding promise: for a
// device not entitled to an app, each of the app's names answers exactly as
// a name that never existed, field by field (ID aside), for every type.
func TestHiddenNameIsNXDomainLikeNonexistent(t *testing.T) {
	withApps := newFixture(t, testApps(), "ehr")
	// The same world without billing and lab: their names never existed.
	var others []controlproto.App
	for _, a := range testApps() {
		if a.Name != "billing" && a.Name != "lab" {
			others = append(others, a)
		}
	}
	without := newFixture(t, others, "ehr")
	names := []string{
		"billing.hosp.internal.", "money.hosp.internal.", "BILLING.hosp.internal.",
		"_http._tcp.billing.hosp.internal.", "11.0.20.10.in-addr.arpa.",
		"lab.radiology.hosp.internal.",
	}
	types := []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeCNAME, mdns.TypeSRV, mdns.TypePTR, mdns.TypeANY, mdns.TypeTXT, mdns.TypeMX}
	for _, src := range []netip.Addr{nurse, clerk, unknown} {
		for _, name := range names {
			for _, qt := range types {
				for _, edns := range []bool{false, true} {
					hidden := withApps.ask(t, src, name, qt, edns)
					never := without.ask(t, src, name, qt, edns)
					if hidden.Rcode != mdns.RcodeNameError {
						t.Errorf("%s %s from %s: rcode %s, want NXDOMAIN", name, mdns.TypeToString[qt], src, mdns.RcodeToString[hidden.Rcode])
					}
					sameResponse(t, hidden, never)
				}
			}
		}
	}
	// And a hidden name answers like a never-existing name of the same
	// zone with the question aside: same flags, SOA, TTL.
	a := withApps.ask(t, clerk, "ehr.hosp.internal.", mdns.TypeA, true)
	b := withApps.ask(t, clerk, "nosuch.hosp.internal.", mdns.TypeA, true)
	a.Question, b.Question = nil, nil
	sameResponse(t, a, b)
	// radiology.hosp.internal is an empty non-terminal for the nurse only
	// if she sees something under it; clerk sees nothing.
	c := withApps.ask(t, clerk, "radiology.hosp.internal.", mdns.TypeA, false)
	if c.Rcode != mdns.RcodeNameError {
		t.Errorf("empty non-terminal above hidden apps: rcode %s, want NXDOMAIN", mdns.RcodeToString[c.Rcode])
	}
}

// sameResponse compares two responses field by field, ID aside, and then
// their wire bytes.
func sameResponse(t *testing.T, a, b *mdns.Msg) {
	t.Helper()
	a, b = a.Copy(), b.Copy()
	a.Id, b.Id = 0, 0
	if a.MsgHdr != b.MsgHdr {
		t.Errorf("headers differ:\n%+v\n%+v", a.MsgHdr, b.MsgHdr)
	}
	for _, c := range []struct {
		what string
		x, y []string
	}{
		{"answer", rrStrings(a.Answer), rrStrings(b.Answer)},
		{"authority", rrStrings(a.Ns), rrStrings(b.Ns)},
		{"extra", rrStrings(a.Extra), rrStrings(b.Extra)},
	} {
		if !reflect.DeepEqual(c.x, c.y) {
			t.Errorf("%s differs:\n%q\n%q", c.what, c.x, c.y)
		}
	}
	if !reflect.DeepEqual(a.Question, b.Question) {
		t.Errorf("questions differ: %v %v", a.Question, b.Question)
	}
	x, _ := a.Pack()
	y, _ := b.Pack()
	if string(x) != string(y) {
		t.Errorf("wire bytes differ:\n%x\n%x", x, y)
	}
}

func TestEntitlementChangeTakesEffectAtOnce(t *testing.T) {
	f := newFixture(t, testApps(), "ehr")
	if r := f.ask(t, nurse, "ehr.hosp.internal.", mdns.TypeA, false); len(r.Answer) != 1 {
		t.Fatalf("entitled: %v", r)
	}
	f.pol.Store(compile(t)) // nurse loses ehr
	if r := f.ask(t, nurse, "ehr.hosp.internal.", mdns.TypeA, false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("after revocation: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	if r := f.ask(t, nurse, "10.0.20.10.in-addr.arpa.", mdns.TypePTR, false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("PTR after revocation: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
}

func TestDenyEvents(t *testing.T) {
	f := newFixture(t, testApps(), "ehr")
	f.ask(t, nurse, "billing.hosp.internal.", mdns.TypeA, false)
	f.ask(t, nurse, "nosuch.hosp.internal.", mdns.TypeA, false)
	f.ask(t, nurse, "ehr.hosp.internal.", mdns.TypeA, false) // allowed: no event
	var got []controlproto.FlowEvent
	for len(f.events) > 0 {
		got = append(got, <-f.events)
	}
	if len(got) != 2 {
		t.Fatalf("got %d events, want 2: %+v", len(got), got)
	}
	e := got[0]
	if e.Action != controlproto.FlowDNSDeny || e.DeviceID != "dev-nurse" || e.User != "nurse" ||
		e.Name != "billing.hosp.internal" || e.App != "billing" || e.Reason != reasonHidden ||
		e.Dst != netip.AddrPortFrom(gwAddr, 53) || e.Src.Addr() != nurse {
		t.Errorf("hidden-name event: %+v", e)
	}
	if e := got[1]; e.Name != "nosuch.hosp.internal" || e.App != "" || e.Reason != reasonNonexistent {
		t.Errorf("nonexistent-name event: %+v", e)
	}
}

func TestDenyEventsRateLimitedPerDevice(t *testing.T) {
	events := make(chan controlproto.FlowEvent, 1000)
	pol := compile(t, "ehr")
	s, err := New(Config{Addr: gwAddr, Policy: func() Decider { return pol }, Events: events,
		DenyEventsPerSecond: 1, DenyEventBurst: 5, Now: func() time.Time { return time.Unix(1000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetMap(testZones, testApps()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{s: s}
	for i := range 50 {
		f.ask(t, nurse, "scan"+string(rune('a'+i%26))+".hosp.internal.", mdns.TypeA, false)
	}
	f.ask(t, clerk, "x.hosp.internal.", mdns.TypeA, false)
	if len(events) != 6 {
		t.Errorf("%d events, want 5 for the scanning device and 1 for another", len(events))
	}
	if st := s.Stats(); st.EventsSuppressed != 45 {
		t.Errorf("suppressed %d, want 45", st.EventsSuppressed)
	}
}

func TestMalformed(t *testing.T) {
	f := newFixture(t, testApps(), "ehr")
	src := netip.AddrPortFrom(nurse, 1)
	for _, tc := range []struct {
		name  string
		b     []byte
		rcode int // -1: dropped
	}{
		{"empty", nil, -1},
		{"short header", []byte{1, 2, 3}, -1},
		{"header claims a question it lacks", []byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, mdns.RcodeFormatError},
		{"a response", []byte{0, 7, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0}, -1},
		{"no question", []byte{0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, mdns.RcodeFormatError},
		{"huge", make([]byte, maxQuerySize+1), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.s.Handle(src, tc.b, false)
			if tc.rcode == -1 {
				if resp != nil {
					t.Fatalf("answered, want drop")
				}
				return
			}
			var r mdns.Msg
			if err := r.Unpack(resp); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode || r.Id != 7 {
				t.Fatalf("rcode %s id %d", mdns.RcodeToString[r.Rcode], r.Id)
			}
		})
	}
	// Two questions: FORMERR. Opcode NOTIFY: NOTIMP.
	q := new(mdns.Msg)
	q.SetQuestion("ehr.hosp.internal.", mdns.TypeA)
	q.Question = append(q.Question, q.Question[0])
	b, _ := q.Pack()
	var r mdns.Msg
	r.Unpack(f.s.Handle(src, b, false))
	if r.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: %s", mdns.RcodeToString[r.Rcode])
	}
	q = new(mdns.Msg)
	q.SetNotify("hosp.internal.")
	b, _ = q.Pack()
	r.Unpack(f.s.Handle(src, b, false))
	if r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("notify: %s", mdns.RcodeToString[r.Rcode])
	}
}

func TestUDPAnswersTruncatedToAskersSize(t *testing.T) {
	var apps []controlproto.App
	for i := range 200 {
		apps = append(apps, controlproto.App{Name: "a" + string(rune('0'+i%10)) + strings.Repeat("x", i/10),
			DNSName: "many.hosp.internal", Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 20, 1, byte(i)}), 32), Proto: policy.ProtoAny})
	}
	pol, err := policy.Compile([]policy.Rule{{ID: "all", Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
		[]policy.Peer{{DeviceID: "d", Addr: nurse, Rules: []policy.RuleID{"all"}}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Policy: func() Decider { return pol }})
	defer s.Close()
	if err := s.SetMap(testZones, apps); err != nil {
		t.Fatal(err)
	}
	q := new(mdns.Msg)
	q.SetQuestion("many.hosp.internal.", mdns.TypeA)
	b, _ := q.Pack()
	resp := s.Handle(netip.AddrPortFrom(nurse, 1), b, false)
	var r mdns.Msg
	if err := r.Unpack(resp); err != nil || len(resp) > 512 || !r.Truncated {
		t.Fatalf("UDP without EDNS0: %d bytes, truncated %v, err %v", len(resp), r.Truncated, err)
	}
	resp = s.Handle(netip.AddrPortFrom(nurse, 1), b, true)
	if err := r.Unpack(resp); err != nil || r.Truncated || len(r.Answer) != 200 {
		t.Fatalf("TCP: %d answers, truncated %v, err %v", len(r.Answer), r.Truncated, err)
	}
}

func TestServeUDPAndTCP(t *testing.T) {
	// Sources are loopback here; make 127.0.0.1 the nurse.
	lo := netip.MustParseAddr("127.0.0.1")
	rules := []policy.Rule{{ID: "r", App: "ehr", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.10/32")}, Proto: policy.ProtoTCP}}
	pol, err := policy.Compile(rules, []policy.Peer{{DeviceID: "d", Addr: lo, Rules: []policy.RuleID{"r"}}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Policy: func() Decider { return pol }, QueriesPerSecond: 5, Burst: 10})
	t.Cleanup(func() { s.Close() })
	if err := s.SetMap(testZones, testApps()); err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Its own port: the UDP port's number may be taken for TCP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ServeUDP(pc)
	s.ServeTCP(ln)
	for nw, addr := range map[string]string{"udp": pc.LocalAddr().String(), "tcp": ln.Addr().String()} {
		c := &mdns.Client{Net: nw, Timeout: 2 * time.Second}
		q := new(mdns.Msg)
		q.SetQuestion("ehr.hosp.internal.", mdns.TypeA)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Fatalf("%s: %v", nw, err)
		}
		if len(r.Answer) != 1 {
			t.Fatalf("%s: %v", nw, r)
		}
	}
	// The per-source limit drops a flood.
	c := &mdns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	drops := 0
	for range 30 {
		q := new(mdns.Msg)
		q.SetQuestion("ehr.hosp.internal.", mdns.TypeA)
		if _, _, err := c.Exchange(q, pc.LocalAddr().String()); err != nil {
			drops++
		}
	}
	if drops == 0 || s.Stats().RateLimited == 0 {
		t.Errorf("no query dropped over the rate limit (drops %d, stats %+v)", drops, s.Stats())
	}
	s.Close()
	s.Close()
}

func TestViewRejectsBadMaps(t *testing.T) {
	s, _ := New(Config{Policy: func() Decider { return policy.Empty }})
	defer s.Close()
	if err := s.SetMap([]controlproto.DNSZone{{Name: "Hosp.Internal", TTL: 5}}, nil); err == nil {
		t.Error("non-canonical zone accepted")
	}
	if err := s.SetMap([]controlproto.DNSZone{{Name: "hosp.internal.", TTL: 0}}, nil); err == nil {
		t.Error("zero TTL accepted")
	}
	apps := testApps()
	apps[0].DNSAliases = []string{"billing.hosp.internal"}
	if err := s.SetMap(testZones, apps); err == nil {
		t.Error("alias equal to another app's name accepted")
	}
}

func TestNoAnswerBeforeMap(t *testing.T) {
	s, _ := New(Config{Policy: func() Decider { return policy.Empty }})
	defer s.Close()
	q := new(mdns.Msg)
	q.SetQuestion("ehr.hosp.internal.", mdns.TypeA)
	b, _ := q.Pack()
	var r mdns.Msg
	r.Unpack(s.Handle(netip.AddrPortFrom(nurse, 1), b, false))
	if r.Rcode != mdns.RcodeRefused {
		t.Errorf("rcode %s", mdns.RcodeToString[r.Rcode])
	}
}

var _ = dnszone.DefaultTTL

// An app whose name is its zone's apex (a single-label name makes its own
// zone): visible to the entitled, the plain apex to everyone else.
func TestAppAtZoneApex(t *testing.T) {
	apps := []controlproto.App{{Name: "ehr", DNSName: "ehr", Addr: netip.MustParsePrefix("10.20.0.10/32"), Proto: policy.ProtoTCP,
		Ports: []policy.PortRange{{First: 443, Last: 443}}}}
	f := newFixture(t, apps, "ehr")
	if err := f.s.SetMap(append(testZones, controlproto.DNSZone{Name: "ehr.", TTL: 5}), apps); err != nil {
		t.Fatal(err)
	}
	if r := f.ask(t, nurse, "ehr.", mdns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("entitled: %v", r)
	}
	hidden := f.ask(t, clerk, "ehr.", mdns.TypeA, false)
	if hidden.Rcode != mdns.RcodeSuccess || len(hidden.Answer) != 0 || len(hidden.Ns) != 1 {
		t.Errorf("not entitled: %v", hidden)
	}
}
