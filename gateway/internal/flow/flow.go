// Package flow is the gateway's data-path flow authorizer: a [tun.Device]
// wrapped around the gateway's TUN device, between it and wireguard-go, that
// admits client flows by policy and lets only their return traffic back.
//
// Directions. wireguard-go Writes the packets clients sent (client → app)
// into the TUN and Reads packets from the TUN (app → client) to send them to
// clients. A client packet that belongs to no flow is a new flow: it passes
// only if the compiled policy allows it ([policy.Compiled.Decide]), and then
// enters the connection table, keyed by its 5-tuple. Later packets of the
// flow, both ways, cost one table lookup. A packet from the TUN passes only
// if it is the reverse of a flow in the table (or an ICMP error about one);
// nothing else reaches a client. Everything else is dropped and counted;
// the first packet of each denied flow produces a deny event, each new flow
// an allow event (its start record), and each flow leaving the table an
// end event with its packets and bytes each way, its duration and why it
// ended (closed, idle, cut, session-end). The counters cost the
// established path two loads and two stores on the flow: each direction
// has one writer, so no locked instruction.
//
// Protocols. TCP and UDP flows are keyed by ports; ICMP echo by its
// identifier (see [packet.Tuple]); other protocols with ports 0, decided by
// Decide with port 0 (only a rule for any protocol admits them). ICMP errors
// never open a flow: one quoting a packet of an open flow passes; any other
// is decided as an ordinary ICMP packet from a client and dropped from the
// TUN side.
//
// Fragments. A first fragment carries the transport header and is decided
// like a whole datagram, by its tuple; when it passes, its datagram
// (source, destination, protocol, IP identification) is remembered for
// Config.FragmentTimeout. A later fragment, which has no ports, passes only
// if the first fragment of its datagram passed in the same direction, the
// flow is still open, and it starts beyond the bytes the first fragment
// carried: an overlapping fragment could rewrite the transport header the
// policy decided on (RFC 1858, RFC 3128), so it is dropped and counted
// (Stats.FragmentsOverlapping), as is a later fragment of no admitted
// datagram (Stats.FragmentsDropped: out of order before its first, of a
// denied datagram, or expired). So every datagram an app or client can
// reassemble has a transport header the policy admitted. Both directions
// work the same way. Behind the authorizer the receiver reassembles: in
// tun mode the gateway host's conntrack (which refragments to the next
// hop's MTU), in userspace mode gVisor's netstack, within its own memory
// limits.
//
// Why not reassemble: reassembly buffers packets (memory an attacker can
// fill), copies every fragmented datagram once more and holds the first
// fragment back until the last arrives, and the receiver (the app host,
// the gateway kernel's own conntrack, the client) reassembles anyway.
// Tracking costs a whole datagram two predictable branches on a field
// Parse already sets (the established path stays one table lookup), a
// first fragment one insert into the datagram table and a later fragment
// two lookups (its datagram, then its flow, to see it is still open); it
// never holds or copies a packet (BenchmarkFragmentedDatagram). What it
// gives up: a later fragment that overtakes its first is dropped, and its
// datagram lost; senders emit fragments in order and WireGuard keeps a
// peer's packets in order, so it takes a reordering network between the
// app and the gateway. The table of datagrams is a fixed ring
// of Config.MaxFragmentedDatagrams entries (see fragTable): a flood of
// first fragments pushes out the oldest (Stats.FragmentDatagramsEvicted,
// logged) instead of growing memory.
//
// Path MTU. ICMP "fragmentation needed" and ICMPv6 "packet too big"
// quoting a packet of an open flow pass like any ICMP error about the flow
// (the senders' path MTU discovery needs them); they are counted per
// direction (Stats.PacketTooBigToClients, Stats.PacketTooBigToApps) and
// logged, rate-limited, with the MTU they report, so a path that is
// narrower than the overlay shows instead of stalling silently. The host
// firewall clamps TCP MSS to the route MTU (package hostfw), so TCP rarely
// needs them.
//
// Policy changes. [Authorizer.SetPolicy] swaps the compiled policy
// atomically, keeps the connection table and re-checks every flow against
// the new policy. Flows it no longer allows are cut: removed, a FlowCut
// event is emitted and, for TCP, a reset is sent to both ends (toward the
// app written into the TUN, toward the client injected into the Read path).
// A cut UDP or ICMP flow is only removed; its next packet is a new flow and
// is denied.
//
// Time. Rule conditions (time windows, MFA age, source networks) are
// evaluated against the session each policy peer carries, at the
// coarse wall clock. [Authorizer.Recheck] re-checks open flows the same
// way at the current time, cutting those a condition no longer admits
// (a window that closed); the gateway calls it periodically.
//
// TCP state machine (per flow; a packet that fits no transition passes and
// refreshes the idle timer):
//
//	             client packet allowed by policy (a SYN, or any other
//	             segment: mid-stream pick-up after a gateway restart)
//	[no flow] ------------------------------------------------> HALF-OPEN
//	    ^                                                      (idle 30 s)
//	    |                                                          |
//	    |                                                          | any packet from the app
//	    |  RST from either side (from any state)                   v
//	    +<------------------------------------------------- ESTABLISHED
//	    |                                                     (idle 5 min)
//	    |  idle timeout, janitor (from any state)                  |
//	    +<-------------------------------------------              | FIN from one side
//	    |                                                          v
//	    |                                                       CLOSING
//	    |                                                     (idle 5 min)
//	    |                                                          |
//	    |  linger over, or a client SYN reusing the tuple          | FIN from the other side
//	    +<------------------------------------------------------ CLOSED
//	                                                          (linger 10 s: the
//	                                                           last ACKs pass)
//
// A SetPolicy that no longer allows the flow moves it from any state to [no
// flow], sending resets unless it was already CLOSED. UDP, ICMP and other
// protocols have one state and an idle timeout (60 s, 30 s, 60 s).
//
// Goroutines. An Authorizer owns two: the janitor, which expires idle flows,
// and the reader, which reads the wrapped device so that Read can also
// deliver injected resets while the device is idle (a Read blocked in the
// device could not). Close stops and waits for both. Read therefore copies
// each packet once, from the reader's buffers into the caller's.
package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Log attribute keys.
const (
	logKeyErr           = "err"
	logKeyEventsDropped = "events_dropped"
	logKeySuppressed    = "suppressed"
	logKeyCut           = "flows_cut"
	logKeyFlowsOpen     = "flows_open"
	logKeyResetsDropped = "resets_dropped"
	logKeyMTU           = "mtu"
	logKeyFrom          = "from"
	logKeyFlowSrc       = "flow_src"
	logKeyFlowDst       = "flow_dst"
	logKeyProto         = "proto"
	logKeyEvicted       = "datagrams_evicted"
	logKeyOverlapping   = "fragments_overlapping"
)

