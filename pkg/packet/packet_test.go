package packet_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

var (
	c4   = netip.MustParseAddr("100.64.0.7")
	a4   = netip.MustParseAddr("10.20.0.5")
	c6   = netip.MustParseAddr("fd7a:115c:a1e0::7")
	a6   = netip.MustParseAddr("fd00:20::5")
	c4p  = netip.AddrPortFrom(c4, 40000)
	a4p  = netip.AddrPortFrom(a4, 443)
	c6p  = netip.AddrPortFrom(c6, 40000)
	a6p  = netip.AddrPortFrom(a6, 443)
	body = []byte("GET / HTTP/1.1\r\n\r\n")
)

// withExt rebuilds the IPv6 packet pkt with extension headers inserted
// before its transport header. Each ext is (type, raw bytes without the
// next-header byte, which is filled in).
func withExt(pkt []byte, exts ...[]byte) []byte {
	if len(exts) == 0 {
		return pkt
	}
	proto := pkt[6]
	var chain []byte
	types := make([]byte, len(exts))
	for i, e := range exts {
		types[i] = e[0]
	}
	for i, e := range exts {
		h := append([]byte(nil), e[1:]...)
		if i+1 < len(exts) {
			h[0] = types[i+1]
		} else {
			h[0] = proto
		}
		chain = append(chain, h...)
	}
	out := append([]byte(nil), pkt[:40]...)
	out[6] = types[0]
	out = append(out, chain...)
	out = append(out, pkt[40:]...)
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

// ext returns an extension header of type typ, total length n bytes (a
// multiple of 8), prefixed by its type for withExt.
func ext(typ byte, n int) []byte {
	b := make([]byte, 1+n)
	b[0] = typ
	b[2] = byte(n/8 - 1)
	return b
}

func fragHdr(offset uint16, more bool) []byte {
	b := make([]byte, 9)
	b[0] = 44
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[3:], v)
	binary.BigEndian.PutUint32(b[5:], 0xdeadbeef)
	return b
}

func v4frag(pkt []byte, offset uint16, more bool) []byte {
	out := append([]byte(nil), pkt...)
	v := offset
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(out[6:], v)
	binary.BigEndian.PutUint16(out[4:], 0x1234) // identification
	return out
}

