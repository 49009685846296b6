// Package flowtrack keeps the connections the host has open through the
// tunnel, from the packets it sends (Out) and receives (In), so that the
// client can tell when no connection into a segment is open: the moment
// it may move the segment to another gateway without cutting one (a
// drained gateway, capability 14). The other gateway has no state for a
// connection opened through the first, so moving an open one cuts it.
//
// A flow is opened only by the host: a TCP SYN it sends, or any UDP,
// ICMP or other packet it sends. Received packets only close or refresh
// flows the host opened, so what comes out of the tunnel cannot fill the
// table. Each flow, by its tuple as the host sends it:
//
//	host sends SYN (TCP) or any packet (other protocols)
//	            │
//	            ▼
//	          open ──── RST either way, or FIN both ways ───▶ gone
//	            │
//	            └── no packet for IdleTCP (TCP) or IdleOther ──▶ gone
//
// A TCP flow is open from its SYN, so a connection being set up counts. At
// most MaxFlows are kept; while the table is full and nothing in it has
// expired, Open reports the overflow as one open flow (a move waits
// rather than cut what it cannot see).
//
// Safe for concurrent use: Out and In run on the data path (one mutex,
// one map lookup per packet), Open on the client's gateway watcher.
package flowtrack

import (
	"net/netip"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Limits.
const (
	MaxFlows = 1 << 16
	// IdleTCP is how long a TCP flow with no packet either way is kept
	// (its application gone without FIN or RST, or a long-idle pooled
	// connection).
	IdleTCP = 10 * time.Minute
	// IdleOther is how long a UDP, ICMP or other flow counts as open after
	// its last packet.
	IdleOther = 5 * time.Second
)

type flow struct {
	last          int64 // unix nanoseconds of the last packet
	finOut, finIn bool
	tcp           bool
	dst           netip.Addr
}

// Tracker is the table of open flows.
type Tracker struct {
	mu       sync.Mutex
	flows    map[packet.Tuple]*flow
	overflow bool // a flow was not tracked since the table filled
}

// New returns an empty tracker.
func New() *Tracker { return &Tracker{flows: map[packet.Tuple]*flow{}} }

// Out notes packet b, which the host sends into the tunnel at now.
// Packets that do not parse are ignored.
func (t *Tracker) Out(b []byte, now time.Time) {
	p, err := packet.Parse(b)
	if err != nil || p.Frag == packet.FragLater {
		return
	}
	at := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[p.Tuple]
	if f == nil {
		tcp := p.Proto == policy.ProtoTCP
		if tcp && (!p.TCPFlags.Has(packet.TCPSyn) || p.TCPFlags.Has(packet.TCPAck)) {
			return // not a new connection: a late ACK or RST of one gone
		}
		if len(t.flows) >= MaxFlows && t.sweepLocked(at) == 0 {
			t.overflow = true
			return
		}
		f = &flow{tcp: tcp, dst: p.Dst}
		t.flows[p.Tuple] = f
	}
	f.last = at
	if f.tcp {
		t.tcpLocked(p.Tuple, f, p.TCPFlags, true)
	}
}

// In notes packet b, which the host receives from the tunnel at now: it
// refreshes or closes a flow the host opened, and nothing else.
func (t *Tracker) In(b []byte, now time.Time) {
	p, err := packet.Parse(b)
	if err != nil || p.Frag == packet.FragLater {
		return
	}
	key := p.Reverse()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[key]
	if f == nil {
		return
	}
	f.last = now.UnixNano()
	if f.tcp {
		t.tcpLocked(key, f, p.TCPFlags, false)
	}
}

func (t *Tracker) tcpLocked(key packet.Tuple, f *flow, flags packet.TCPFlags, out bool) {
	switch {
	case flags.Has(packet.TCPRst):
		delete(t.flows, key)
		return
	case flags.Has(packet.TCPFin) && out:
		f.finOut = true
	case flags.Has(packet.TCPFin):
		f.finIn = true
	}
	if f.finOut && f.finIn {
		delete(t.flows, key)
	}
}

// sweepLocked forgets the flows idle past their limit at now (unix
// nanoseconds) and returns how many it forgot.
func (t *Tracker) sweepLocked(now int64) int {
	n := 0
	for k, f := range t.flows {
		limit := IdleOther
		if f.tcp {
			limit = IdleTCP
		}
		if now-f.last > int64(limit) {
			delete(t.flows, k)
			n++
		}
	}
	if n > 0 {
		t.overflow = false
	}
	return n
}

// Open returns how many flows are open at now whose destination is in
// prefixes (an untracked flow past a full table counts as one).
func (t *Tracker) Open(now time.Time, prefixes []netip.Prefix) int {
	at := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(at)
	n := 0
	if t.overflow {
		n++
	}
	for _, f := range t.flows {
		for _, p := range prefixes {
			if p.Contains(f.dst) {
				n++
				break
			}
		}
	}
	return n
}

// Forget drops the flows whose destination is in prefixes: a segment
// moved to another gateway, which has no state for them, so they are cut
// (and their last packets, coming back through the old gateway, are
// dropped by WireGuard and never seen here).
func (t *Tracker) Forget(prefixes []netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, f := range t.flows {
		for _, p := range prefixes {
			if p.Contains(f.dst) {
				delete(t.flows, k)
				break
			}
		}
	}
}

// Len returns how many flows the table holds, for tests and metrics.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}
