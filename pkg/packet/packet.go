// Package packet parses the IP headers the data path decides on and builds
// the few packets it synthesizes (TCP resets that cut a flow).
//
// [Parse] reads an IPv4 or IPv6 packet as it comes out of (or goes into) a
// TUN device: no link-layer header, no offload header. It reads only what a
// flow decision needs (addresses, transport protocol, ports, TCP flags and
// sequence numbers, ICMP type and the flow quoted inside an ICMP error). It
// does not allocate, does not keep a reference to its input, and returns an
// error, never a panic, for a truncated or malformed packet. It does not
// verify checksums: the receiving stack does, and TUN devices with offloads
// hand over packets whose checksums are only partial.
//
// Fragments. Only the first fragment of a fragmented datagram carries the
// transport header, so a later fragment cannot be matched to a flow by port.
// Parse reports fragments in [Packet.Frag] (and parses the transport header
// of a first fragment), with the datagram's identification and the
// fragment's place in it ([Packet.FragID], [Packet.FragOffset],
// [Packet.FragLen]): the gateway's flow authorizer admits a later fragment
// by the identification of an admitted first one. An IPv6 atomic fragment
// (offset 0, no more fragments, RFC 6946) is a whole datagram and is
// reported as unfragmented.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Errors Parse returns. They are sentinels so the data path can count them
// without allocating.
var (
	ErrTruncated       = errors.New("packet: truncated")
	ErrVersion         = errors.New("packet: not IPv4 or IPv6")
	ErrHeader          = errors.New("packet: malformed header")
	ErrTooManyHeaders  = errors.New("packet: too many IPv6 extension headers")
	ErrFamilyMismatch  = errors.New("packet: source and destination are of different address families")
	ErrInvalidEndpoint = errors.New("packet: invalid address")
)

// MaxExtensionHeaders bounds the IPv6 extension headers Parse walks before it
// gives up on a packet (RFC 8200 recommends each type at most once or twice;
// a longer chain is an attack on the parser, not a real packet).
const MaxExtensionHeaders = 8

// Frag says whether a packet is an IP fragment.
type Frag uint8

// Fragment kinds.
const (
	FragNone  Frag = iota // a whole datagram
	FragFirst             // the first fragment: carries the transport header
	FragLater             // a non-first fragment: no transport header, no ports
)

func (f Frag) String() string {
	switch f {
	case FragNone:
		return "none"
	case FragFirst:
		return "first"
	case FragLater:
		return "later"
	}
	return "unknown"
}

// TCPFlags are the flag bits of a TCP header.
type TCPFlags uint8

// TCP flag bits (RFC 9293).
const (
	TCPFin TCPFlags = 1 << iota
	TCPSyn
	TCPRst
	TCPPsh
	TCPAck
	TCPUrg
	TCPEce
	TCPCwr
)

// Has reports whether every bit of m is set.
func (f TCPFlags) Has(m TCPFlags) bool { return f&m == m }

// ICMP types the data path treats specially.
const (
	ICMPv4EchoReply      = 0
	ICMPv4Unreachable    = 3
	ICMPv4Echo           = 8
	ICMPv4TimeExceeded   = 11
	ICMPv4ParamProblem   = 12
	ICMPv6Unreachable    = 1
	ICMPv6PacketTooBig   = 2
	ICMPv6TimeExceeded   = 3
	ICMPv6ParamProblem   = 4
	ICMPv6EchoRequest    = 128
	ICMPv6EchoReply      = 129
	ICMPv4CodeFragNeeded = 4 // destination unreachable: fragmentation needed and DF set
	icmpHeaderLen        = 8
	ipv4HeaderLen        = 20
	ipv6HeaderLen        = 40
	tcpHeaderLen         = 20
	udpHeaderLen         = 8
	protoHopByHop        = 0
	protoRouting         = 43
	protoFragment        = 44
	protoAH              = 51
	protoNoNext          = 59
	protoDestOpts        = 60
	ipv4FlagMoreFrags    = 0x2000
	ipv4FragOffsetMask   = 0x1fff
	ipv6FragOffsetMask   = 0xfff8
	ipv6FlagMoreFrags    = 0x1
	defaultTTL           = 64
	ipv4FlagDontFragEnc  = 0x40
)