// Timeouts are the idle limits of flows in the connection table. A zero
// field takes its default.
type Timeouts struct {
	TCPEstablished time.Duration // default 5 min
	TCPHalfOpen    time.Duration // no answer from the app yet; default 30 s
	TCPClosed      time.Duration // after FIN both ways; default 10 s
	UDP            time.Duration // default 60 s
	ICMP           time.Duration // default 30 s
	Other          time.Duration // other protocols; default 60 s
}

func (t *Timeouts) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.TCPEstablished, 5*time.Minute)
	def(&t.TCPHalfOpen, 30*time.Second)
	def(&t.TCPClosed, 10*time.Second)
	def(&t.UDP, 60*time.Second)
	def(&t.ICMP, 30*time.Second)
	def(&t.Other, 60*time.Second)
}

// Config configures an Authorizer. The zero value is usable: it denies
// everything until SetPolicy and emits no events.
type Config struct {
	// Policy is the initial policy; nil denies everything.
	Policy *policy.Compiled

	// Events receives flow events. Sends never block: when the channel is
	// full the event is dropped and counted (Stats.EventsDropped), so give
	// it a buffer and drain it. The Authorizer never closes it; do not
	// close it before Close returns. Nil disables events.
	Events chan<- controlproto.FlowEvent

	// Logger receives rate-limited warnings. Nil discards them.
	Logger *slog.Logger

	Timeouts Timeouts

	// JanitorInterval is how often idle flows are expired; default 5 s.
	JanitorInterval time.Duration

	// DenyEventsPerSecond and DenyEventBurst rate-limit deny events
	// (defaults 100 and 200); the rest are counted in
	// Stats.DenyEventsSuppressed.
	DenyEventsPerSecond float64
	DenyEventBurst      int

	// DenyCacheSize bounds the denied flows remembered to emit one event
	// per flow (default 4096); DenyCacheTTL is how long one is remembered
	// (default 60 s).
	DenyCacheSize int
	DenyCacheTTL  time.Duration

	// LocalServices are the gateway's own services on its overlay
	// address (the split-horizon DNS server) that every device the policy
	// knows may reach, whatever its rules. Unknown sources stay denied.
	LocalServices []LocalService

	// FragmentTimeout is how long the datagram of an admitted first
	// fragment is remembered for its later fragments (default 10 s);
	// MaxFragmentedDatagrams bounds how many are remembered at once
	// (default 4096, about 0.5 MB): the oldest make room for new ones.
	FragmentTimeout        time.Duration
	MaxFragmentedDatagrams int

	// Now is the clock, for tests; default time.Now. Its readings must
	// carry a monotonic component (as time.Now's do).
	Now func() time.Time

	// Admit, if set, is asked about every new flow the policy allows
	// (not those to LocalServices), with the app its rule is for; false
	// refuses the flow, recorded as a deny with reason ReasonAuditSpoolFull
	// and counted in Stats.FlowsRefused. The gateway refuses new flows
	// this way while its audit spool is full (fail closed). It must not
	// block; it is not called for packets of open flows.
	Admit func(app string) bool

	// ObserveDecision, if set, is told how long the policy took to decide
	// a sample of new flows (those whose source port is a multiple of
	// DecisionSample; ports are spread enough for an unbiased sample), for
	// a metric. It must not block. Packets of open flows are never timed.
	ObserveDecision func(time.Duration)
}

