package flow

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

func TestAllowedTCPFlowPassesBothWays(t *testing.T) {
	for _, tc := range []struct {
		name        string
		client, app netip.AddrPort
		device      string
		rule        string
	}{
		{"ipv4", aliceP, ehrP, "dev-alice", "r-ehr"},
		{"ipv6", alice6P, ehr6P, "dev-alice6", "r-ehr6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fullPolicy(t))
			h.passes(tcp(tc.client, tc.app, syn, 1000, 0, ""))
			ev := h.event()
			want := controlproto.FlowEvent{
				Time: ev.Time, Action: controlproto.FlowAllow, DeviceID: tc.device, User: "alice@hospital.example",
				App: "ehr", Rule: tc.rule, Reason: "allowed", Proto: policy.ProtoTCP, Src: tc.client, Dst: tc.app,
			}
			if ev != want {
				t.Errorf("allow event:\n got %+v\nwant %+v", ev, want)
			}
			h.returns(tcp(tc.app, tc.client, synack, 5000, 1001, ""))
			h.passes(tcp(tc.client, tc.app, psh, 1001, 5001, "GET /"))
			h.returns(tcp(tc.app, tc.client, psh, 5001, 1006, "200 OK"))
			h.noEvent() // one event per flow, not per packet
			s := h.a.Stats()
			if s.FlowsOpen != 1 || s.PacketsAllowed != 2 || s.PacketsReturned != 2 || s.PacketsDenied != 0 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func TestReturnTrafficForUnknownFlowDropped(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	// The app (or anything behind the gateway) cannot open a flow to a client.
	h.returnDropped(tcp(ehrP, aliceP, syn, 1, 0, ""))
	h.returnDropped(packettest.UDP(dnsP, aliceP, []byte("unsolicited")))
	h.returnDropped(packettest.Echo(ehr, alice, 7, 1, false))
	// A reply to a flow that exists, but from another port of the same host.
	h.passes(tcp(aliceP, ehrP, syn, 1000, 0, ""))
	h.returnDropped(tcp(netip.AddrPortFrom(ehr, 8443), aliceP, synack, 1, 1001, ""))
	// A reply addressed to another client port.
	h.returnDropped(tcp(ehrP, netip.AddrPortFrom(alice, 40001), synack, 1, 1001, ""))
	if s := h.a.Stats(); s.ReturnDropped != 5 {
		t.Errorf("ReturnDropped = %d, want 5", s.ReturnDropped)
	}
}

// Who must NOT reach what: every case is dropped and recorded once.
func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkt    []byte
		device string
		reason string
	}{
		{"unknown source", tcp(netip.AddrPortFrom(mallory, 40000), ehrP, syn, 1, 0, ""), "", "unknown-source"},
		{"wrong port", tcp(aliceP, netip.AddrPortFrom(ehr, 22), syn, 1, 0, ""), "dev-alice", "no-matching-rule"},
		{"other host of the segment", tcp(aliceP, netip.AddrPortFrom(lab, 443), syn, 1, 0, ""), "dev-alice", "no-matching-rule"},
		{"wrong protocol", packettest.UDP(aliceP, ehrP, nil), "dev-alice", "no-matching-rule"},
		{"ping to another host", packettest.Echo(alice, lab, 1, 1, false), "dev-alice", "no-matching-rule"},
		{"ipv6 peer to an ipv4 app", tcp(alice6P, ehrP, syn, 1, 0, ""), "dev-alice6", "no-matching-rule"},
		{"unsupported protocol needs an any-protocol rule", packettest.IP(alice, ehr, 47, make([]byte, 8), -1), "dev-alice", "no-matching-rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fullPolicy(t))
			h.blocked(tc.pkt)
			ev := h.event()
			p, _ := packet.Parse(tc.pkt)
			if ev.Action != controlproto.FlowDeny || ev.DeviceID != tc.device || ev.Reason != tc.reason ||
				ev.Src != p.SrcAddrPort() || ev.Dst != p.DstAddrPort() || ev.Proto != p.Proto || ev.Rule != "" {
				t.Errorf("deny event %+v", ev)
			}
			if s := h.a.Stats(); s.PacketsDenied != 1 || s.FlowsOpen != 0 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func TestUnsupportedProtocolAllowedByAnyRule(t *testing.T) {
	rules := append([]policy.Rule(nil), allRules...)
	rules = append(rules, policy.Rule{ID: "r-any", App: "lab", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.6/32")}, Proto: policy.ProtoAny})
	pol, err := policy.Compile(rules, []policy.Peer{{DeviceID: "dev-alice", Addr: alice, Rules: []policy.RuleID{"r-any"}}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, pol)
	gre := packettest.IP(alice, lab, 47, make([]byte, 8), -1)
	h.passes(gre)
	h.returns(packettest.IP(lab, alice, 47, make([]byte, 8), -1))
}

func TestDenyEventOncePerFlow(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	scan := func(port uint16) []byte { return tcp(aliceP, netip.AddrPortFrom(lab, port), syn, 1, 0, "") }
	for range 5 {
		h.blocked(scan(22)) // SYN retransmissions
	}
	if ev := h.event(); ev.Dst.Port() != 22 {
		t.Fatalf("event %+v", ev)
	}
	h.noEvent()
	h.blocked(scan(23)) // another flow
	if ev := h.event(); ev.Dst.Port() != 23 {
		t.Fatalf("event %+v", ev)
	}
	// Once the entry expires, a denied flow is recorded again.
	h.advance(2 * time.Minute)
	h.blocked(scan(22))
	h.event()
	if s := h.a.Stats(); s.PacketsDenied != 7 {
		t.Errorf("PacketsDenied = %d, want 7", s.PacketsDenied)
	}
}

func TestDenyEventsRateLimited(t *testing.T) {
	h := newHarness(t, fullPolicy(t), func(c *Config) {
		c.DenyEventBurst = 3
		c.DenyEventsPerSecond = 1
	})
	for port := range uint16(10) {
		h.blocked(tcp(aliceP, netip.AddrPortFrom(lab, 1000+port), syn, 1, 0, ""))
	}
	for range 3 {
		h.event()
	}
	h.noEvent()
	if s := h.a.Stats(); s.DenyEventsSuppressed != 7 {
		t.Errorf("DenyEventsSuppressed = %d, want 7", s.DenyEventsSuppressed)
	}
	// The bucket refills with time (the clock only moves when told).
	h.advance(time.Second)
	h.blocked(tcp(aliceP, netip.AddrPortFrom(lab, 2000), syn, 1, 0, ""))
	h.event()
}

func TestDenySetIsBounded(t *testing.T) {
	s := newDenySet(64, time.Minute, 1e9, 1e9, 1)
	n := len(s.slots)
	emitted := 0
	for i := range 100000 {
		k := packet.Tuple{Src: alice, Dst: lab, SrcPort: 40000, DstPort: uint16(i), Proto: policy.ProtoTCP}
		k.SrcPort = uint16(i >> 16)
		if s.admit(&k, int64(i)) == denyEmit {
			emitted++
		}
	}
	if len(s.slots) != n || n != 64 {
		t.Errorf("slots = %d, want 64 throughout", len(s.slots))
	}
	if emitted != 100000 {
		t.Errorf("emitted %d events for 100000 distinct recent flows", emitted)
	}
	k := packet.Tuple{Src: alice, Dst: lab, SrcPort: 1, DstPort: 2, Proto: policy.ProtoTCP}
	if s.admit(&k, 200000) != denyEmit || s.admit(&k, 200001) != denyDuplicate {
		t.Error("a repeated denied flow was not deduplicated")
	}
}

func TestEventQueueFullDropsAndCounts(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	// Fill the queue; the data path must not block.
	for i := range cap(h.events) + 5 {
		h.passes(tcp(netip.AddrPortFrom(alice, uint16(10000+i)), ehrP, syn, 1, 0, ""))
	}
	if s := h.a.Stats(); s.EventsDropped != 5 || s.FlowsOpen != int64(cap(h.events)+5) {
		t.Errorf("stats = %+v", s)
	}
}

// establish opens a TCP flow client → app and exchanges data both ways:
// client next seq 1011, app next seq 5021.
func establish(h *harness, client, app netip.AddrPort) {
	h.t.Helper()
	h.passes(tcp(client, app, syn, 1000, 0, ""))
	h.returns(tcp(app, client, synack, 5000, 1001, ""))
	h.passes(tcp(client, app, psh, 1001, 5001, "0123456789"))
	h.returns(tcp(app, client, psh, 5001, 1011, "abcdefghijklmnopqrst"))
	// A retransmission must not move the tracked sequence back.
	h.passes(tcp(client, app, psh, 1001, 5001, "0123456789"))
	h.event()
}

func TestSetPolicyCutsTCPFlow(t *testing.T) {
	for _, tc := range []struct {
		name        string
		client, app netip.AddrPort
		narrow      func(testing.TB) *policy.Compiled
	}{
		{"ipv4", aliceP, ehrP, func(t testing.TB) *policy.Compiled { return compile(t, "r-dns", "r-ping") }},
		{"ipv6", alice6P, ehr6P, func(t testing.TB) *policy.Compiled {
			c, err := policy.Compile(allRules, []policy.Peer{
				{DeviceID: "dev-alice", Addr: alice, Rules: []policy.RuleID{"r-ehr", "r-dns", "r-ping"}},
				{DeviceID: "dev-alice6", Addr: alice6},
			})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fullPolicy(t))
			establish(h, tc.client, tc.app)
			// A second flow that the narrower policy still allows (ipv4) or
			// that is not affected.
			h.passes(packettest.UDP(netip.AddrPortFrom(alice, 5353), dnsP, []byte("q")))
			h.event()

			done := make(chan struct{})
			go func() {
				defer close(done)
				h.a.SetPolicy(tc.narrow(t))
			}()
			var toApp []byte
			select {
			case toApp = <-h.ct.Inbound:
			case <-time.After(5 * time.Second):
				t.Fatal("no reset toward the app")
			}
			<-done
			checkRST(t, toApp, tc.client, tc.app, 1011, 5021)
			checkRST(t, h.nextToClient(), tc.app, tc.client, 5021, 1011)

			ev := h.event()
			if ev.Action != controlproto.FlowCut || ev.Src != tc.client || ev.Dst != tc.app ||
				ev.Rule == "" || ev.App != "ehr" || ev.Reason != "no-matching-rule" {
				t.Errorf("cut event %+v", ev)
			}
			h.noEvent()
			s := h.a.Stats()
			if s.FlowsCut != 1 {
				t.Errorf("FlowsCut = %d", s.FlowsCut)
			}
			// The flow is gone both ways.
			h.blocked(tcp(tc.client, tc.app, psh, 1011, 5021, "more"))
			if ev := h.event(); ev.Action != controlproto.FlowDeny {
				t.Errorf("event %+v", ev)
			}
			h.returnDropped(tcp(tc.app, tc.client, psh, 5021, 1011, "more"))
		})
	}
}

// checkRST verifies that pkt is a valid TCP reset from src to dst with the
// given sequence and acknowledgement numbers.
func checkRST(t *testing.T, pkt []byte, src, dst netip.AddrPort, seq, ackNum uint32) {
	t.Helper()
	p, err := packet.Parse(pkt)
	if err != nil {
		t.Fatalf("reset does not parse: %v", err)
	}
	if p.SrcAddrPort() != src || p.DstAddrPort() != dst || p.Proto != policy.ProtoTCP {
		t.Errorf("reset %v → %v, want %v → %v", p.SrcAddrPort(), p.DstAddrPort(), src, dst)
	}
	if p.TCPFlags != packet.TCPRst|packet.TCPAck || p.Seq != seq || p.Ack != ackNum {
		t.Errorf("reset flags %08b seq %d ack %d, want RST|ACK seq %d ack %d", p.TCPFlags, p.Seq, p.Ack, seq, ackNum)
	}
	if p.Version == 4 && packettest.Checksum(pkt[:20]) != 0 {
		t.Error("bad IPv4 header checksum")
	}
	seg := pkt[p.TransportOffset:p.Length]
	if packettest.Checksum(packettest.PseudoHeader(p.Src, p.Dst, policy.ProtoTCP, len(seg)), seg) != 0 {
		t.Error("bad TCP checksum")
	}
}

func TestSetPolicyCutsHalfOpenFlow(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	h.passes(tcp(aliceP, ehrP, syn, 7000, 0, ""))
	h.event()
	done := make(chan struct{})
	go func() { defer close(done); h.a.SetPolicy(policy.Empty) }()
	toApp := <-h.ct.Inbound
	<-done
	p, _ := packet.Parse(toApp)
	if p.TCPFlags != packet.TCPRst || p.Seq != 7001 {
		t.Errorf("reset toward app: flags %08b seq %d", p.TCPFlags, p.Seq)
	}
	// The client is in SYN-SENT: its reset must acknowledge the SYN.
	p, _ = packet.Parse(h.nextToClient())
	if p.TCPFlags != packet.TCPRst|packet.TCPAck || p.Ack != 7001 {
		t.Errorf("reset toward client: flags %08b ack %d", p.TCPFlags, p.Ack)
	}
}

func TestSetPolicyKeepsAllowedFlows(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	establish(h, aliceP, ehrP)
	h.a.SetPolicy(compile(t, "r-ehr")) // still allows the flow
	h.noEvent()
	h.passes(tcp(aliceP, ehrP, psh, 1011, 5021, "x"))
	h.returns(tcp(ehrP, aliceP, psh, 5021, 1012, "y"))
	h.noEvent()
	if s := h.a.Stats(); s.FlowsOpen != 1 || s.FlowsCut != 0 {
		t.Errorf("stats = %+v", s)
	}
	h.noneToClient()
}

func TestSetPolicyRemovesUDPFlow(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := packettest.UDP(aliceP, dnsP, []byte("query"))
	h.passes(q)
	h.returns(packettest.UDP(dnsP, aliceP, []byte("answer")))
	h.event()
	h.a.SetPolicy(compile(t, "r-ehr")) // no DNS; no reset is written for UDP
	ev := h.event()
	if ev.Action != controlproto.FlowCut || ev.Proto != policy.ProtoUDP || ev.App != "dns" {
		t.Errorf("cut event %+v", ev)
	}
	if s := h.a.Stats(); s.FlowsOpen != 0 {
		t.Errorf("FlowsOpen = %d", s.FlowsOpen)
	}
	h.returnDropped(packettest.UDP(dnsP, aliceP, []byte("late answer")))
	h.blocked(q)
	if ev := h.event(); ev.Action != controlproto.FlowDeny {
		t.Errorf("event %+v", ev)
	}
}

func TestICMPEcho(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	h.passes(packettest.Echo(alice, ehr, 77, 1, false))
	h.returns(packettest.Echo(ehr, alice, 77, 1, true))
	h.returnDropped(packettest.Echo(ehr, alice, 78, 1, true)) // another identifier
	h.passes(packettest.Echo(alice, ehr, 77, 2, false))
	if s := h.a.Stats(); s.FlowsOpened != 1 {
		t.Errorf("FlowsOpened = %d, want 1 (the id keys the flow)", s.FlowsOpened)
	}
}

func TestICMPErrorsFollowTheirFlow(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := packettest.UDP(aliceP, dnsP, []byte("query"))
	h.passes(q)
	// A router on the app side reports the datagram undeliverable.
	router := netip.MustParseAddr("10.20.0.1")
	h.returns(packettest.Unreachable(router, alice, q))
	// An error quoting a flow that does not exist stays out.
	other := packettest.UDP(netip.AddrPortFrom(alice, 40001), dnsP, []byte("query"))
	h.returnDropped(packettest.Unreachable(router, alice, other))
	// The client reports an app's datagram of the flow undeliverable.
	h.passes(packettest.Unreachable(alice, dnsHost, packettest.UDP(dnsP, aliceP, []byte("answer"))))
	if s := h.a.Stats(); s.FlowsOpened != 1 {
		t.Errorf("FlowsOpened = %d, want 1: errors open no flows", s.FlowsOpened)
	}
}

func TestMalformedDropped(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := packettest.UDP(aliceP, dnsP, []byte("query"))
	h.blocked(q[:25])
	h.blocked([]byte{0x70})
	s := h.a.Stats()
	if s.Malformed != 2 || s.PacketsDenied != 0 {
		t.Errorf("stats = %+v", s)
	}
	h.noEvent()
}

func TestWritePartialBatch(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	ok1 := tcp(aliceP, ehrP, syn, 1, 0, "")
	bad := tcp(aliceP, netip.AddrPortFrom(lab, 443), syn, 1, 0, "")
	ok2 := packettest.UDP(aliceP, dnsP, []byte("q"))
	got := h.fromClient(bad, ok1, []byte{0x45}, ok2, bad)
	if len(got) != 2 || !bytes.Equal(got[0], ok1) || !bytes.Equal(got[1], ok2) {
		t.Fatalf("got %d packets, want the two allowed ones in order", len(got))
	}
	// All dropped: nothing reaches the device, the batch counts as consumed.
	if got := h.fromClient(bad, bad); len(got) != 0 {
		t.Fatalf("got %d packets", len(got))
	}
}

// shortDev accepts only the first n packets of each write.
type shortDev struct {
	*nopDev
	n int
}

var errShort = errors.New("short write")

func (d *shortDev) Write(bufs [][]byte, off int) (int, error) {
	if len(bufs) > d.n {
		return d.n, errShort
	}
	return len(bufs), nil
}

func TestWriteShortDeviceWriteMapsBack(t *testing.T) {
	d := &shortDev{nopDev: newNopDev(8), n: 1}
	a, err := New(d, Config{Policy: fullPolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bad := tcp(aliceP, netip.AddrPortFrom(lab, 443), syn, 1, 0, "")
	ok1 := tcp(aliceP, ehrP, syn, 1, 0, "")
	ok2 := packettest.UDP(aliceP, dnsP, nil)
	bufs := [][]byte{bad, ok1, bad, ok2, bad}
	// The device writes ok1 only; ok2 (index 3) is the first packet not
	// consumed.
	n, err := a.Write(bufs, 0)
	if n != 3 || !errors.Is(err, errShort) {
		t.Fatalf("Write = %d, %v; want 3, short write", n, err)
	}
	if !bytes.Equal(bufs[0], bad) || !bytes.Equal(bufs[3], ok2) {
		t.Fatal("Write modified the caller's batch")
	}
}

func TestReadSplitsBatchesAcrossCalls(t *testing.T) {
	// A device batch larger than the caller's is delivered over several
	// Reads, in order.
	d := newNopDev(4)
	a, err := New(d, Config{Policy: fullPolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Write([][]byte{packettest.UDP(aliceP, dnsP, nil)}, 0); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for i := range 3 {
		p := packettest.UDP(dnsP, aliceP, []byte{byte(i)})
		want = append(want, p)
	}
	go func() {
		for _, p := range want {
			d.in <- p
		}
	}()
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	for i := range want {
		n, err := a.Read(bufs, sizes, 0)
		if n != 1 || err != nil || !bytes.Equal(bufs[0][:sizes[0]], want[i]) {
			t.Fatalf("Read %d = %d, %v", i, n, err)
		}
	}
}

func TestFlowExpiry(t *testing.T) {
	h := newHarness(t, fullPolicy(t))

	// UDP: 60 s idle.
	h.passes(packettest.UDP(aliceP, dnsP, []byte("q")))
	// TCP half-open: 30 s.
	h.passes(tcp(netip.AddrPortFrom(alice, 1), ehrP, syn, 1, 0, ""))
	// TCP established: 5 min.
	establish(h, aliceP, ehrP)
	h.advance(45 * time.Second)
	h.sweep()
	if s := h.a.Stats(); s.FlowsOpen != 2 {
		t.Fatalf("after 45 s: FlowsOpen = %d, want 2 (half-open expired)", s.FlowsOpen)
	}
	h.advance(20 * time.Second)
	h.sweep()
	if s := h.a.Stats(); s.FlowsOpen != 1 {
		t.Fatalf("after 65 s: FlowsOpen = %d, want 1 (udp expired)", s.FlowsOpen)
	}
	h.returnDropped(packettest.UDP(dnsP, aliceP, []byte("late")))
	h.returns(tcp(ehrP, aliceP, ack, 5021, 1011, "")) // refreshes the flow
	h.advance(4 * time.Minute)
	h.sweep()
	if s := h.a.Stats(); s.FlowsOpen != 1 {
		t.Fatalf("after 4 idle min: FlowsOpen = %d, want 1", s.FlowsOpen)
	}
	h.advance(2 * time.Minute)
	h.sweep()
	if s := h.a.Stats(); s.FlowsOpen != 0 || h.a.flows.len() != 0 {
		t.Fatalf("after 6 idle min: FlowsOpen = %d, want 0", s.FlowsOpen)
	}
}

func TestTCPCloseAndReset(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	establish(h, aliceP, ehrP)
	h.passes(tcp(aliceP, ehrP, fin, 1011, 5021, ""))
	h.returns(tcp(ehrP, aliceP, fin, 5021, 1012, ""))
	h.passes(tcp(aliceP, ehrP, ack, 1012, 5022, "")) // the last ACK passes
	h.advance(11 * time.Second)
	h.sweep()
	if s := h.a.Stats(); s.FlowsOpen != 0 {
		t.Fatalf("closed flow still open after linger: %+v", s)
	}

	// A reset from the app ends the flow at once.
	establish(h, aliceP, ehrP)
	h.returns(tcp(ehrP, aliceP, rst, 5021, 0, ""))
	h.returnDropped(tcp(ehrP, aliceP, psh, 5021, 1011, "x"))
	// A reset from the client too (and a stray reset opens nothing).
	establish(h, aliceP, ehrP)
	h.passes(tcp(aliceP, ehrP, rst, 1011, 0, ""))
	h.passes(tcp(aliceP, ehrP, rst, 1011, 0, ""))
	if s := h.a.Stats(); s.FlowsOpen != 0 {
		t.Fatalf("FlowsOpen = %d after resets", s.FlowsOpen)
	}
}

func TestTCPPortReuseAfterClose(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	establish(h, aliceP, ehrP)
	h.passes(tcp(aliceP, ehrP, fin, 1011, 5021, ""))
	h.returns(tcp(ehrP, aliceP, fin, 5021, 1012, ""))
	// A new connection on the same tuple during the linger is a new flow.
	h.passes(tcp(aliceP, ehrP, syn, 90000, 0, ""))
	if ev := h.event(); ev.Action != controlproto.FlowAllow {
		t.Fatalf("event %+v", ev)
	}
	if s := h.a.Stats(); s.FlowsOpen != 1 || s.FlowsOpened != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// Regression guard for the race between SetPolicy's scan and a concurrent
// insert: after the final SetPolicy(Empty) no flow may remain.
func TestSetPolicyRacesInsert(t *testing.T) {
	d := newNopDev(1)
	a, err := New(d, Config{Policy: fullPolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	full := fullPolicy(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := packettest.UDP(netip.AddrPortFrom(alice, uint16(w<<12|i&0xfff)), dnsP, nil)
				a.Write([][]byte{p}, 0)
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			a.SetPolicy(policy.Empty)
		} else {
			a.SetPolicy(full)
		}
	}
	close(stop)
	wg.Wait()
	a.SetPolicy(full)
	a.SetPolicy(policy.Empty)
	if n := a.flows.len(); n != 0 || a.Stats().FlowsOpen != 0 {
		t.Fatalf("%d flows (FlowsOpen %d) survived a deny-all policy", n, a.Stats().FlowsOpen)
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	// Counted by name, once earlier tests' are gone: a global goroutine
	// count also sees other goroutines that are still exiting (flaky).
	waitNoAuthorizerGoroutines(t)
	before := authorizerGoroutines()
	ct := tuntest.NewChannelTUN()
	a, err := New(ct.TUN(), Config{JanitorInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n := authorizerGoroutines(); n < before+2 {
		t.Fatalf("%d authorizer goroutines after New, want at least %d: the janitor and reader", n, before+2)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitNoAuthorizerGoroutines(t)
	if _, err := a.Read([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	for range a.Events() { // closed by the device's Close
	}
}

// authorizerGoroutines counts the goroutines New started (janitors and
// readers) that have not exited: each stack names its creator, from before
// the goroutine first runs until it returns.
func authorizerGoroutines() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("created by github.com/cordonhq/cordon/gateway/internal/flow.New in"))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitNoAuthorizerGoroutines waits until no goroutine New started is left.
func waitNoAuthorizerGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for authorizerGoroutines() > 0 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("authorizer goroutines still running: %d\n%s", authorizerGoroutines(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

func TestNoAllocs(t *testing.T) {
	d := newNopDev(1)
	pol := fullPolicy(t)
	events := make(chan controlproto.FlowEvent, 1)
	a, err := New(d, Config{Policy: pol, Events: events})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out := [][]byte{tcp(aliceP, ehrP, syn, 1000, 0, "")}
	a.Write(out, 0)
	<-events
	d.in <- tcp(ehrP, aliceP, synack, 5000, 1001, "")
	rb, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	if n, err := a.Read(rb, sizes, 0); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	out[0] = tcp(aliceP, ehrP, psh, 1001, 5001, "data")
	in := tcp(ehrP, aliceP, psh, 5001, 1005, "data")
	denied := [][]byte{tcp(aliceP, netip.AddrPortFrom(lab, 22), syn, 1, 0, "")}
	a.Write(denied, 0)
	frags := packettest.Fragment(packettest.TCP(aliceP, ehrP, psh, 1005, 5001, make([]byte, 3000)), 1400, 1)

	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"established write", func() { a.Write(out, 0) }},
		{"established read", func() { d.in <- in; a.Read(rb, sizes, 0) }},
		{"repeated deny", func() { a.Write(denied, 0) }},
		{"fragmented datagram", func() { a.Write(frags, 0) }},
		{"decide", func() { pol.Decide(alice, ehr, policy.ProtoTCP, 443) }},
	} {
		if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tc.name, n)
		}
	}
}

func TestLocalServices(t *testing.T) {
	gw := netip.MustParseAddr("100.64.0.1")
	h := newHarness(t, compile(t), func(c *Config) { // alice has no rules at all
		c.LocalServices = []LocalService{{Name: "dns", Addr: gw, Proto: policy.ProtoUDP, Port: 53}}
	})
	q := packettest.UDP(aliceP, netip.AddrPortFrom(gw, 53), []byte("ehr.hospital.internal?"))
	h.passes(q)
	h.noEvent() // a lookup is not an app access: no flow.allow record per query
	h.returns(packettest.UDP(netip.AddrPortFrom(gw, 53), aliceP, []byte("NXDOMAIN")))
	h.blocked(packettest.UDP(netip.AddrPortFrom(mallory, 1), netip.AddrPortFrom(gw, 53), nil))
	h.blocked(tcp(aliceP, netip.AddrPortFrom(gw, 22), syn, 1, 0, ""))
	h.a.SetPolicy(compile(t))
	if s := h.a.Stats(); s.FlowsCut != 0 || s.FlowsOpen != 1 {
		t.Errorf("a policy change cut the local service flow: %+v", s)
	}
	if act, _ := h.a.Activity(0); len(act) != 0 {
		t.Errorf("a lookup counts as activity after a policy change: %v", act)
	}
	// The device leaves the policy: its lookup flow goes, unaudited.
	for len(h.events) > 0 { // the denials above
		<-h.events
	}
	h.a.SetPolicy(fullPolicyWithout(t, "dev-alice"))
	if s := h.a.Stats(); s.FlowsCut != 1 {
		t.Errorf("the departed device's lookup flow was not cut: %+v", s)
	}
	h.noEvent()
}

// fullPolicyWithout is compile(t) without the peer of device id.
func fullPolicyWithout(t *testing.T, id string) *policy.Compiled {
	t.Helper()
	var peers []policy.Peer
	for _, p := range []policy.Peer{{DeviceID: "dev-alice6", User: "alice@hospital.example", Addr: alice6, Rules: []policy.RuleID{"r-ehr6"}}} {
		if p.DeviceID != id {
			peers = append(peers, p)
		}
	}
	c, err := policy.Compile(allRules, peers)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Activity: a device's last client packet of an app flow, measured from
// the client's direction only; DNS lookups and the app's own traffic do
// not count; a packet after a report is in the next one, even within the
// same tick of the coarse clock.
func TestActivity(t *testing.T) {
	gw := netip.MustParseAddr("100.64.0.1")
	h := newHarness(t, compile(t, "r-ehr"), func(c *Config) {
		c.LocalServices = []LocalService{{Name: "dns", Addr: gw, Proto: policy.ProtoUDP, Port: 53}}
	})
	act, mark := h.a.Activity(0)
	if len(act) != 0 {
		t.Fatalf("activity with no flows: %v", act)
	}
	h.passes(packettest.UDP(aliceP, netip.AddrPortFrom(gw, 53), []byte("q")))
	if act, _ := h.a.Activity(mark); len(act) != 0 {
		t.Fatalf("a DNS lookup counted as activity: %v", act)
	}
	h.passes(tcp(aliceP, ehrP, syn, 1, 0, ""))
	h.event()
	act, mark = h.a.Activity(mark) // same tick as the packet
	if _, ok := act["dev-alice"]; !ok {
		t.Fatalf("activity %v: the new flow's packet is missing", act)
	}
	h.advance(10 * time.Second)
	h.fromApp(tcp(ehrP, aliceP, syn|ack, 100, 2, "")) // the app talks: not the user
	act, mark = h.a.Activity(mark)                    // may repeat the stamp of the last tick
	if idle, ok := act["dev-alice"]; ok && idle < 9*time.Second {
		t.Fatalf("the app's packet counted as the device's activity (idle %v)", idle)
	}
	if act, _ := h.a.Activity(mark); len(act) != 0 {
		t.Fatalf("activity %v after a report with no client packet since", act)
	}
	h.passes(tcp(aliceP, ehrP, ack, 2, 101, "GET"))
	act, _ = h.a.Activity(mark) // same tick as the last report
	if idle, ok := act["dev-alice"]; !ok || idle > time.Second {
		t.Fatalf("activity %v: want dev-alice idle ~0 after its packet", act)
	}
}

// A flow cut because its device left the map says so; one cut because the
// device lost the rule says that. (UDP: a cut writes no resets.)
func TestCutReasons(t *testing.T) {
	q := packettest.UDP(aliceP, dnsP, []byte("q"))
	h := newHarness(t, compile(t, "r-dns"))
	h.passes(q)
	h.event()                 // allow
	h.a.SetPolicy(compile(t)) // alice stays a peer, without rules
	if e := h.event(); e.Action != controlproto.FlowCut || e.Reason != policy.ReasonNoRule.String() {
		t.Fatalf("cut after losing the rule: %+v", e)
	}
	h.a.SetPolicy(compile(t, "r-dns"))
	h.passes(q)
	h.event() // allow
	h.a.SetPolicy(fullPolicyWithout(t, "dev-alice"))
	if e := h.event(); e.Action != controlproto.FlowCut || e.Reason != ReasonDeviceRemoved || e.DeviceID != "dev-alice" {
		t.Fatalf("cut after the device left the map: %+v", e)
	}
}

// ObserveDecision times the decisions of new flows whose source port is a
// multiple of DecisionSample, allowed or denied, and no packet of an open
// flow.
func TestObserveDecisionSamples(t *testing.T) {
	var timed int
	a, err := New(newNopDev(1), Config{Policy: fullPolicy(t), ObserveDecision: func(d time.Duration) {
		if d < 0 {
			t.Errorf("negative decision time %v", d)
		}
		timed++
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for port := uint16(1000); port < 1000+4*DecisionSample; port++ {
		a.Write([][]byte{tcp(netip.AddrPortFrom(alice, port), ehrP, syn, 1, 0, "")}, 0)                        // allowed
		a.Write([][]byte{tcp(netip.AddrPortFrom(alice, port), netip.AddrPortFrom(ehr, 22), syn, 1, 0, "")}, 0) // denied
	}
	if timed != 2*4 {
		t.Errorf("%d decisions timed, want 8 (1 in %d of 128 new flows)", timed, DecisionSample)
	}
	// Packets of the open flows are not decided again.
	for port := uint16(1000); port < 1000+4*DecisionSample; port++ {
		a.Write([][]byte{tcp(netip.AddrPortFrom(alice, port), ehrP, psh, 2, 0, "x")}, 0)
	}
	if timed != 8 {
		t.Errorf("%d decisions timed after packets of open flows, want still 8", timed)
	}
	if s := a.Stats(); s.FlowsOpened != 4*DecisionSample || s.PacketsDenied != 4*DecisionSample {
		t.Errorf("stats = %+v", s)
	}
}
