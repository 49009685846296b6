package packet

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/cordonhq/cordon/pkg/policy"
)

// TCPReset describes a TCP RST segment to synthesize, as the endpoint Src
// would send it to Dst.
type TCPReset struct {
	Src, Dst netip.AddrPort

	// Seq is the sequence number: the next sequence number Dst expects
	// from Src (RCV.NXT at Dst), so that a receiver that follows RFC 5961
	// accepts the reset instead of answering with a challenge ACK.
	Seq uint32

	// Ack, when AckValid, is sent with the ACK flag set: the next sequence
	// number Src expects from Dst. A reset toward an endpoint in SYN-SENT
	// must acknowledge its SYN (RFC 9293 3.10.7.3).
	Ack      uint32
	AckValid bool
}

// RSTLen returns the length of the reset BuildTCPRST builds for an address
// family: 40 bytes for IPv4, 60 for IPv6.
func RSTLen(is6 bool) int {
	if is6 {
		return ipv6HeaderLen + tcpHeaderLen
	}
	return ipv4HeaderLen + tcpHeaderLen
}

// BuildTCPRST appends to b a complete IPv4 or IPv6 packet carrying the TCP
// reset r, with valid IP and TCP checksums, and returns the extended slice.
// Src and Dst must be valid and of the same family (an IPv4-mapped IPv6
// address counts as IPv6).
func BuildTCPRST(b []byte, r TCPReset) ([]byte, error) {
	src, dst := r.Src.Addr(), r.Dst.Addr()
	if !src.IsValid() || !dst.IsValid() || src.Zone() != "" || dst.Zone() != "" {
		return b, ErrInvalidEndpoint
	}
	if src.Is4() != dst.Is4() {
		return b, ErrFamilyMismatch
	}
	is6 := !src.Is4()
	n := RSTLen(is6)
	start := len(b)
	b = slices.Grow(b, n)[:start+n]
	pkt := b[start:]
	clear(pkt)

	var tcp []byte
	if is6 {
		ip := pkt[:ipv6HeaderLen]
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:6], tcpHeaderLen)
		ip[6] = uint8(policy.ProtoTCP)
		ip[7] = defaultTTL
		s, d := src.As16(), dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		tcp = pkt[ipv6HeaderLen:]
	} else {
		ip := pkt[:ipv4HeaderLen]
		ip[0] = 4<<4 | ipv4HeaderLen/4
		binary.BigEndian.PutUint16(ip[2:4], uint16(n))
		ip[6] = ipv4FlagDontFragEnc
		ip[8] = defaultTTL
		ip[9] = uint8(policy.ProtoTCP)
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		binary.BigEndian.PutUint16(ip[10:12], ^checksum(ip, 0))
		tcp = pkt[ipv4HeaderLen:]
	}

	binary.BigEndian.PutUint16(tcp[0:2], r.Src.Port())
	binary.BigEndian.PutUint16(tcp[2:4], r.Dst.Port())
	binary.BigEndian.PutUint32(tcp[4:8], r.Seq)
	flags := TCPRst
	if r.AckValid {
		binary.BigEndian.PutUint32(tcp[8:12], r.Ack)
		flags |= TCPAck
	}
	tcp[12] = tcpHeaderLen / 4 << 4
	tcp[13] = uint8(flags)
	// Window 0, urgent pointer 0: a reset advertises nothing.
	sum := pseudoHeaderSum(src, dst, policy.ProtoTCP, len(tcp))
	binary.BigEndian.PutUint16(tcp[16:18], ^checksum(tcp, sum))
	return b, nil
}

// pseudoHeaderSum is the unfolded one's-complement sum of the TCP/UDP
// pseudo-header (RFC 9293 3.1, RFC 8200 8.1).
func pseudoHeaderSum(src, dst netip.Addr, proto policy.Proto, length int) uint32 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = sum16(s[:]) + sum16(d[:])
	} else {
		s, d := src.As16(), dst.As16()
		sum = sum16(s[:]) + sum16(d[:])
	}
	return sum + uint32(proto) + uint32(length)
}

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// checksum folds the one's-complement sum of b plus initial (RFC 1071) and
// returns it, not yet complemented. Callers store ^checksum(...).
func checksum(b []byte, initial uint32) uint16 {
	s := uint64(initial) + uint64(sum16(b))
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