// DecisionSample: one new flow in this many (by source port) has its
// decision timed for Config.ObserveDecision, so timing costs the new-flow
// path next to nothing.
const DecisionSample = 16

// ReasonAuditSpoolFull is the deny reason of a flow refused by
// Config.Admit: the gateway could not have recorded it.
const ReasonAuditSpoolFull = "audit-spool-full"

// LocalService is a service of the gateway itself. Allowed flows to it are
// not reported as flow events (a DNS lookup is not an app access); they
// carry rule "local:<Name>" and app "gateway" where they show.
type LocalService struct {
	Name  string
	Addr  netip.Addr
	Proto policy.Proto
	Port  uint16 // 0: any port (and ICMP)
}

// Stats are the Authorizer's counters.
type Stats struct {
	PacketsAllowed   uint64 // client → app packets passed
	PacketsDenied    uint64 // client → app packets dropped by policy
	PacketsReturned  uint64 // app → client packets passed (part of a flow)
	ReturnDropped    uint64 // app → client packets dropped (part of no flow)
	FragmentsDropped uint64 // IP fragments dropped, both directions (denied, or of no admitted datagram)
	// FragmentsPassed counts later fragments of admitted datagrams passed,
	// both directions (also counted in PacketsAllowed or PacketsReturned).
	FragmentsPassed uint64
	// FragmentsOverlapping counts later fragments dropped because they
	// overlap the first fragment's bytes (also in FragmentsDropped).
	FragmentsOverlapping uint64
	// FragmentDatagramsEvicted counts fragmented datagrams forgotten
	// before their timeout to make room for newer ones: a fragment flood,
	// or MaxFragmentedDatagrams too small.
	FragmentDatagramsEvicted uint64
	// PacketTooBigToClients and PacketTooBigToApps count the path MTU
	// signals (ICMP fragmentation needed, ICMPv6 packet too big) about
	// open flows passed toward clients (a hop toward an app, or the
	// gateway itself, found the client's packet too big) and toward apps.
	PacketTooBigToClients uint64
	PacketTooBigToApps    uint64
	Malformed             uint64 // unparseable packets dropped, both directions
	FlowsOpen             int64  // flows in the connection table
	FlowsOpened           uint64 // flows admitted since start
	FlowsCut              uint64 // flows cut by a policy change
	ResetsDropped         uint64 // TCP resets toward clients not delivered (queue full)
	EventsDropped         uint64 // flow events dropped because the queue was full
	FlowsEnded            uint64 // flows that left the table with an end record (closed, idle, cut)
	FlowsRefused          uint64 // new flows the policy allowed but Config.Admit refused
	// DenyEventsSuppressed counts denied flows whose deny event the rate
	// limit suppressed.
	DenyEventsSuppressed uint64
}