// Tuple identifies a flow: protocol, addresses and ports. For ICMP echo the
// identifier stands in for a port: an echo request carries it as SrcPort
// (DstPort 0) and an echo reply as DstPort (SrcPort 0), so the reply's tuple
// is the [Tuple.Reverse] of the request's. Other ICMP messages and
// protocols without ports have both ports 0.
//
// Tuple is comparable and is used as a map key.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            policy.Proto
}

// Reverse returns the tuple of the opposite direction.
func (t Tuple) Reverse() Tuple {
	return Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort, Proto: t.Proto}
}

// SrcAddrPort returns the source address and port.
func (t Tuple) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(t.Src, t.SrcPort) }

// DstAddrPort returns the destination address and port.
func (t Tuple) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(t.Dst, t.DstPort) }

// Packet is what Parse reads from one IP packet. Fields that do not apply to
// the packet's protocol are zero.
type Packet struct {
	Tuple
	Version uint8 // 4 or 6
	Frag    Frag

	// Length is the IP packet length the header declares (bytes past it in
	// the input are ignored). TransportOffset is where the transport header
	// starts (after IPv4 options and IPv6 extension headers); Payload is
	// the length of the transport payload (TCP and UDP data).
	Length          int
	TransportOffset int
	Payload         int

	// TCP.
	TCPFlags TCPFlags
	Seq, Ack uint32

	// Fragments (Frag is not FragNone). FragID is the datagram's
	// identification (IPv4: 16 bits; IPv6: the Fragment header's 32);
	// FragOffset is where the fragment's data starts in the datagram's
	// fragmentable part (bytes) and FragLen how many bytes of it the
	// fragment carries.
	FragID     uint32
	FragOffset uint16
	FragLen    uint16

	// ICMP and ICMPv6. ICMPID is the echo identifier. MTU is the next-hop
	// MTU a packet-too-big message reports (see IsPacketTooBig; 0 when it
	// reports none).
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	MTU                uint32

	// Inner is the flow quoted in an ICMP error (destination unreachable,
	// packet too big, time exceeded, parameter problem), as the original
	// packet's sender sent it; HasInner says whether it could be read.
	Inner    Tuple
	HasInner bool
}

// IsICMPError reports whether the packet is an ICMP or ICMPv6 error message.
func (p *Packet) IsICMPError() bool {
	switch p.Proto {
	case policy.ProtoICMP:
		return isICMPv4Error(p.ICMPType)
	case policy.ProtoICMP6:
		return isICMPv6Error(p.ICMPType)
	}
	return false
}

// IsPacketTooBig reports whether the packet is a path MTU signal: an ICMP
// destination unreachable "fragmentation needed and DF set" (RFC 1191) or an
// ICMPv6 packet too big (RFC 8201). MTU holds the MTU it reports.
func (p *Packet) IsPacketTooBig() bool {
	switch p.Proto {
	case policy.ProtoICMP:
		return p.Version == 4 && p.ICMPType == ICMPv4Unreachable && p.ICMPCode == ICMPv4CodeFragNeeded
	case policy.ProtoICMP6:
		return p.Version == 6 && p.ICMPType == ICMPv6PacketTooBig
	}
	return false
}

func isICMPv4Error(t uint8) bool {
	return t == ICMPv4Unreachable || t == ICMPv4TimeExceeded || t == ICMPv4ParamProblem
}

func isICMPv6Error(t uint8) bool {
	return t >= ICMPv6Unreachable && t <= ICMPv6ParamProblem
}

// Parse reads the IP and transport headers of b. It does not allocate and
// keeps no reference to b.
func Parse(b []byte) (Packet, error) {
	var p Packet
	err := p.decode(b)
	return p, err
}

func (p *Packet) decode(b []byte) error {
	if len(b) < 1 {
		return ErrTruncated
	}
	var (
		l4  []byte
		err error
	)
	switch b[0] >> 4 {
	case 4:
		l4, err = p.decodeIPv4(b)
	case 6:
		l4, err = p.decodeIPv6(b)
	default:
		return ErrVersion
	}
	if err != nil {
		return err
	}
	if p.Frag == FragLater {
		return nil
	}
	return p.decodeTransport(l4)
}

