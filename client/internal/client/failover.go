package client

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/client/internal/flowtrack"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Gateway failover. A map of capability 9 lists every gateway of each
// segment in this device's order (controlproto.ClientMap.Segments). The
// client peers with all of them, routes each segment through one (its
// current gateway), and moves the segment's routes and AllowedIPs to the
// next one when the current one dies, by itself: the controller may be
// unreachable too, and it notices a dead gateway only after its QUIC idle
// timeout anyway.
//
// Liveness is the client's own probe, not WireGuard's timers: a handshake
// is retried only after REKEY_TIMEOUT (5 s) and a session with a dead peer
// looks healthy for up to 15 s. While the device sends app traffic (any
// packet from the host to an address outside the overlay range, seen by
// activityTUN), it sends each gateway it uses a DNS query every ProbeEvery,
// and each other gateway of its map one every SpareProbeEvery (to know
// where it can go), through the tunnel to the gateway's overlay address, for a name in
// no zone ("probe.cordon.invalid."): the gateway's DNS server refuses it
// at once (no lookup, no audit record), and any answer proves the
// gateway, its WireGuard session and its data path alive. An idle device
// sends no probes (a clinic's idle workstations cost the gateways
// nothing); its first packet starts them.
//
// Each gateway, as this client sees it:
//
//	unknown ──answer──────────────────────────▶ alive
//	   │                                       │  ▲
//	   │ no answer for DeadAfter while probing  │  │ answer
//	   ▼                                       ▼  │
//	  dead ◀──── no answer for DeadAfter ────── alive
//
// A segment stays on its current gateway while that is not dead (and not
// marked down by the controller): moving live connections would cut them,
// since the other gateway has no state for them. When it dies, the
// segment moves to the first gateway of its order that is neither dead,
// down nor draining (else the first neither dead nor down, else the first
// not dead, else the first). Connections through a dead gateway end: the
// application sees a timeout or reset and its next connection takes the
// new gateway.
//
// A segment also moves, without cutting anything, at a quiet moment: when
// no connection into it is open (flowtrack, which sees every packet the
// host sends and receives through the tunnel). The move happens under
// activityTUN's gate, which holds back the host's next packet until
// WireGuard routes the segment to the new gateway, so a connection opened
// meanwhile starts on the new gateway, never on the old. It moves so
//
//   - off a gateway an admin drains (capability 14), to the first of its
//     order not draining, at the first quiet moment, and at the latest
//     DrainMoveBy after the client saw the drain (cutting what is still
//     open: the gateway drops its peers at controlproto.DrainGrace);
//   - to a gateway ahead of the current one in its order (one that joined
//     the segment, or came back from the dead or from a drain), once that
//     one has answered probes for JoinAfter, and for ReturnAfter if it
//     came back (a flapping gateway does not bounce clients), at a quiet
//     moment; or when the device has been idle for ReturnAfter.

// Failover timers. A gateway is dead once it answered none of at least
// minUnanswered probes, the oldest sent DeadAfter ago (a gateway in use:
// about 1 s after it died, noticed within a ProbeEvery; a spare, probed
// each second: 3 s).
// Probes run on their own, so a dead gateway's timeouts do not slow the
// next round. The goal is new connections through another gateway within
// 3 s of a gateway's death.
const (
	ProbeEvery      = 250 * time.Millisecond
	SpareProbeEvery = time.Second // gateways that carry no segment now
	DeadAfter       = time.Second
	ActiveWindow    = 5 * time.Second  // traffic this recent keeps probing on
	ReturnAfter     = 30 * time.Second // idle this long: back to the first of the order; a revived gateway is steady after answering this long
	// JoinAfter is how long a gateway must answer before devices move to
	// it when they need not (a new gateway's first WireGuard sessions
	// may still restart: its instance reaches the map after it).
	JoinAfter     = 10 * time.Second
	probeTimeout  = DeadAfter
	minUnanswered = 3 // probes out without an answer before a gateway can be dead
	// DrainMoveBy is how long a segment waits for a quiet moment on a
	// draining gateway before it moves anyway, cutting its open
	// connections: a little before the gateway drops its peers.
	DrainMoveBy   = controlproto.DrainGrace - 15*time.Second
	probeName     = "probe.cordon.invalid."
	maxProbeRound = 64 // gateways probed per round at most
)