// counters are the shared counters. Write-side and Read-side ones sit on
// different cache lines: the two directions run on different cores.
type counters struct {
	allowed, denied, flowsOpened atomic.Uint64
	_                            [64]byte
	returned, returnDropped      atomic.Uint64
	_                            [64]byte
	fragments, malformed         atomic.Uint64
	fragPassed, fragOverlap      atomic.Uint64
	fragEvicted                  atomic.Uint64
	ptbToClients, ptbToApps      atomic.Uint64
	flowsCut, resetsDropped      atomic.Uint64
	eventsDropped, suppressed    atomic.Uint64
	flowsEnded, flowsRefused     atomic.Uint64
	flowsOpen                    atomic.Int64
}

// batchCounts accumulates one batch's counters so the shared atomics are
// touched once per batch, not per packet.
type batchCounts struct {
	allowed, denied, returned, returnDropped, fragments, malformed, fragPassed uint64
}

func (b *batchCounts) flush(c *counters) {
	add := func(a *atomic.Uint64, n uint64) {
		if n != 0 {
			a.Add(n)
		}
	}
	add(&c.allowed, b.allowed)
	add(&c.denied, b.denied)
	add(&c.returned, b.returned)
	add(&c.returnDropped, b.returnDropped)
	add(&c.fragments, b.fragments)
	add(&c.malformed, b.malformed)
	add(&c.fragPassed, b.fragPassed)
}

const (
	// rstOffset is the headroom in front of resets written to the
	// device: wireguard-go's own write offset, which Linux TUN devices
	// with offloads need for their virtio header.
	rstOffset = 16
	// readBufSize fits any IP packet a TUN device hands over.
	readBufSize = 65535
	// readBatches is how many batches the reader goroutine has in flight:
	// two, so it reads the next while Read copies out the last.
	readBatches = 2
	// injectQueue bounds resets waiting to be read toward clients.
	injectQueue = 1024
)

// Authorizer is a tun.Device that authorizes flows between clients
// (wireguard-go's side) and apps (the wrapped device's side). It is safe for
// concurrent use: wireguard-go calls Write from one goroutine per peer and
// Read from another.
type Authorizer struct {
	dev    tun.Device
	cfg    Config
	log    *slog.Logger
	events chan<- controlproto.FlowEvent
	now    func() time.Time
	epoch  time.Time    // mono() measures from here
	clock  atomic.Int64 // coarse monotonic clock, nanoseconds since epoch; see tick
	wall   atomic.Int64 // wall clock at the last tick, Unix nanoseconds: the time rule conditions see
	policy atomic.Pointer[policy.Compiled]
	setMu  sync.Mutex // serializes SetPolicy
	// polVersion is the version of the policy in force, for records; set
	// under setMu before the policy is swapped.
	polVersion atomic.Int64
	admit      func(app string) bool
	observe    func(time.Duration) // Config.ObserveDecision
	flows      *table
	frags      *fragTable
	denies     *denySet
	services   []policy.Rule // one synthetic rule per Config.LocalServices entry
	stats      counters
	inject     chan []byte
	scratch    sync.Pool // *writeScratch
	readMu     sync.Mutex
	pending    *readBatch // guarded by readMu: a batch Read has not finished
	pendAt     int        // guarded by readMu: next packet of pending
	outbound   chan *readBatch
	free       chan *readBatch
	pumpExit   chan struct{} // closed when the reader goroutine stops
	pumpErr    error         // the error that stopped it; set before pumpExit closes

	ctx       context.Context
	cancel    context.CancelCauseFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	logEventsDropped, logOversize, logResetWrite limiter
	logPMTU, logFragEvicted, logFragOverlap      limiter
}

var _ tun.Device = (*Authorizer)(nil)

// errClosed is the cause of the Authorizer's context after Close.
var errClosed = errors.New("flow authorizer closed")

