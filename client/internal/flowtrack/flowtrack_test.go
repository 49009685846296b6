package flowtrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
)

var (
	host = netip.MustParseAddrPort("100.64.0.9:40000")
	ehr  = netip.MustParseAddrPort("10.20.0.10:443")
	lab  = netip.MustParseAddrPort("10.30.0.5:53")
	seg  = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}
	t0   = time.Unix(1_800_000_000, 0)
)

func tcp(src, dst netip.AddrPort, flags packet.TCPFlags) []byte {
	return packettest.TCP(src, dst, flags, 1, 1, nil)
}

// A connection counts from the host's SYN until FIN both ways or a RST;
// only flows into the asked prefixes count.
func TestTCPLifecycle(t *testing.T) {
	tr := New()
	tr.Out(tcp(host, ehr, packet.TCPSyn), t0)
	if n := tr.Open(t0, seg); n != 1 {
		t.Fatalf("after SYN: %d open, want 1", n)
	}
	if n := tr.Open(t0, []netip.Prefix{netip.MustParsePrefix("10.30.0.0/24")}); n != 0 {
		t.Fatalf("another segment: %d open, want 0", n)
	}
	tr.In(tcp(ehr, host, packet.TCPSyn|packet.TCPAck), t0)
	tr.Out(tcp(host, ehr, packet.TCPAck|packet.TCPFin), t0)
	if n := tr.Open(t0, seg); n != 1 {
		t.Fatalf("half closed: %d open, want 1", n)
	}
	tr.In(tcp(ehr, host, packet.TCPAck|packet.TCPFin), t0)
	if n := tr.Open(t0, seg); n != 0 || tr.Len() != 0 {
		t.Fatalf("closed both ways: %d open (%d kept), want 0", n, tr.Len())
	}
	// The last ACK after both FINs does not open it again.
	tr.Out(tcp(host, ehr, packet.TCPAck), t0)
	if tr.Len() != 0 {
		t.Fatal("a late ACK opened a flow")
	}
	// A reset from the app ends one.
	tr.Out(tcp(host, ehr, packet.TCPSyn), t0)
	tr.In(tcp(ehr, host, packet.TCPRst|packet.TCPAck), t0)
	if tr.Len() != 0 {
		t.Fatal("RST from the app kept the flow")
	}
}

// A segment that moved forgets its flows (they were cut); others stay.
func TestForget(t *testing.T) {
	tr := New()
	tr.Out(tcp(host, ehr, packet.TCPSyn), t0)
	tr.Out(packettest.UDP(host, lab, []byte("q")), t0)
	tr.Forget(seg)
	if n := tr.Open(t0, seg); n != 0 || tr.Len() != 1 {
		t.Fatalf("after Forget: %d open in the segment, %d kept; want 0 and the other one", n, tr.Len())
	}
}

// What comes out of the tunnel never opens a flow.
func TestInboundOpensNothing(t *testing.T) {
	tr := New()
	tr.In(tcp(ehr, host, packet.TCPSyn), t0)
	tr.In(packettest.UDP(lab, host, []byte("x")), t0)
	if tr.Len() != 0 {
		t.Fatalf("inbound packets opened %d flows", tr.Len())
	}
}

// UDP counts for IdleOther after its last packet either way; TCP is
// forgotten after IdleTCP without a packet.
func TestIdle(t *testing.T) {
	tr := New()
	tr.Out(packettest.UDP(host, lab, []byte("q")), t0)
	tr.Out(tcp(host, ehr, packet.TCPSyn), t0)
	all := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tr.In(packettest.UDP(lab, host, []byte("a")), t0.Add(IdleOther/2))
	if n := tr.Open(t0.Add(IdleOther), all); n != 2 {
		t.Fatalf("%d open, want 2 (UDP refreshed by its answer)", n)
	}
	if n := tr.Open(t0.Add(IdleOther/2+IdleOther+time.Millisecond), all); n != 1 {
		t.Fatalf("%d open, want 1 (UDP idle)", n)
	}
	if n := tr.Open(t0.Add(IdleTCP+time.Second), all); n != 0 {
		t.Fatalf("%d open, want 0 (TCP idle past IdleTCP)", n)
	}
}

// A full table reports an untracked flow as open rather than forget it.
func TestFull(t *testing.T) {
	tr := New()
	for i := range MaxFlows {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 40000)
		tr.Out(tcp(src, ehr, packet.TCPSyn), t0)
	}
	other := []netip.Prefix{netip.MustParsePrefix("10.30.0.0/24")}
	if n := tr.Open(t0, other); n != 0 {
		t.Fatalf("%d open in the other segment before overflow", n)
	}
	tr.Out(packettest.UDP(host, lab, []byte("q")), t0)
	if n := tr.Open(t0, other); n != 1 {
		t.Fatalf("%d open after a flow was not tracked, want 1 (overflow)", n)
	}
	if n := tr.Open(t0.Add(IdleTCP+time.Second), other); n != 0 {
		t.Fatalf("%d open once the table expired, want 0", n)
	}
}

// Any bytes either way: no panic, and the table only holds flows the host
// opened.
func FuzzTracker(f *testing.F) {
	f.Add(tcp(host, ehr, packet.TCPSyn), tcp(ehr, host, packet.TCPRst))
	f.Add(packettest.UDP(host, lab, []byte("q")), []byte{0x45})
	f.Fuzz(func(t *testing.T, out, in []byte) {
		tr := New()
		tr.In(in, t0)
		if tr.Len() != 0 {
			t.Fatal("an inbound packet opened a flow")
		}
		tr.Out(out, t0)
		tr.In(in, t0)
		if tr.Len() > 1 {
			t.Fatalf("one outbound packet made %d flows", tr.Len())
		}
		tr.Open(t0, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")})
	})
}