func TestParse(t *testing.T) {
	tcp4 := packettest.TCP(c4p, a4p, packet.TCPSyn, 1000, 0, nil)
	tcp6 := packettest.TCP(c6p, a6p, packet.TCPAck|packet.TCPPsh, 1001, 5001, body)
	udp4 := packettest.UDP(c4p, netip.AddrPortFrom(a4, 53), body)
	tests := []struct {
		name string
		in   []byte
		want packet.Packet
	}{
		{
			name: "ipv4 tcp syn",
			in:   tcp4,
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 443, Proto: policy.ProtoTCP},
				Version: 4, Length: 40, TransportOffset: 20, TCPFlags: packet.TCPSyn, Seq: 1000,
			},
		},
		{
			name: "ipv6 tcp with data",
			in:   tcp6,
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c6, Dst: a6, SrcPort: 40000, DstPort: 443, Proto: policy.ProtoTCP},
				Version: 6, Length: 60 + len(body), TransportOffset: 40, Payload: len(body),
				TCPFlags: packet.TCPAck | packet.TCPPsh, Seq: 1001, Ack: 5001,
			},
		},
		{
			name: "ipv4 udp",
			in:   udp4,
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 53, Proto: policy.ProtoUDP},
				Version: 4, Length: 28 + len(body), TransportOffset: 20, Payload: len(body),
			},
		},
		{
			name: "trailing bytes past the declared length are ignored",
			in:   append(append([]byte(nil), udp4...), 0, 0, 0, 0),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 53, Proto: policy.ProtoUDP},
				Version: 4, Length: 28 + len(body), TransportOffset: 20, Payload: len(body),
			},
		},
		{
			name: "ipv4 echo request: id is the source port",
			in:   packettest.Echo(c4, a4, 77, 1, false),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, SrcPort: 77, Proto: policy.ProtoICMP},
				Version: 4, Length: 36, TransportOffset: 20, Payload: 8, ICMPType: 8, ICMPID: 77,
			},
		},
		{
			name: "ipv6 echo reply: id is the destination port",
			in:   packettest.Echo(a6, c6, 77, 1, true),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: a6, Dst: c6, DstPort: 77, Proto: policy.ProtoICMP6},
				Version: 6, Length: 56, TransportOffset: 40, Payload: 8, ICMPType: 129, ICMPID: 77,
			},
		},
		{
			name: "ipv4 port unreachable quotes the flow",
			in:   packettest.Unreachable(a4, c4, packettest.UDP(c4p, netip.AddrPortFrom(a4, 53), body)),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: a4, Dst: c4, Proto: policy.ProtoICMP},
				Version: 4, Length: 56, TransportOffset: 20, Payload: 28, ICMPType: 3, ICMPCode: 3,
				Inner:    packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 53, Proto: policy.ProtoUDP},
				HasInner: true,
			},
		},
		{
			name: "ipv6 extension headers are walked",
			in:   withExt(tcp6, ext(0, 8), ext(60, 16), ext(43, 8), fragHdr(0, false)),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c6, Dst: a6, SrcPort: 40000, DstPort: 443, Proto: policy.ProtoTCP},
				Version: 6, Length: 60 + len(body) + 40, TransportOffset: 80, Payload: len(body),
				TCPFlags: packet.TCPAck | packet.TCPPsh, Seq: 1001, Ack: 5001,
			},
		},
		{
			name: "ipv6 first fragment has ports",
			in:   withExt(tcp6, fragHdr(0, true)),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c6, Dst: a6, SrcPort: 40000, DstPort: 443, Proto: policy.ProtoTCP},
				Version: 6, Frag: packet.FragFirst, Length: 68 + len(body), TransportOffset: 48, Payload: len(body),
				TCPFlags: packet.TCPAck | packet.TCPPsh, Seq: 1001, Ack: 5001,
				FragID: 0xdeadbeef, FragLen: 20 + uint16(len(body)),
			},
		},
		{
			name: "ipv6 later fragment has no ports",
			in:   withExt(tcp6, fragHdr(185, false)),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c6, Dst: a6, Proto: policy.ProtoTCP},
				Version: 6, Frag: packet.FragLater, Length: 68 + len(body), TransportOffset: 48,
				FragID: 0xdeadbeef, FragOffset: 185 * 8, FragLen: 20 + uint16(len(body)),
			},
		},
		{
			name: "ipv4 later fragment has no ports",
			in:   v4frag(udp4, 100, true),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, Proto: policy.ProtoUDP},
				Version: 4, Frag: packet.FragLater, Length: 28 + len(body), TransportOffset: 20,
				FragID: 0x1234, FragOffset: 800, FragLen: 8 + uint16(len(body)),
			},
		},
		{
			name: "ipv4 first fragment",
			in:   v4frag(udp4, 0, true),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 53, Proto: policy.ProtoUDP},
				Version: 4, Frag: packet.FragFirst, Length: 28 + len(body), TransportOffset: 20, Payload: len(body),
				FragID: 0x1234, FragLen: 8 + uint16(len(body)),
			},
		},
		{
			name: "ipv4 fragmentation needed carries the next-hop mtu",
			in:   packettest.FragNeeded(a4, c4, 1280, packettest.UDP(c4p, netip.AddrPortFrom(a4, 53), body)),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: a4, Dst: c4, Proto: policy.ProtoICMP},
				Version: 4, Length: 20 + 8 + 28 + len(body), TransportOffset: 20, Payload: 28 + len(body),
				ICMPType: 3, ICMPCode: 4, MTU: 1280,
				Inner:    packet.Tuple{Src: c4, Dst: a4, SrcPort: 40000, DstPort: 53, Proto: policy.ProtoUDP},
				HasInner: true,
			},
		},
		{
			name: "ipv6 packet too big carries the mtu",
			in:   packettest.FragNeeded(a6, c6, 1280, tcp6),
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: a6, Dst: c6, Proto: policy.ProtoICMP6},
				Version: 6, Length: 40 + 8 + len(tcp6), TransportOffset: 40, Payload: len(tcp6),
				ICMPType: 2, MTU: 1280,
				Inner:    packet.Tuple{Src: c6, Dst: a6, SrcPort: 40000, DstPort: 443, Proto: policy.ProtoTCP},
				HasInner: true,
			},
		},
		{
			name: "unknown protocol: no ports",
			in:   packettest.IP(c4, a4, 47, make([]byte, 24), -1), // GRE
			want: packet.Packet{
				Tuple:   packet.Tuple{Src: c4, Dst: a4, Proto: 47},
				Version: 4, Length: 44, TransportOffset: 20,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := packet.Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// Fragments of one datagram tile its fragmentable part: each one's offset
// is where the last one ended, and only the first has ports.
func TestParseFragmentsTileTheDatagram(t *testing.T) {
	for _, pkt := range [][]byte{
		packettest.UDP(c4p, a4p, make([]byte, 4000)),
		packettest.UDP(c6p, a6p, make([]byte, 4000)),
	} {
		frags := packettest.Fragment(pkt, 1400, 0x10203)
		if len(frags) != 3 {
			t.Fatalf("%d fragments, want 3", len(frags))
		}
		end := 0
		for i, f := range frags {
			p, err := packet.Parse(f)
			if err != nil {
				t.Fatalf("fragment %d: %v", i, err)
			}
			wantFrag, wantID := packet.FragLater, uint32(0x10203)
			if i == 0 {
				wantFrag = packet.FragFirst
			}
			if p.Version == 4 {
				wantID = 0x0203
			}
			if p.Frag != wantFrag || p.FragID != wantID || int(p.FragOffset) != end {
				t.Errorf("fragment %d: frag %v id %#x offset %d, want %v %#x %d", i, p.Frag, p.FragID, p.FragOffset, wantFrag, wantID, end)
			}
			if (i == 0) != (p.DstPort == a4p.Port()) {
				t.Errorf("fragment %d: ports %d→%d", i, p.SrcPort, p.DstPort)
			}
			end += int(p.FragLen)
		}
		if end != 8+4000 {
			t.Errorf("fragments cover %d bytes, want %d", end, 8+4000)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tcp4 := packettest.TCP(c4p, a4p, packet.TCPSyn, 1, 0, nil)
	tcp6 := packettest.TCP(c6p, a6p, packet.TCPSyn, 1, 0, nil)
	mut := func(b []byte, f func([]byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	long := make([][]byte, packet.MaxExtensionHeaders+1)
	for i := range long {
		long[i] = ext(60, 8)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, packet.ErrTruncated},
		{"version 5", mut(tcp4, func(b []byte) { b[0] = 0x55 }), packet.ErrVersion},
		{"short ipv4 header", tcp4[:19], packet.ErrTruncated},
		{"ihl below 5", mut(tcp4, func(b []byte) { b[0] = 0x44 }), packet.ErrHeader},
		{"total length beyond input", tcp4[:39], packet.ErrTruncated},
		{"total length below header", mut(tcp4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 10) }), packet.ErrHeader},
		{"truncated tcp header", mut(tcp4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 30) }), packet.ErrTruncated},
		{"tcp data offset below 5", mut(tcp4, func(b []byte) { b[32] = 4 << 4 }), packet.ErrHeader},
		{"tcp data offset beyond segment", mut(tcp4, func(b []byte) { b[32] = 15 << 4 }), packet.ErrTruncated},
		{"short ipv6 header", tcp6[:39], packet.ErrTruncated},
		{"ipv6 payload beyond input", tcp6[:59], packet.ErrTruncated},
		{"hop-by-hop not first", withExt(tcp6, ext(60, 8), ext(0, 8)), packet.ErrHeader},
		{"extension header beyond payload", withExt(tcp6, ext(60, 8))[:47], packet.ErrTruncated},
		{"too many extension headers", withExt(tcp6, long...), packet.ErrTooManyHeaders},
		{"truncated udp", packettest.IP(c4, a4, policy.ProtoUDP, make([]byte, 7), -1), packet.ErrTruncated},
		{"truncated icmp", packettest.IP(c4, a4, policy.ProtoICMP, make([]byte, 7), -1), packet.ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := packet.Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTupleReverseMatchesEchoReply(t *testing.T) {
	req, err := packet.Parse(packettest.Echo(c4, a4, 9, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := packet.Parse(packettest.Echo(a4, c4, 9, 1, true))
	if err != nil {
		t.Fatal(err)
	}
	if req.Tuple.Reverse() != rep.Tuple {
		t.Fatalf("reply tuple %+v is not the reverse of request tuple %+v", rep.Tuple, req.Tuple)
	}
}

func TestBuildTCPRST(t *testing.T) {
	tests := []struct {
		name string
		r    packet.TCPReset
	}{
		{"ipv4 with ack", packet.TCPReset{Src: a4p, Dst: c4p, Seq: 0xfffffff0, Ack: 1234, AckValid: true}},
		{"ipv4 without ack", packet.TCPReset{Src: c4p, Dst: a4p, Seq: 7}},
		{"ipv6 with ack", packet.TCPReset{Src: a6p, Dst: c6p, Seq: 99, Ack: 0x80000000, AckValid: true}},
		{"ipv6 without ack", packet.TCPReset{Src: c6p, Dst: a6p, Seq: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xaa, 0xbb}
			b, err := packet.BuildTCPRST(prefix, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			pkt := b[len(prefix):]
			if len(pkt) != packet.RSTLen(!tt.r.Src.Addr().Is4()) {
				t.Fatalf("len = %d", len(pkt))
			}
			p, err := packet.Parse(pkt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := packet.Tuple{Src: tt.r.Src.Addr(), Dst: tt.r.Dst.Addr(), SrcPort: tt.r.Src.Port(), DstPort: tt.r.Dst.Port(), Proto: policy.ProtoTCP}
			if p.Tuple != want {
				t.Errorf("tuple = %+v, want %+v", p.Tuple, want)
			}
			wantFlags := packet.TCPRst
			var wantAck uint32
			if tt.r.AckValid {
				wantFlags |= packet.TCPAck
				wantAck = tt.r.Ack
			}
			if p.TCPFlags != wantFlags || p.Seq != tt.r.Seq || p.Ack != wantAck || p.Payload != 0 {
				t.Errorf("flags=%08b seq=%d ack=%d payload=%d", p.TCPFlags, p.Seq, p.Ack, p.Payload)
			}
			checkChecksums(t, pkt)
		})
	}
}

// checkChecksums verifies the IP header and TCP checksums of pkt with the
// independent routine in packettest: a correct checksum sums to zero.
func checkChecksums(t *testing.T, pkt []byte) {
	t.Helper()
	p, err := packet.Parse(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if p.Version == 4 {
		if c := packettest.Checksum(pkt[:20]); c != 0 {
			t.Errorf("IPv4 header checksum does not verify (residue %#04x)", c)
		}
	}
	seg := pkt[p.TransportOffset:p.Length]
	if c := packettest.Checksum(packettest.PseudoHeader(p.Src, p.Dst, policy.ProtoTCP, len(seg)), seg); c != 0 {
		t.Errorf("TCP checksum does not verify (residue %#04x)", c)
	}
}

func TestBuildTCPRSTRejects(t *testing.T) {
	if _, err := packet.BuildTCPRST(nil, packet.TCPReset{Src: c4p, Dst: a6p}); !errors.Is(err, packet.ErrFamilyMismatch) {
		t.Errorf("mixed families: err = %v", err)
	}
	if _, err := packet.BuildTCPRST(nil, packet.TCPReset{Dst: a6p}); !errors.Is(err, packet.ErrInvalidEndpoint) {
		t.Errorf("zero source: err = %v", err)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	pkts := [][]byte{
		packettest.TCP(c4p, a4p, packet.TCPAck, 1, 2, body),
		withExt(packettest.TCP(c6p, a6p, packet.TCPAck, 1, 2, body), ext(0, 8), ext(60, 8)),
		packettest.Unreachable(a6, c6, packettest.UDP(c6p, a6p, body)),
	}
	for _, pkt := range pkts {
		if n := testing.AllocsPerRun(100, func() { _, _ = packet.Parse(pkt) }); n != 0 {
			t.Errorf("Parse allocates %v times", n)
		}
	}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		_, _ = packet.BuildTCPRST(buf[:0], packet.TCPReset{Src: a6p, Dst: c6p, Seq: 1})
	}); n != 0 {
		t.Errorf("BuildTCPRST into a large enough buffer allocates %v times", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(packettest.TCP(c4p, a4p, packet.TCPSyn, 1, 0, nil))
	f.Add(packettest.TCP(c6p, a6p, packet.TCPAck, 1, 2, body))
	f.Add(packettest.UDP(c4p, a4p, body))
	f.Add(packettest.Echo(c6, a6, 1, 2, false))
	f.Add(packettest.Unreachable(a4, c4, packettest.TCP(c4p, a4p, packet.TCPSyn, 1, 0, nil)))
	f.Add(packettest.Unreachable(a6, c6, packettest.TCP(c6p, a6p, packet.TCPSyn, 1, 0, nil)))
	f.Add(withExt(packettest.UDP(c6p, a6p, body), ext(0, 8), ext(43, 16), fragHdr(0, true)))
	f.Add(withExt(packettest.UDP(c6p, a6p, body), fragHdr(3, false)))
	f.Add(v4frag(packettest.UDP(c4p, a4p, body), 7, false))
	f.Add(packettest.FragNeeded(a4, c4, 1280, packettest.TCP(c4p, a4p, packet.TCPSyn, 1, 0, nil)))
	f.Add(packettest.FragNeeded(a6, c6, 1280, packettest.TCP(c6p, a6p, packet.TCPSyn, 1, 0, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := packet.Parse(b)
		if err != nil {
			return
		}
		if p.Length > len(b) || p.TransportOffset > p.Length || p.TransportOffset+p.Payload > p.Length {
			t.Fatalf("lengths out of bounds: input %d, %+v", len(b), p)
		}
		if p.Version != 4 && p.Version != 6 {
			t.Fatalf("version %d accepted", p.Version)
		}
		if p.Src.Is4() != (p.Version == 4) || p.Dst.Is4() != (p.Version == 4) {
			t.Fatalf("address family does not match version: %+v", p)
		}
		if p.Frag == packet.FragLater && (p.SrcPort != 0 || p.DstPort != 0) {
			t.Fatalf("later fragment with ports: %+v", p)
		}
		if p.Frag == packet.FragNone && (p.FragID != 0 || p.FragOffset != 0 || p.FragLen != 0) {
			t.Fatalf("fragment fields on a whole datagram: %+v", p)
		}
		if p.FragOffset%8 != 0 || int(p.FragLen) > p.Length || (p.Frag == packet.FragFirst) != (p.Frag != packet.FragNone && p.FragOffset == 0) {
			t.Fatalf("fragment fields out of bounds: %+v", p)
		}
		if p.MTU != 0 && !p.IsPacketTooBig() {
			t.Fatalf("MTU on a packet that is not a packet-too-big: %+v", p)
		}
		// A reset for any parsed TCP tuple round-trips.
		if p.Proto == policy.ProtoTCP && p.Frag == packet.FragNone {
			rst, err := packet.BuildTCPRST(nil, packet.TCPReset{Src: p.DstAddrPort(), Dst: p.SrcAddrPort(), Seq: p.Ack, Ack: p.Seq, AckValid: true})
			if err != nil {
				t.Fatal(err)
			}
			q, err := packet.Parse(rst)
			if err != nil || q.Tuple != p.Tuple.Reverse() {
				t.Fatalf("reset does not round-trip: %v %+v", err, q)
			}
			checkChecksums(t, rst)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-tcp", packettest.TCP(c4p, a4p, packet.TCPAck, 1, 2, make([]byte, 1200))},
		{"ipv6-tcp-2ext", withExt(packettest.TCP(c6p, a6p, packet.TCPAck, 1, 2, make([]byte, 1200)), ext(0, 8), ext(60, 8))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := packet.Parse(tc.pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