// gwHealth is one gateway's liveness as this client sees it.
type gwHealth struct {
	firstOut   time.Time // when the oldest probe not answered was sent
	lastOK     time.Time // last answer
	unanswered int       // probes sent since the last answer (or pause), in flight too
	dead       bool
	revivedAt  time.Time // when it answered after being dead (having answered before)
	aliveSince time.Time // first answer since it was unknown or dead
}

// failover holds the client's view of its gateways and each segment's
// current gateway. Safe for concurrent use.
type failover struct {
	mu        sync.Mutex
	health    map[string]*gwHealth // by gateway ID
	current   map[string]string    // segment → gateway ID in use
	drainSeen map[string]time.Time // draining gateway ID → when this client first saw it draining
	active    *activityTUN         // nil: always active, never quiet
}

func newFailover(active *activityTUN) *failover {
	return &failover{health: map[string]*gwHealth{}, current: map[string]string{}, drainSeen: map[string]time.Time{}, active: active}
}

// quiet reports whether no connection into segment sg is open at now.
func (f *failover) quiet(sg controlproto.ClientSegment, now time.Time) bool {
	return f.active != nil && (f.active.flows == nil || f.active.flows.Open(now, sg.AllowedIPs) == 0)
}

// steadyLocked reports whether gateway id answers probes now (one of the
// last two spare rounds), has since JoinAfter, and since ReturnAfter if
// it died or was drained before.
func (f *failover) steadyLocked(id string, now time.Time) bool {
	h := f.health[id]
	return h != nil && !h.dead && !h.lastOK.IsZero() && now.Sub(h.lastOK) <= 2*SpareProbeEvery &&
		now.Sub(h.aliveSince) >= JoinAfter && (h.revivedAt.IsZero() || now.Sub(h.revivedAt) >= ReturnAfter)
}

// idle reports whether the device sent no app traffic for d.
func (f *failover) idle(now time.Time, d time.Duration) bool {
	return f.active != nil && now.Sub(f.active.last()) > d
}

// pick chooses segment sg's gateway in map m and records it as current.
func (f *failover) pick(m *controlproto.ClientMap, sg controlproto.ClientSegment, now time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pickLocked(m, sg, now)
}

func (f *failover) pickLocked(m *controlproto.ClientMap, sg controlproto.ClientSegment, now time.Time) string {
	gw := func(id string) *controlproto.ClientGateway {
		i := slices.IndexFunc(m.Gateways, func(g controlproto.ClientGateway) bool { return g.GatewayID == id })
		if i < 0 {
			return nil
		}
		return &m.Gateways[i]
	}
	down := func(id string) bool { g := gw(id); return g == nil || g.Down }
	draining := func(id string) bool { g := gw(id); return g != nil && g.Draining }
	dead := func(id string) bool { h := f.health[id]; return h != nil && h.dead }
	usable := func(id string) bool { return !dead(id) && !down(id) }
	preferred := func(id string) bool { return usable(id) && !draining(id) }
	for _, id := range sg.Gateways {
		_, was := f.drainSeen[id]
		switch {
		case draining(id) && !was:
			f.drainSeen[id] = now
		case !draining(id) && was:
			// Undrained: it let its peers go, so its devices come back
			// only once it answered for ReturnAfter, as after a death.
			delete(f.drainSeen, id)
			if h := f.health[id]; h != nil {
				h.revivedAt = now
			}
		}
	}
	target := ""
	if i := slices.IndexFunc(sg.Gateways, preferred); i >= 0 {
		target = sg.Gateways[i]
	}
	cur, ok := f.current[sg.Name]
	choice := ""
	switch {
	case ok && slices.Contains(sg.Gateways, cur) && usable(cur):
		choice = cur // sticky: moving would cut its connections
		if target == "" || target == cur {
			break
		}
		if draining(cur) {
			if f.quiet(sg, now) || now.Sub(f.drainSeen[cur]) >= DrainMoveBy {
				choice = target
			}
		} else if slices.Index(sg.Gateways, target) < slices.Index(sg.Gateways, cur) &&
			(f.idle(now, ReturnAfter) || f.steadyLocked(target, now) && f.quiet(sg, now)) {
			choice = target
		}
	default:
		for _, test := range []func(string) bool{preferred, usable, func(id string) bool { return !dead(id) }} {
			if i := slices.IndexFunc(sg.Gateways, test); i >= 0 {
				choice = sg.Gateways[i]
				break
			}
		}
		if choice == "" && len(sg.Gateways) > 0 {
			choice = sg.Gateways[0]
		}
	}
	f.current[sg.Name] = choice
	return choice
}

