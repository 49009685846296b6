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
// segment moves to the first gateway of its order that is neither dead
// nor down (else the first not dead, else the first). It moves back to the
// first of its order only when the device has been idle for ReturnAfter
// (no open connection to cut), so a flapping gateway does not bounce
// clients. Connections through a dead gateway end: the application sees
// a timeout or reset and its next connection takes the new gateway.

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
	ReturnAfter     = 30 * time.Second // idle this long: back to the first of the order
	probeTimeout    = DeadAfter
	minUnanswered   = 3 // probes out without an answer before a gateway can be dead
	probeName       = "probe.cordon.invalid."
	maxProbeRound   = 64 // gateways probed per round at most
)

// gwHealth is one gateway's liveness as this client sees it.
type gwHealth struct {
	firstOut   time.Time // when the oldest probe not answered was sent
	lastOK     time.Time // last answer
	unanswered int       // probes sent since the last answer (or pause), in flight too
	dead       bool
}

// failover holds the client's view of its gateways and each segment's
// current gateway. Safe for concurrent use.
type failover struct {
	mu      sync.Mutex
	health  map[string]*gwHealth // by gateway ID
	current map[string]string    // segment → gateway ID in use
	active  *activityTUN         // nil: always active
}

func newFailover(active *activityTUN) *failover {
	return &failover{health: map[string]*gwHealth{}, current: map[string]string{}, active: active}
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
	down := func(id string) bool {
		i := slices.IndexFunc(m.Gateways, func(g controlproto.ClientGateway) bool { return g.GatewayID == id })
		return i < 0 || m.Gateways[i].Down
	}
	dead := func(id string) bool { h := f.health[id]; return h != nil && h.dead }
	usable := func(id string) bool { return !dead(id) && !down(id) }
	cur, ok := f.current[sg.Name]
	choice := ""
	switch {
	case ok && slices.Contains(sg.Gateways, cur) && usable(cur) &&
		(cur == sg.Gateways[0] || !f.idle(now, ReturnAfter) || !usable(sg.Gateways[0])):
		choice = cur // sticky: moving would cut its connections
	default:
		for _, test := range []func(string) bool{usable, func(id string) bool { return !dead(id) }} {
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

// activityTUN is the tun device as WireGuard reads it, noting when the
// host last sent an app packet (to an address outside the overlay range:
// probes and DNS to the gateways do not count).
type activityTUN struct {
	tun.Device
	at atomic.Int64 // unix nanoseconds of the last app packet
}

var _ tun.Device = (*activityTUN)(nil)

func (a *activityTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := a.Device.Read(bufs, sizes, offset)
	for i := range n {
		if appPacket(bufs[i][offset : offset+sizes[i]]) {
			a.at.Store(time.Now().UnixNano())
			break
		}
	}
	return n, err
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