// decodeIPv4 reads the IPv4 header and returns the transport bytes.
func (p *Packet) decodeIPv4(b []byte) ([]byte, error) {
	if len(b) < ipv4HeaderLen {
		return nil, ErrTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < ipv4HeaderLen || total < ihl {
		return nil, ErrHeader
	}
	if total > len(b) {
		return nil, ErrTruncated
	}
	p.Version = 4
	p.Length = total
	p.TransportOffset = ihl
	p.Proto = policy.Proto(b[9])
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:8])
	switch {
	case frag&ipv4FragOffsetMask != 0:
		p.Frag = FragLater
	case frag&ipv4FlagMoreFrags != 0:
		p.Frag = FragFirst
	}
	if p.Frag != FragNone {
		p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
		p.FragOffset = (frag & ipv4FragOffsetMask) << 3
		p.FragLen = uint16(total - ihl)
	}
	return b[ihl:total], nil
}

// decodeIPv6 reads the fixed header, walks the extension headers and
// returns the transport bytes.
func (p *Packet) decodeIPv6(b []byte) ([]byte, error) {
	if len(b) < ipv6HeaderLen {
		return nil, ErrTruncated
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		// A payload length of 0 with more bytes behind it would be a
		// jumbogram (RFC 2675); TUN MTUs never allow one. Either way the
		// declared length is what counts.
		return nil, ErrTruncated
	}
	p.Version = 6
	p.Length = total
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	w, err := walkIPv6(b[:total], b[6])
	if err != nil {
		return nil, err
	}
	p.Proto = policy.Proto(w.next)
	p.TransportOffset = w.off
	p.Frag = w.frag
	if w.frag != FragNone {
		p.FragID = w.fragID
		p.FragOffset = w.fragOffset
		p.FragLen = uint16(total - w.fragData)
	}
	return b[w.off:total], nil
}

// ipv6Walk is what walkIPv6 found.
type ipv6Walk struct {
	next uint8 // upper-layer protocol
	off  int   // its offset
	frag Frag
	// Fragment header fields: identification, fragment offset (bytes)
	// and where the fragment's data starts in the packet.
	fragID     uint32
	fragOffset uint16
	fragData   int
}

// walkIPv6 follows the extension header chain of the IPv6 packet b (whose
// fixed header is complete) starting at next header nh.
func walkIPv6(b []byte, nh uint8) (ipv6Walk, error) {
	off := ipv6HeaderLen
	var w ipv6Walk
	for i := 0; ; i++ {
		var hlen int
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts:
			if nh == protoHopByHop && i != 0 {
				return ipv6Walk{}, ErrHeader // RFC 8200 4.1: only right after the fixed header
			}
			if len(b)-off < 2 {
				return ipv6Walk{}, ErrTruncated
			}
			hlen = (int(b[off+1]) + 1) * 8
		case protoAH:
			if len(b)-off < 2 {
				return ipv6Walk{}, ErrTruncated
			}
			hlen = (int(b[off+1]) + 2) * 4
		case protoFragment:
			hlen = 8
			if len(b)-off < hlen {
				return ipv6Walk{}, ErrTruncated
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			switch {
			case fo&ipv6FragOffsetMask != 0:
				w.frag = FragLater
			case fo&ipv6FlagMoreFrags != 0:
				w.frag = FragFirst
			}
			if w.frag != FragNone {
				w.fragID = binary.BigEndian.Uint32(b[off+4 : off+8])
				w.fragOffset = fo & ipv6FragOffsetMask
				w.fragData = off + hlen
			}
			if w.frag == FragLater {
				// Nothing behind a later fragment's header is a header.
				w.next, w.off = b[off], off+hlen
				return w, nil
			}
		default:
			w.next, w.off = nh, off
			return w, nil
		}
		if i >= MaxExtensionHeaders {
			return ipv6Walk{}, ErrTooManyHeaders
		}
		if len(b)-off < hlen {
			return ipv6Walk{}, ErrTruncated
		}
		nh = b[off]
		off += hlen
	}
}