// wantsMove reports whether some segment of m would now be put on another
// gateway than its current one.
func (f *failover) wantsMove(m *controlproto.ClientMap, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	saved := make(map[string]string, len(f.current))
	for k, v := range f.current {
		saved[k] = v
	}
	defer func() { f.current = saved }()
	for _, sg := range m.Segments {
		was, ok := saved[sg.Name]
		if f.pickLocked(m, sg, now) != was || !ok {
			return true
		}
	}
	return false
}

// pause records that probing stopped (the device went idle): a gateway's
// silence counts again from when probes resume.
func (f *failover) pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.health {
		h.unanswered = 0
	}
}

// inUse reports whether gateway id carries a segment now.
func (f *failover) inUse(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.current {
		if g == id {
			return true
		}
	}
	return false
}

// sent records a probe sent to gateway id at now.
func (f *failover) sent(id string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.health[id]
	if h == nil {
		h = &gwHealth{}
		f.health[id] = h
	}
	if h.unanswered == 0 {
		h.firstOut = now
	}
	h.unanswered++
}

// answered records an answer from gateway id at now; it reports whether
// the gateway was dead until then.
func (f *failover) answered(id string, now time.Time) (revived bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.health[id]
	if h == nil {
		return false // forgotten meanwhile (prune)
	}
	if h.dead && !h.lastOK.IsZero() {
		h.revivedAt = now // it answered before it died: a flapping one waits ReturnAfter
	}
	if h.dead || h.lastOK.IsZero() {
		h.aliveSince = now
	}
	h.lastOK, h.unanswered = now, 0
	revived, h.dead = h.dead, false
	return revived
}

// check marks dead, and returns, the gateways being probed that answered
// none of at least minUnanswered probes, the oldest sent DeadAfter ago.
func (f *failover) check(now time.Time) (died []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, h := range f.health {
		if h.dead || h.unanswered < minUnanswered {
			continue
		}
		if now.Sub(h.firstOut) >= DeadAfter {
			h.dead = true
			died = append(died, id)
		}
	}
	slices.Sort(died)
	return died
}

// prune forgets gateways and segments no longer in m.
func (f *failover) prune(m *controlproto.ClientMap) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.health {
		if !slices.ContainsFunc(m.Gateways, func(g controlproto.ClientGateway) bool { return g.GatewayID == id }) {
			delete(f.health, id)
		}
	}
	for sg := range f.current {
		if !slices.ContainsFunc(m.Segments, func(s controlproto.ClientSegment) bool { return s.Name == sg }) {
			delete(f.current, sg)
		}
	}
	for id := range f.drainSeen { // an undrained one is pickLocked's to see
		if !slices.ContainsFunc(m.Gateways, func(g controlproto.ClientGateway) bool { return g.GatewayID == id }) {
			delete(f.drainSeen, id)
		}
	}
}

