package flow

import (
	"sync"

	"github.com/cordonhq/cordon/pkg/packet"
)

// fragTable remembers the fragmented datagrams whose first fragment the
// authorizer admitted, so that their later fragments, which carry no
// transport header and so no ports, pass by the datagram's identity:
// (source, destination, protocol, IP identification), the key the
// receiver reassembles by (RFC 791, RFC 8200).
//
// It holds at most max datagrams in a ring, oldest first: a new one takes
// the oldest one's slot, so memory never grows with the traffic, whatever a
// client sends (a fragment flood only shortens how long each datagram is
// remembered; its later fragments, which follow their first within
// microseconds, still pass). A datagram is forgotten after ttl; nothing is
// buffered.
//
// One mutex guards it: only fragments take it, and they are rare (the
// overlay MTU keeps TCP from fragmenting); whole datagrams never touch it.
type fragTable struct {
	mu   sync.Mutex
	m    map[fragKey]int32 // datagram → its slot in ring
	ring []fragEntry
	next int // the slot the next new datagram takes
	ttl  int64
}

// fragKey identifies a fragmented datagram.
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint32 // protocol | keyIPv6, as in key
}

func fragKeyOf(p *packet.Packet) fragKey {
	k := fragKey{src: p.Src.As16(), dst: p.Dst.As16(), id: p.FragID, proto: uint32(p.Proto)}
	if p.Version == 6 {
		k.proto |= keyIPv6
	}
	return k
}

// fragEntry is one admitted datagram.
type fragEntry struct {
	key fragKey
	f   *flow // the flow its first fragment belongs to
	// fromClient: its first fragment came from the client (Write);
	// otherwise from the app (Read).
	fromClient bool
	// firstEnd is how many bytes of the fragmentable part the first
	// fragment carried: its transport header lies below it, and no later
	// fragment may start there.
	firstEnd uint16
	expires  int64 // on the coarse clock; 0: an empty slot
}

func newFragTable(max int, ttl int64) *fragTable {
	return &fragTable{m: make(map[fragKey]int32, max), ring: make([]fragEntry, max), ttl: ttl}
}

// add remembers the datagram of p, an admitted first fragment of flow f,
// and reports whether a datagram still within its ttl had to be forgotten
// to make room. A first fragment seen again (a retransmission, or an
// identification reused) takes over the datagram's entry; the overlap limit
// only grows, so a shorter copy cannot open the header to a later fragment.
func (t *fragTable) add(p *packet.Packet, f *flow, fromClient bool, now int64) (evicted bool) {
	k := fragKeyOf(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.m[k]; ok {
		e := &t.ring[i]
		if e.expires < now {
			e.firstEnd = 0
		}
		e.f, e.fromClient = f, fromClient
		e.firstEnd = max(e.firstEnd, p.FragLen)
		e.expires = now + t.ttl
		return false
	}
	i := t.next
	t.next = (t.next + 1) % len(t.ring)
	e := &t.ring[i]
	if e.expires != 0 {
		delete(t.m, e.key)
		evicted = e.expires >= now
	}
	*e = fragEntry{key: k, f: f, fromClient: fromClient, firstEnd: p.FragLen, expires: now + t.ttl}
	t.m[k] = int32(i)
	return evicted
}

// Outcomes of fragTable.later.
const (
	fragPass    = iota // the fragment belongs to an admitted datagram
	fragUnknown        // no admitted first fragment (or it expired)
	fragOverlap        // it would overlap the first fragment's bytes
)

// later looks up the datagram of p, a later fragment that came from the
// client (fromClient) or the app, and returns its flow when it may pass.
func (t *fragTable) later(p *packet.Packet, fromClient bool, now int64) (*flow, int) {
	k := fragKeyOf(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.m[k]
	if !ok {
		return nil, fragUnknown
	}
	e := &t.ring[i]
	if e.expires < now || e.fromClient != fromClient {
		return nil, fragUnknown
	}
	if p.FragOffset < e.firstEnd {
		return nil, fragOverlap
	}
	return e.f, fragPass
}

// sweep forgets the datagrams expired at now, so that they keep no flow
// alive.
func (t *fragTable) sweep(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.ring {
		e := &t.ring[i]
		if e.expires != 0 && e.expires < now {
			delete(t.m, e.key)
			*e = fragEntry{}
		}
	}
}

// len counts the remembered datagrams (for tests).
func (t *fragTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
