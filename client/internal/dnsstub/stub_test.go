package dnsstub

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
)

// fakeServer is a DNS server on loopback that records every name it is
// asked and answers with answer.
type fakeServer struct {
	addr netip.AddrPort
	mu   sync.Mutex
	seen []string
}

func startFake(t *testing.T, answer func(q *dns.Msg) *dns.Msg) *fakeServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		f.mu.Lock()
		f.seen = append(f.seen, q.Question[0].Name)
		f.mu.Unlock()
		w.WriteMsg(answer(q))
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return f
}

func (f *fakeServer) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// redirect dials every address to one loopback server (the "tunnel").
type redirect struct{ to netip.AddrPort }

func (r redirect) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, r.to.String())
}

var gw = netip.MustParseAddr("100.64.0.1")

func clientMap() *controlproto.ClientMap {
	return &controlproto.ClientMap{
		DNSZones: []controlproto.DNSZone{{Name: "hosp.internal.", TTL: 5}, {Name: "0.20.10.in-addr.arpa.", TTL: 5}},
		Gateways: []controlproto.ClientGateway{{GatewayID: "gw1", OverlayAddr: gw, Apps: []controlproto.App{
			{Name: "ehr", DNSName: "ehr.radiology.hosp.internal", Addr: netip.MustParsePrefix("10.20.0.10/32"), DNSAliases: []string{"charts.hosp.internal"}},
		}}},
	}
}

func newStub(t *testing.T) (*Stub, *fakeServer, *fakeServer) {
	gateway := startFake(t, func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 5 IN A 10.20.0.10")
		r.Answer = []dns.RR{rr}
		return r
	})
	// The capturing upstream: the system's resolver.
	upstream := startFake(t, func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 300 IN A 192.0.2.80")
		r.Answer = []dns.RR{rr}
		return r
	})
	s := New(Config{Tunnel: redirect{gateway.addr}, Upstream: []netip.AddrPort{upstream.addr}, Timeout: time.Second})
	return s, gateway, upstream
}

func ask(s *Stub, name string, qt uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qt)
	return s.Resolve(context.Background(), q)
}

// TestInternalNamesNeverReachUpstream is the leak test: a capturing
// upstream resolver fails the test if it ever sees an internal name.
func TestInternalNamesNeverReachUpstream(t *testing.T) {
	s, gateway, upstream := newStub(t)
	internal := []string{
		"ehr.radiology.hosp.internal.", "EHR.Radiology.Hosp.Internal.", "charts.hosp.internal.",
		"billing.hosp.internal.", "nosuch.hosp.internal.", "hosp.internal.", "radiology.hosp.internal.",
		"_https._tcp.ehr.radiology.hosp.internal.", "a.b.c.hosp.internal.",
		"10.0.20.10.in-addr.arpa.", "11.0.20.10.in-addr.arpa.",
	}
	// Before the first map nothing is forwarded anywhere.
	for _, n := range internal {
		if r := ask(s, n, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("before the map, %s: %s, want SERVFAIL", n, dns.RcodeToString[r.Rcode])
		}
	}
	if err := s.SetMap(clientMap()); err != nil {
		t.Fatal(err)
	}
	for _, n := range internal {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT} {
			ask(s, n, qt)
		}
	}
	if r := ask(s, "www.example.com.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("external name: %v", r)
	}
	for _, n := range upstream.names() {
		if _, ok := s.table.Load().zones.Match(dnszone.Canonical(n)); ok {
			t.Errorf("LEAK: the upstream resolver saw internal name %s", n)
		}
	}
	if got := upstream.names(); len(got) != 1 || got[0] != "www.example.com." {
		t.Errorf("upstream saw %v, want only www.example.com.", got)
	}
	// Only names of the entitled app (and the apex) went to the gateway.
	for _, n := range gateway.names() {
		n = strings.ToLower(n)
		if !strings.Contains(n, "ehr.radiology") && n != "charts.hosp.internal." && n != "hosp.internal." &&
			n != "radiology.hosp.internal." && n != "10.0.20.10.in-addr.arpa." {
			t.Errorf("gateway asked about %s, which is in no entitled app's names", n)
		}
	}
}

func TestRouting(t *testing.T) {
	s, _, _ := newStub(t)
	if err := s.SetMap(clientMap()); err != nil {
		t.Fatal(err)
	}
	z := dnszone.Zone{Name: "hosp.internal.", TTL: 5}
	// A name not in the map is answered here, exactly as a gateway would
	// answer a hidden or nonexistent name.
	q := new(dns.Msg)
	q.SetQuestion("billing.hosp.internal.", dns.TypeA)
	q.SetEdns0(1232, false)
	got, _ := s.Resolve(context.Background(), q).Pack()
	want, _ := dnszone.NXDomain(q, z).Pack()
	if string(got) != string(want) {
		t.Errorf("local NXDOMAIN differs from the gateway's:\n%x\n%x", got, want)
	}
	if r := ask(s, "ehr.radiology.hosp.internal.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("entitled name: %v", r)
	}
	a, err := s.LookupHost(context.Background(), "ehr.radiology.hosp.internal")
	if err != nil || a != netip.MustParseAddr("10.20.0.10") {
		t.Errorf("LookupHost = %v, %v", a, err)
	}
	if _, err := s.LookupHost(context.Background(), "billing.hosp.internal"); err == nil {
		t.Error("LookupHost of a name in no entitled app succeeded")
	}
	if _, err := s.LookupHost(context.Background(), "www.example.com"); err == nil {
		t.Error("LookupHost of an external name succeeded: the proxy must not resolve it")
	}
	// Without upstreams external names are refused.
	s2 := New(Config{Tunnel: redirect{}})
	s2.SetMap(clientMap())
	if r := ask(s2, "www.example.com.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("external without upstream: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestServe(t *testing.T) {
	s, _, _ := newStub(t)
	s.SetMap(clientMap())
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Its own port: the UDP port's number may be taken for TCP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(pc, ln)
	defer s.Close()
	for nw, addr := range map[string]string{"udp": pc.LocalAddr().String(), "tcp": ln.Addr().String()} {
		q := new(dns.Msg)
		q.SetQuestion("nosuch.hosp.internal.", dns.TypeA)
		r, _, err := (&dns.Client{Net: nw, Timeout: time.Second}).Exchange(q, addr)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: %v %v", nw, r, err)
		}
	}
}

// Stats counts each answer by its response code.
func TestStats(t *testing.T) {
	s, _, _ := newStub(t)
	ask(s, "ehr.radiology.hosp.internal.", dns.TypeA) // before the map: SERVFAIL
	if err := s.SetMap(clientMap()); err != nil {
		t.Fatal(err)
	}
	ask(s, "ehr.radiology.hosp.internal.", dns.TypeA)
	ask(s, "www.example.com.", dns.TypeA)
	ask(s, "billing.hosp.internal.", dns.TypeA)
	ask(s, "nosuch.hosp.internal.", dns.TypeA)
	if got, want := s.Stats(), (Stats{Answer: 2, NXDomain: 2, ServFail: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
