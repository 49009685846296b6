package wgstream

import (
	"fmt"
	"maps"
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// Path watching (the client side). A client that can reach a gateway over
// UDP and over a stream must know whether UDP works, and it learns that
// from the packets themselves (at most three duplicates a second):
//
//   - on UDP, a WireGuard handshake initiation always gets a response from
//     a gateway that can hear us: initiations sent are the probes, and any
//     packet received from the gateway's UDP address is an answer;
//   - on the stream, the owner asks (PathStats.ProbeNext) for the next
//     probeCopies packets sent down the stream to go to the gateway's UDP
//     address as well. WireGuard takes whichever copy arrives first and
//     drops the other as a replay; when a UDP copy wins, the gateway roams
//     to UDP and its next packets (the replies to that one) arrive over
//     UDP: the answer. A copy wins about every other time, hence several.
//     (Sending a packet over UDP only would lose it to a block; sending a
//     keepalive there instead draws no reply, and the client's next packet
//     on the stream roams the gateway back before it sends anything.)
//
// The counters are read by the owner (the client's path selection), which
// decides; the bind only counts and copies.

// PathStats counts one watched UDP endpoint's traffic. Read the counters
// with Load; their changes between two reads are what happened meanwhile.
type PathStats struct {
	// Initiations is WireGuard handshake initiations sent to the UDP
	// endpoint.
	Initiations atomic.Uint64
	// Received is packets received from the UDP endpoint.
	Received atomic.Uint64
	// Probes is packets copied to the UDP endpoint from its stream (sent,
	// or tried).
	Probes atomic.Uint64

	probeNext atomic.Int32 // copies still to make
}

// probeCopies is how many packets one probe copies to UDP.
const probeCopies = 3

// ProbeNext asks for the next probeCopies packets sent down the watched
// stream to be copied to the UDP endpoint too.
func (p *PathStats) ProbeNext() { p.probeNext.Store(probeCopies) }

// watchSet is the watched endpoints; replaced whole, never changed.
type watchSet struct {
	byUDP    map[netip.AddrPort]*PathStats
	byStream map[string]*watched // by stream key ("tls://host:port")
}

type watched struct {
	udp   conn.Endpoint
	stats *PathStats
}

// Watch starts watching the UDP endpoint udp of a peer that may also be
// reached at stream ("tls://host:port"), and returns its counters (the
// same ones when it is watched already).
func (b *Bind) Watch(udp netip.AddrPort, stream string) (*PathStats, error) {
	udp = netip.AddrPortFrom(udp.Addr().Unmap(), udp.Port())
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.watch.Load()
	if old == nil {
		old = &watchSet{}
	}
	st := old.byUDP[udp]
	if w := old.byStream[stream]; st != nil && w != nil && w.stats == st {
		return st, nil
	}
	ep, err := b.inner.ParseEndpoint(udp.String())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", udp, err)
	}
	if st == nil {
		st = &PathStats{}
	}
	next := old.without(udp)
	next.byUDP[udp] = st
	next.byStream[stream] = &watched{udp: ep, stats: st}
	b.watch.Store(next)
	return st, nil
}

// without returns a copy of w without udp and its stream.
func (w *watchSet) without(udp netip.AddrPort) *watchSet {
	next := &watchSet{byUDP: maps.Clone(w.byUDP), byStream: map[string]*watched{}}
	if next.byUDP == nil {
		next.byUDP = map[netip.AddrPort]*PathStats{}
	}
	st := w.byUDP[udp]
	delete(next.byUDP, udp)
	for k, tw := range w.byStream {
		if tw.stats != st {
			next.byStream[k] = tw
		}
	}
	return next
}

// Unwatch stops watching udp.
func (b *Bind) Unwatch(udp netip.AddrPort) {
	udp = netip.AddrPortFrom(udp.Addr().Unmap(), udp.Port())
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := b.watch.Load(); old != nil && old.byUDP[udp] != nil {
		b.watch.Store(old.without(udp))
	}
}

// udpAddr is the address of a UDP endpoint of the wrapped bind (the
// standard bind's; others are not watched).
func udpAddr(ep conn.Endpoint) (netip.AddrPort, bool) {
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(se.Addr().Unmap(), se.Port()), true
}

// countReceived wraps a receive function of the wrapped bind to count the
// packets from watched endpoints.
func (b *Bind) countReceived(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(pkts, sizes, eps)
		if w := b.watch.Load(); w != nil && len(w.byUDP) > 0 {
			for i := range n {
				if a, ok := udpAddr(eps[i]); ok {
					if st := w.byUDP[a]; st != nil {
						st.Received.Add(1)
					}
				}
			}
		}
		return n, err
	}
}

// countSent counts the handshake initiations in bufs sent to a watched
// UDP endpoint.
func (b *Bind) countSent(bufs [][]byte, ep conn.Endpoint) {
	w := b.watch.Load()
	if w == nil || len(w.byUDP) == 0 {
		return
	}
	a, ok := udpAddr(ep)
	if !ok {
		return
	}
	st := w.byUDP[a]
	if st == nil {
		return
	}
	if n := initiations(bufs); n > 0 {
		st.Initiations.Add(n)
	}
}

// initiations counts the handshake initiations in bufs. An initiation is
// always 148 bytes, so the length rules out nearly every other packet
// without touching its bytes: those of a data batch were just written by
// wireguard-go's encryption workers on other cores, and reading each
// packet's first byte cost a cache miss a packet (1% of the client's CPU
// at 1 Gbit/s, docs/benchmarks.md).
func initiations(bufs [][]byte) uint64 {
	var n uint64
	for _, p := range bufs {
		if len(p) == fixedSize[msgInitiation] && p[0] == msgInitiation {
			n++
		}
	}
	return n
}

// probe copies the first of bufs to the UDP endpoint of stream endpoint
// ep while its owner's probe asks for copies. The copy goes first: UDP
// that works then has a head start in the race.
func (b *Bind) probe(bufs [][]byte, ep *Endpoint) {
	w := b.watch.Load()
	if w == nil || len(bufs) == 0 || !IsWireGuardMessage(bufs[0]) {
		return
	}
	tw := w.byStream[ep.key]
	if tw == nil || tw.stats.probeNext.Load() <= 0 || tw.stats.probeNext.Add(-1) < 0 {
		return
	}
	// Counted first: its answer may arrive before Send returns.
	tw.stats.Probes.Add(1)
	b.inner.Send(bufs[:1], tw.udp) // a failure is an unanswered probe
}
