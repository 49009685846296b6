// Package packettest builds IPv4 and IPv6 packets for tests of the data
// path: TCP segments, UDP datagrams, ICMP echo and ICMP errors, with valid
// checksums. Its checksum code is written independently of package packet so
// tests of one can check the other.
package packettest

import (
	"encoding/binary"
	"net/netip"

	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Checksum returns the RFC 1071 Internet checksum of the concatenation of
// parts, complemented (the value a header stores; 0 when verifying a
// correctly checksummed buffer that includes its checksum field).
func Checksum(parts ...[]byte) uint16 {
	// Byte-at-a-time over the concatenation so odd-length parts are
	// handled the way the RFC defines them (one stream of 16-bit words).
	var sum uint64
	i := 0
	for _, p := range parts {
		for _, c := range p {
			if i%2 == 0 {
				sum += uint64(c) << 8
			} else {
				sum += uint64(c)
			}
			i++
		}
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// PseudoHeader returns the TCP/UDP/ICMPv6 pseudo-header for a transport
// segment of length n.
func PseudoHeader(src, dst netip.Addr, proto policy.Proto, n int) []byte {
	if src.Is4() {
		b := make([]byte, 12)
		s, d := src.As4(), dst.As4()
		copy(b[0:], s[:])
		copy(b[4:], d[:])
		b[9] = byte(proto)
		binary.BigEndian.PutUint16(b[10:], uint16(n))
		return b
	}
	b := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint32(b[32:], uint32(n))
	b[39] = byte(proto)
	return b
}

// IP wraps a transport segment in an IPv4 or IPv6 header (by src's family)
// and fills in the transport checksum at csumOff (-1: none; ICMPv4 uses
// no pseudo-header).
func IP(src, dst netip.Addr, proto policy.Proto, l4 []byte, csumOff int) []byte {
	if csumOff >= 0 {
		binary.BigEndian.PutUint16(l4[csumOff:], 0)
		var c uint16
		if proto == policy.ProtoICMP {
			c = Checksum(l4)
		} else {
			c = Checksum(PseudoHeader(src, dst, proto, len(l4)), l4)
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
	}
	if src.Is4() {
		b := make([]byte, 20+len(l4))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[8] = 64
		b[9] = byte(proto)
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		binary.BigEndian.PutUint16(b[10:], Checksum(b[:20]))
		copy(b[20:], l4)
		return b
	}
	b := make([]byte, 40+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(l4)))
	b[6] = byte(proto)
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], l4)
	return b
}

// TCP builds a TCP segment from src to dst.
func TCP(src, dst netip.AddrPort, flags packet.TCPFlags, seq, ack uint32, payload []byte) []byte {
	l4 := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[12] = 5 << 4
	l4[13] = byte(flags)
	binary.BigEndian.PutUint16(l4[14:], 65535)
	copy(l4[20:], payload)
	return IP(src.Addr(), dst.Addr(), policy.ProtoTCP, l4, 16)
}

// UDP builds a UDP datagram from src to dst.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	l4 := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	copy(l4[8:], payload)
	return IP(src.Addr(), dst.Addr(), policy.ProtoUDP, l4, 6)
}

// ICMP builds an ICMP (IPv4) or ICMPv6 message with the given type and
// code; rest is the 4 bytes after the checksum followed by the body.
func ICMP(src, dst netip.Addr, typ, code uint8, rest []byte) []byte {
	l4 := make([]byte, 4+len(rest))
	l4[0], l4[1] = typ, code
	copy(l4[4:], rest)
	proto := policy.ProtoICMP
	if !src.Is4() {
		proto = policy.ProtoICMP6
	}
	return IP(src, dst, proto, l4, 2)
}

// Echo builds an ICMP echo request (reply false) or echo reply.
func Echo(src, dst netip.Addr, id, seq uint16, reply bool) []byte {
	var typ uint8
	switch {
	case src.Is4() && !reply:
		typ = packet.ICMPv4Echo
	case src.Is4() && reply:
		typ = packet.ICMPv4EchoReply
	case !reply:
		typ = packet.ICMPv6EchoRequest
	default:
		typ = packet.ICMPv6EchoReply
	}
	rest := make([]byte, 4+8)
	binary.BigEndian.PutUint16(rest[0:], id)
	binary.BigEndian.PutUint16(rest[2:], seq)
	copy(rest[4:], "cordon!!")
	return ICMP(src, dst, typ, 0, rest)
}

// Unreachable builds a destination-unreachable error from src to dst
// quoting (the start of) the packet orig.
func Unreachable(src, dst netip.Addr, orig []byte) []byte {
	q := orig
	typ, code := uint8(packet.ICMPv4Unreachable), uint8(3) // port unreachable
	if !src.Is4() {
		typ, code = packet.ICMPv6Unreachable, 4
	}
	if len(q) > 28 && src.Is4() {
		q = q[:28]
	}
	rest := make([]byte, 4+len(q))
	copy(rest[4:], q)
	return ICMP(src, dst, typ, code, rest)
}

// FragNeeded builds a path MTU signal from src to dst quoting the packet
// orig: an ICMP "fragmentation needed and DF set" with next-hop MTU mtu, or
// an ICMPv6 packet too big.
func FragNeeded(src, dst netip.Addr, mtu uint32, orig []byte) []byte {
	rest := make([]byte, 4+len(orig))
	typ, code := uint8(packet.ICMPv4Unreachable), uint8(packet.ICMPv4CodeFragNeeded)
	if src.Is4() {
		binary.BigEndian.PutUint16(rest[2:], uint16(mtu))
	} else {
		typ, code = packet.ICMPv6PacketTooBig, 0
		binary.BigEndian.PutUint32(rest[0:], mtu)
	}
	copy(rest[4:], orig)
	return ICMP(src, dst, typ, code, rest)
}

// Fragment splits the IP packet pkt (as IP, TCP, UDP or ICMP build it: no
// IPv4 options or IPv6 extension headers) into fragments of datagram id
// carrying at most size bytes of data each (rounded down to a multiple of
// 8). IPv4 fragments carry the low 16 bits of id.
func Fragment(pkt []byte, size int, id uint32) [][]byte {
	size &^= 7
	hlen := 20
	if pkt[0]>>4 == 6 {
		hlen = 40
	}
	data := pkt[hlen:]
	var out [][]byte
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		more := end < len(data)
		if hlen == 20 {
			f := make([]byte, 20+end-off)
			copy(f, pkt[:20])
			copy(f[20:], data[off:end])
			binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
			binary.BigEndian.PutUint16(f[4:], uint16(id))
			v := uint16(off / 8)
			if more {
				v |= 0x2000
			}
			binary.BigEndian.PutUint16(f[6:], v)
			binary.BigEndian.PutUint16(f[10:], 0)
			binary.BigEndian.PutUint16(f[10:], Checksum(f[:20]))
			out = append(out, f)
			continue
		}
		f := make([]byte, 48+end-off)
		copy(f, pkt[:40])
		binary.BigEndian.PutUint16(f[4:], uint16(8+end-off))
		f[6] = 44 // next header: fragment
		f[40] = pkt[6]
		v := uint16(off)
		if more {
			v |= 1
		}
		binary.BigEndian.PutUint16(f[42:], v)
		binary.BigEndian.PutUint32(f[44:], id)
		copy(f[48:], data[off:end])
		out = append(out, f)
	}
	return out
}