// New wraps dev and starts the Authorizer's janitor and reader goroutines.
// The Authorizer owns dev from here on: Close closes it.
func New(dev tun.Device, cfg Config) (*Authorizer, error) {
	if dev == nil {
		return nil, errors.New("new flow authorizer: nil device")
	}
	batch := dev.BatchSize()
	if batch < 1 {
		return nil, fmt.Errorf("new flow authorizer: device batch size %d", batch)
	}
	cfg.Timeouts.setDefaults()
	if cfg.JanitorInterval <= 0 {
		cfg.JanitorInterval = 5 * time.Second
	}
	if cfg.DenyEventsPerSecond <= 0 {
		cfg.DenyEventsPerSecond = 100
	}
	if cfg.DenyEventBurst <= 0 {
		cfg.DenyEventBurst = 200
	}
	if cfg.DenyCacheSize <= 0 {
		cfg.DenyCacheSize = 4096
	}
	if cfg.DenyCacheTTL <= 0 {
		cfg.DenyCacheTTL = 60 * time.Second
	}
	if cfg.FragmentTimeout <= 0 {
		cfg.FragmentTimeout = 10 * time.Second
	}
	if cfg.MaxFragmentedDatagrams <= 0 {
		cfg.MaxFragmentedDatagrams = 4096
	}
	if cfg.MaxFragmentedDatagrams > 1<<20 {
		return nil, fmt.Errorf("new flow authorizer: MaxFragmentedDatagrams %d is above %d", cfg.MaxFragmentedDatagrams, 1<<20)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authorizer{
		dev:      dev,
		cfg:      cfg,
		log:      log,
		events:   cfg.Events,
		admit:    cfg.Admit,
		observe:  cfg.ObserveDecision,
		now:      cfg.Now,
		epoch:    cfg.Now(),
		denies:   newDenySet(cfg.DenyCacheSize, cfg.DenyCacheTTL, cfg.DenyEventsPerSecond, cfg.DenyEventBurst, rand.Uint64()),
		inject:   make(chan []byte, injectQueue),
		outbound: make(chan *readBatch),
		free:     make(chan *readBatch, readBatches),
		pumpExit: make(chan struct{}),
	}
	cfg.LocalServices = slices.Clone(cfg.LocalServices)
	for _, sv := range cfg.LocalServices {
		if !sv.Addr.IsValid() {
			return nil, fmt.Errorf("new flow authorizer: local service %q: invalid address", sv.Name)
		}
		a.services = append(a.services, policy.Rule{ID: policy.RuleID("local:" + sv.Name), App: "gateway", Proto: sv.Proto})
	}
	a.cfg = cfg
	a.flows = newTable(rand.Uint32(), &a.stats.flowsOpen)
	a.frags = newFragTable(cfg.MaxFragmentedDatagrams, int64(cfg.FragmentTimeout))
	a.scratch.New = func() any { return new(writeScratch) }
	pol := cfg.Policy
	if pol == nil {
		pol = policy.Empty
	}
	a.policy.Store(pol)
	a.tick()
	for range readBatches {
		b := &readBatch{bufs: make([][]byte, batch), sizes: make([]int, batch)}
		for i := range b.bufs {
			b.bufs[i] = make([]byte, readBufSize)
		}
		a.free <- b
	}
	a.ctx, a.cancel = context.WithCancelCause(context.Background())
	a.wg.Add(2)
	go a.janitor()
	go a.reader()
	return a, nil
}

// mono converts a clock reading to monotonic nanoseconds since New.
func (a *Authorizer) mono(t time.Time) int64 { return int64(t.Sub(a.epoch)) }

// tick advances the coarse clock. The data path reads the coarse clock (one
// atomic load) instead of the system clock, which costs as much as the rest
// of an established packet's path on some virtual machines; idle timers and
// the deny-event limits need no finer resolution than clockTick. Events,
// which carry a wall-clock time, read the system clock.
func (a *Authorizer) tick() {
	t := a.now()
	a.clock.Store(a.mono(t))
	a.wall.Store(t.UnixNano())
}

// wallNow is the coarse wall clock: the time rule conditions (time
// windows, MFA age) are evaluated at. It follows wall-clock steps (NTP)
// at the next tick, as the monotonic clock would not.
func (a *Authorizer) wallNow() time.Time { return time.Unix(0, a.wall.Load()) }

// clockTick is the coarse clock's resolution.
const clockTick = time.Second

// Policy returns the policy in force.
func (a *Authorizer) Policy() *policy.Compiled { return a.policy.Load() }

// Stats returns a snapshot of the counters.
func (a *Authorizer) Stats() Stats {
	c := &a.stats
	return Stats{
		PacketsAllowed:           c.allowed.Load(),
		PacketsDenied:            c.denied.Load(),
		PacketsReturned:          c.returned.Load(),
		ReturnDropped:            c.returnDropped.Load(),
		FragmentsDropped:         c.fragments.Load(),
		FragmentsPassed:          c.fragPassed.Load(),
		FragmentsOverlapping:     c.fragOverlap.Load(),
		PacketTooBigToClients:    c.ptbToClients.Load(),
		PacketTooBigToApps:       c.ptbToApps.Load(),
		FragmentDatagramsEvicted: c.fragEvicted.Load(),
		Malformed:                c.malformed.Load(),
		FlowsOpen:                c.flowsOpen.Load(),
		FlowsOpened:              c.flowsOpened.Load(),
		FlowsCut:                 c.flowsCut.Load(),
		ResetsDropped:            c.resetsDropped.Load(),
		EventsDropped:            c.eventsDropped.Load(),
		FlowsEnded:               c.flowsEnded.Load(),
		FlowsRefused:             c.flowsRefused.Load(),
		DenyEventsSuppressed:     c.suppressed.Load(),
	}
}

// File returns the wrapped device's file.
func (a *Authorizer) File() *os.File { return a.dev.File() }

// MTU returns the wrapped device's MTU.
func (a *Authorizer) MTU() (int, error) { return a.dev.MTU() }

// Name returns the wrapped device's name.
func (a *Authorizer) Name() (string, error) { return a.dev.Name() }

// Events returns the wrapped device's event channel.
func (a *Authorizer) Events() <-chan tun.Event { return a.dev.Events() }

// BatchSize returns the wrapped device's batch size.
func (a *Authorizer) BatchSize() int { return a.dev.BatchSize() }

// Close stops the janitor and reader goroutines, closes the wrapped device
// and waits for the goroutines to exit. It is idempotent: later calls return
// the first call's result.
func (a *Authorizer) Close() error {
	a.closeOnce.Do(func() {
		a.cancel(errClosed)
		a.closeErr = a.dev.Close() // unblocks the reader's Read
		a.wg.Wait()
	})
	return a.closeErr
}

// janitor advances the coarse clock and expires idle flows, until Close.
func (a *Authorizer) janitor() {
	defer a.wg.Done()
	t := time.NewTicker(min(clockTick, a.cfg.JanitorInterval))
	defer t.Stop()
	lastSweep := a.clock.Load()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.tick()
			if now := a.clock.Load(); now-lastSweep >= int64(a.cfg.JanitorInterval) {
				a.sweep(now)
				lastSweep = now
			}
		}
	}
}