// decodeTransport reads the transport header in l4 (the bytes after the IP
// header, up to the declared length).
func (p *Packet) decodeTransport(l4 []byte) error {
	switch p.Proto {
	case policy.ProtoTCP:
		if len(l4) < tcpHeaderLen {
			return ErrTruncated
		}
		doff := int(l4[12]>>4) * 4
		if doff < tcpHeaderLen {
			return ErrHeader
		}
		if doff > len(l4) {
			return ErrTruncated
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.Seq = binary.BigEndian.Uint32(l4[4:8])
		p.Ack = binary.BigEndian.Uint32(l4[8:12])
		p.TCPFlags = TCPFlags(l4[13])
		p.Payload = len(l4) - doff
	case policy.ProtoUDP:
		if len(l4) < udpHeaderLen {
			return ErrTruncated
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.Payload = len(l4) - udpHeaderLen
	case policy.ProtoICMP, policy.ProtoICMP6:
		if (p.Proto == policy.ProtoICMP) != (p.Version == 4) {
			return nil // ICMP in IPv6 or ICMPv6 in IPv4: an opaque protocol
		}
		if len(l4) < icmpHeaderLen {
			return ErrTruncated
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		echoReq, echoRep := uint8(ICMPv4Echo), uint8(ICMPv4EchoReply)
		if p.Version == 6 {
			echoReq, echoRep = ICMPv6EchoRequest, ICMPv6EchoReply
		}
		switch p.ICMPType {
		case echoReq:
			p.ICMPID = binary.BigEndian.Uint16(l4[4:6])
			p.SrcPort = p.ICMPID
		case echoRep:
			p.ICMPID = binary.BigEndian.Uint16(l4[4:6])
			p.DstPort = p.ICMPID
		default:
			if p.IsICMPError() && p.Frag == FragNone {
				p.Inner, p.HasInner = parseQuoted(l4[icmpHeaderLen:], p.Version)
			}
			if p.IsPacketTooBig() {
				if p.Version == 4 {
					p.MTU = uint32(binary.BigEndian.Uint16(l4[6:8]))
				} else {
					p.MTU = binary.BigEndian.Uint32(l4[4:8])
				}
			}
		}
		p.Payload = len(l4) - icmpHeaderLen
	}
	return nil
}

// parseQuoted reads the tuple of the packet quoted in an ICMP error: its IP
// header and at least the first 8 bytes of its transport header (RFC 792,
// RFC 4443). The quote is usually cut short, so declared lengths are not
// checked against it.
func parseQuoted(b []byte, version uint8) (Tuple, bool) {
	var (
		t   Tuple
		l4  []byte
		off int
	)
	switch version {
	case 4:
		if len(b) < ipv4HeaderLen || b[0]>>4 != 4 {
			return t, false
		}
		off = int(b[0]&0x0f) * 4
		if off < ipv4HeaderLen || off > len(b) {
			return t, false
		}
		if binary.BigEndian.Uint16(b[6:8])&ipv4FragOffsetMask != 0 {
			return t, false
		}
		t.Proto = policy.Proto(b[9])
		t.Src = netip.AddrFrom4([4]byte(b[12:16]))
		t.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		if len(b) < ipv6HeaderLen || b[0]>>4 != 6 {
			return t, false
		}
		w, err := walkIPv6(b, b[6])
		if err != nil || w.frag == FragLater {
			return t, false
		}
		off = w.off
		t.Proto = policy.Proto(w.next)
		t.Src = netip.AddrFrom16([16]byte(b[8:24]))
		t.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return t, false
	}
	l4 = b[off:]
	switch t.Proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		if len(l4) < 4 {
			return t, false
		}
		t.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		t.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case policy.ProtoICMP, policy.ProtoICMP6:
		if len(l4) < icmpHeaderLen {
			return t, false
		}
		switch typ := l4[0]; {
		case typ == ICMPv4Echo && version == 4, typ == ICMPv6EchoRequest && version == 6:
			t.SrcPort = binary.BigEndian.Uint16(l4[4:6])
		case typ == ICMPv4EchoReply && version == 4, typ == ICMPv6EchoReply && version == 6:
			t.DstPort = binary.BigEndian.Uint16(l4[4:6])
		}
	}
	return t, true
}