// forgetMoved drops from the flow table the connections into each segment
// of m that moved since before (its gateway then): the new gateway has no
// state for them, so they are cut, and their closing packets come back
// through the old gateway, where WireGuard drops them unseen. Without
// this a cut connection would count as open, and hold back the segment's
// next quiet move, until flowtrack.IdleTCP.
func (f *failover) forgetMoved(m *controlproto.ClientMap, before map[string]string) {
	if f.active == nil || f.active.flows == nil {
		return
	}
	now := f.Current()
	for _, sg := range m.Segments {
		if was, ok := before[sg.Name]; ok && was != now[sg.Name] {
			f.active.flows.Forget(sg.AllowedIPs)
		}
	}
}

// Current returns each segment's gateway in use, for status.
func (f *failover) Current() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.current))
	for k, v := range f.current {
		out[k] = v
	}
	return out
}

// probeDialer dials through the tunnel (*netstack.Stack, *net.Dialer).
type probeDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// probe asks gateway overlay address addr's DNS server a name in no zone
// and returns nil if any answer came back.
func probe(ctx context.Context, d probeDialer, addr netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	nc, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(addr, 53).String())
	if err != nil {
		return err
	}
	defer nc.Close()
	q := new(dns.Msg)
	q.SetQuestion(probeName, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: probeTimeout}
	_, _, err = c.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: nc})
	return err
}

// activityTUN is the tun device as WireGuard uses it, noting when the
// host last sent an app packet (to an address outside the overlay range:
// probes and DNS to the gateways do not count) and, in flows, the app
// connections open (what the host sends and receives). Holding gate holds
// back the host's packets on their way to WireGuard (see hold).
type activityTUN struct {
	tun.Device
	at    atomic.Int64       // unix nanoseconds of the last app packet
	flows *flowtrack.Tracker // nil: not tracked
	gate  sync.Mutex         // held while a packet read is noted, and while a segment moves
}

var _ tun.Device = (*activityTUN)(nil)

func (a *activityTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := a.Device.Read(bufs, sizes, offset)
	if n == 0 {
		return n, err
	}
	// A packet read before a move but noted after it would have been
	// routed by the old configuration unnoticed: the gate makes noting
	// and routing one step as a move sees it (hold).
	a.gate.Lock()
	defer a.gate.Unlock()
	now := time.Now()
	for i := range n {
		b := bufs[i][offset : offset+sizes[i]]
		if !appPacket(b) {
			continue
		}
		a.at.Store(now.UnixNano())
		if a.flows != nil {
			a.flows.Out(b, now)
		}
	}
	return n, err
}

func (a *activityTUN) Write(bufs [][]byte, offset int) (int, error) {
	if a.flows != nil {
		now := time.Now()
		for _, b := range bufs {
			a.flows.In(b[offset:], now)
		}
	}
	return a.Device.Write(bufs, offset)
}

// hold stops the host's packets from reaching WireGuard until the
// returned func is called: a segment that moves while no connection into
// it is open (quiet) cannot get one opened through the old gateway
// between the check and the new routing. Packets already noted were
// routed before the move.
func (a *activityTUN) hold() func() {
	if a == nil {
		return func() {}
	}
	a.gate.Lock()
	return a.gate.Unlock
}

func (a *activityTUN) last() time.Time { return time.Unix(0, a.at.Load()) }

// appPacket reports whether IP packet b goes to an app: anything but IPv4
// to the overlay range 100.64.0.0/10 (gateways' overlay addresses).
func appPacket(b []byte) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return len(b) > 0 && b[0]>>4 == 6
	}
	return !(b[16] == 100 && b[17]&0xc0 == 64)
}

// dead reports whether the prober holds gateway id for dead.
func (f *failover) dead(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.health[id]
	return h != nil && h.dead
}