// idleLimit is how long flow f in state st may stay idle.
func (a *Authorizer) idleLimit(proto policy.Proto, st uint32) time.Duration {
	t := &a.cfg.Timeouts
	switch proto {
	case policy.ProtoTCP:
		switch {
		case st&stClosed == stClosed:
			return t.TCPClosed
		case st&stReplied == 0:
			return t.TCPHalfOpen
		}
		return t.TCPEstablished
	case policy.ProtoUDP:
		return t.UDP
	case policy.ProtoICMP, policy.ProtoICMP6:
		return t.ICMP
	}
	return t.Other
}

// ActivityMark is a point on the authorizer's coarse clock, the clock
// packets are stamped with; see Activity.
type ActivityMark int64

// Activity returns, for every device with an open app flow whose client
// side sent a packet at or after mark, how long ago it last did, and the
// mark to pass next time (the zero mark: everything open). Marks and
// stamps come from the same coarse clock, so a packet stamped just after a
// report is never lost to the clock's lag; one stamped in the same tick as
// a report may be reported twice, which is harmless. Flows to the
// gateway's own services (DNS) are not activity. Cut or expired flows are
// gone from the table, so a device idle past every flow timeout is simply
// absent: absence means "no news", never "active".
func (a *Authorizer) Activity(mark ActivityMark) (map[string]time.Duration, ActivityMark) {
	now := a.clock.Load()
	out := map[string]time.Duration{}
	for i := range a.flows.shards {
		s := &a.flows.shards[i]
		s.mu.Lock()
		for _, f := range s.m {
			seen := f.clientSeen.Load()
			if f.meta.local || f.meta.device == "" || seen < int64(mark) {
				continue
			}
			idle := time.Duration(max(now-seen, 0))
			if cur, ok := out[f.meta.device]; !ok || idle < cur {
				out[f.meta.device] = idle
			}
		}
		s.mu.Unlock()
	}
	return out, ActivityMark(now)
}

// ReasonDeviceRemoved is the reason of a flow cut because its device is no
// longer in the gateway's map (session ended, device revoked, or no rule
// left for it here): the gateway cannot tell which; the controller's
// session.end or admin record next to it does.
const ReasonDeviceRemoved = "device-removed"

// sweep removes the flows idle past their limit at now. A TCP flow
// closed both ways ends "closed" (its linger is over), any other "idle".
func (a *Authorizer) sweep(now int64) {
	type gone struct {
		f    *flow
		meta flowMeta
	}
	var ends []gone
	var n int64
	for i := range a.flows.shards {
		s := &a.flows.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			if now-f.lastSeen.Load() > int64(a.idleLimit(f.key.Proto, f.state.Load())) {
				delete(s.m, k)
				n++
				if !f.meta.local && a.events != nil {
					ends = append(ends, gone{f, f.meta})
				}
			}
		}
		s.mu.Unlock()
	}
	if n > 0 {
		a.stats.flowsOpen.Add(-n)
	}
	for _, g := range ends {
		reason := controlproto.EndIdle
		if g.f.key.Proto == policy.ProtoTCP && g.f.state.Load()&stClosed == stClosed {
			reason = controlproto.EndClosed
		}
		a.ended(g.f, g.meta, now, reason, "")
	}
	a.frags.sweep(now)
}

// decide is the policy decision on a new flow with tuple k: the compiled
// policy's, or, for a device the policy knows, a local service's.
func (a *Authorizer) decide(pol *policy.Compiled, k *packet.Tuple) policy.Decision {
	d := pol.DecideAt(k.Src, k.Dst, k.Proto, decidePort(k), a.wallNow())
	if d.Verdict == policy.Allow || d.Peer == nil {
		return d
	}
	for i := range a.services {
		sv := &a.cfg.LocalServices[i]
		if sv.Addr == k.Dst && sv.Proto == k.Proto && (sv.Port == 0 || sv.Port == decidePort(k)) {
			return policy.Decision{Verdict: policy.Allow, Reason: policy.ReasonAllowed, Rule: &a.services[i], Peer: d.Peer}
		}
	}
	return d
}

// decidePort is the port a decision on tuple k uses: the destination port
// for TCP and UDP, 0 for everything else.
func decidePort(k *packet.Tuple) uint16 {
	if k.Proto == policy.ProtoTCP || k.Proto == policy.ProtoUDP {
		return k.DstPort
	}
	return 0
}

// SetPolicy replaces the policy atomically, keeps the connection table and
// re-checks every open flow: flows the new policy no longer allows are cut
// (see the package doc). Resets toward apps are written to the device
// before SetPolicy returns. A nil policy denies everything.
func (a *Authorizer) SetPolicy(pol *policy.Compiled) { a.SetPolicyVersion(pol, 0) }

// SetPolicyVersion is SetPolicy for a policy that has a version (the
// controller's policy version; 0: unknown), which flow records carry.
func (a *Authorizer) SetPolicyVersion(pol *policy.Compiled, version int64) {
	if pol == nil {
		pol = policy.Empty
	}
	a.setMu.Lock()
	defer a.setMu.Unlock()
	a.polVersion.Store(version)
	// Swap first, then scan: a flow inserted concurrently is either seen by
	// the scan or re-decided against the new policy by insert (which
	// re-reads the pointer under the shard lock).
	a.policy.Store(pol)
	a.recheck(pol, "policy change cut flows")
}

// Recheck re-decides every open flow under the current policy at the
// current time (the coarse clock, at most a clock tick old) and cuts those
// it no longer allows, exactly as SetPolicy does for a new policy: rule
// conditions that change with time (a time window that closed, an MFA
// that grew too old) then take effect on flows already open, not only on
// new ones. Call it periodically.
func (a *Authorizer) Recheck() {
	a.setMu.Lock()
	defer a.setMu.Unlock()
	pol := a.policy.Load()
	if !pol.Conditional() {
		return // no decision can have changed
	}
	a.recheck(pol, "policy recheck cut flows")
}

// recheck re-decides every open flow under pol, which is the current
// policy, and cuts those it denies. The caller holds setMu.
func (a *Authorizer) recheck(pol *policy.Compiled, logMsg string) {
	type cut struct {
		f      *flow
		meta   flowMeta
		reason string
	}
	var cuts []cut
	for i := range a.flows.shards {
		s := &a.flows.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			d := a.decide(pol, &f.key)
			if d.Verdict == policy.Allow {
				f.meta = metaOf(d)
				f.meta.local = a.isLocal(d.Rule)
				f.meta.policyVersion = a.polVersion.Load()
				continue
			}
			delete(s.m, k)
			why := d.Reason.String()
			if d.Peer == nil && f.meta.device != "" {
				// The device left the map: its session ended, it was
				// revoked, or it lost its last entitlement here.
				why = ReasonDeviceRemoved
			}
			cuts = append(cuts, cut{f: f, meta: f.meta, reason: why})
		}
		s.mu.Unlock()
	}
	if len(cuts) == 0 {
		return
	}
	a.stats.flowsOpen.Add(-int64(len(cuts)))
	a.stats.flowsCut.Add(uint64(len(cuts)))

	t := a.now()
	var toApp [][]byte
	for _, c := range cuts {
		if c.f.key.Proto == policy.ProtoTCP && c.f.state.Load()&stClosed != stClosed {
			app, client := a.resets(c.f)
			if app != nil {
				toApp = append(toApp, app)
			}
			if client != nil {
				select {
				case a.inject <- client:
				default:
					a.stats.resetsDropped.Add(1)
				}
			}
		}
		if !c.meta.local { // lookups are not audited as flows, nor is their end
			a.emit(flowEvent(t, controlproto.FlowCut, c.f.key, c.meta, c.reason))
			end := controlproto.EndCut
			if c.reason == ReasonDeviceRemoved {
				end = controlproto.EndSessionEnd
			}
			a.ended(c.f, c.meta, a.clock.Load(), end, c.reason)
		}
	}
	a.writeResets(toApp)
	a.log.Info(logMsg, logKeyCut, len(cuts), logKeyFlowsOpen, a.stats.flowsOpen.Load(),
		logKeyResetsDropped, a.stats.resetsDropped.Load())
}

// resets builds the two resets that cut TCP flow f: toward the app as if
// from the client, and toward the client as if from the app. Each carries
// the sequence number its receiver expects next (RFC 5961: an exact match
// resets, anything else only draws a challenge ACK).
func (a *Authorizer) resets(f *flow) (toApp, toClient []byte) {
	fwd := f.fwdNext.Load()
	replied := f.state.Load()&stReplied != 0
	rev := f.revNext.Load()
	client, app := f.key.SrcAddrPort(), f.key.DstAddrPort()

	buf := make([]byte, rstOffset, rstOffset+packet.RSTLen(!client.Addr().Is4()))
	toApp, err := packet.BuildTCPRST(buf, packet.TCPReset{Src: client, Dst: app, Seq: fwd, Ack: rev, AckValid: replied})
	if err != nil {
		toApp = nil // unreachable: the tuple came from a parsed packet
	}
	// Toward a client still in SYN-SENT the reset must acknowledge its SYN
	// (fwd = ISN+1) and its sequence number is ignored.
	toClient, err = packet.BuildTCPRST(nil, packet.TCPReset{Src: app, Dst: client, Seq: rev, Ack: fwd, AckValid: true})
	if err != nil {
		toClient = nil
	}
	return toApp, toClient
}

// writeResets writes resets (each with rstOffset bytes of headroom) to the
// device in batches of its batch size.
func (a *Authorizer) writeResets(pkts [][]byte) {
	batch := a.dev.BatchSize()
	for len(pkts) > 0 {
		n := min(batch, len(pkts))
		if _, err := a.dev.Write(pkts[:n], rstOffset); err != nil {
			if errors.Is(err, os.ErrClosed) || a.ctx.Err() != nil {
				return
			}
			if s, ok := a.logAllowed(&a.logResetWrite); ok {
				a.log.Warn("write reset toward app", logKeyErr, err, logKeySuppressed, s)
			}
		}
		pkts = pkts[n:]
	}
}
