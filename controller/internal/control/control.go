// Package control is the controller's side of the agent control channel:
// a QUIC listener with mutual TLS that identifies each gateway and client
// device by the certificate the controller issued, pushes each one its whole
// network map whenever it changes, and records the flow events gateways
// report.
//
// Changes are pushed, never polled for: whoever mutates the store calls
// [Server.Changed] with a [store.Change] naming what it changed. One
// recompute goroutine merges a burst of changes into one, reads one store
// snapshot, works out which agents the change reaches
// ([netmap.Affects]) and computes only their maps; it sends only the maps
// that differ from what that agent last received. An agent that connects
// costs its own map, computed from the index the last change left (no
// store read), unless the index does not know it yet or its connection
// itself changes other maps (a device's new public address, a gateway's
// new run): then it counts as a change of that device or gateway.
//
// Each agent has one writer goroutine and a latest-only pending map: a slow
// agent never blocks the others and skips the maps it was too slow for.
// The writer decides, when it sends, what goes on the wire:
//
//	whole map  on connect; to agents below capability 6; after the agent
//	           reported an error (its map is then not what we sent); when
//	           it asked to resync (Ack.Resync: a revision gap or a delta
//	           that did not fit; the current map is queued again at once);
//	           when the delta would not be smaller than the whole map
//	delta      otherwise: from the map last sent to this agent (not the
//	           last offered: with coalescing, some maps are never sent)
//
// Each frame is encoded once, when it is sent; deciding whether a map
// changed compares values (controlproto.EqualGatewayMaps) and encodes
// nothing.
package control

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// QUIC application error codes sent when the controller closes a connection.
const (
	codeNormal   quic.ApplicationErrorCode = 0
	codeRevoked  quic.ApplicationErrorCode = 1 // the agent no longer exists
	codeProtocol quic.ApplicationErrorCode = 2
	codeReplaced quic.ApplicationErrorCode = 3 // a newer connection of the same agent
)

// maxEventsPerFrame bounds one flow-event batch.
const maxEventsPerFrame = 10000

// Config configures a Server.
type Config struct {
	Store store.Store // for reads
	// State makes the changes agents report (gateway endpoints, posture)
	// and records their events; nil: one over Store.
	State      *state.State
	CA         *ca.CA
	ServerCert tls.Certificate
	Logger     *slog.Logger
	// DNS says which DNS zones are internal (sent to every agent).
	DNS netmap.DNSConfig
	// Sessions gates the maps on sessions and receives gateways' activity
	// reports. Nil only in tests of the map push itself: then every
	// enrolled device of an enabled user gets its entitlements.
	Sessions *session.Manager
	// PostureInterval is how often clients re-collect their posture
	// (ClientMap.PostureInterval); zero: DefaultPostureInterval.
	PostureInterval time.Duration
	// PostureSweep is how often the maps of devices whose posture report
	// went stale (a check's max_report_age passed) are computed again;
	// zero: DefaultPostureSweep.
	PostureSweep time.Duration
	// DriftCheck is how often the state the maps are computed from is
	// compared with the whole store (0: DefaultDriftCheck).
	DriftCheck time.Duration
	// ResetKey makes the stateless resets that tell agents of a previous
	// run of the controller that their connection is gone; it must stay
	// the same across restarts (server keeps it in the data directory).
	// Nil: no resets (agents notice at the idle timeout).
	ResetKey *quic.StatelessResetKey
	// GrantLifetime is how long a gateway cut off from the controller may
	// go on serving its last map (GatewayMap.GrantLifetime); zero:
	// controlproto.DefaultGrantLifetime.
	GrantLifetime time.Duration
	// Ledger is the audit log whose checkpoints gateways keep
	// (auditlog.go); nil: none sent.
	Ledger *ledger.Ledger
	// ClockSkewThreshold is how far a gateway's clock may be from the
	// controller's before an audit.clock.skew alert (flows.go); zero:
	// DefaultClockSkewThreshold.
	ClockSkewThreshold time.Duration
	// GatewayGrace is how long a gateway may be without a control
	// connection before clients' maps order it last (health.go); zero:
	// DefaultGatewayGrace.
	GatewayGrace time.Duration
	// Now is the clock of gateway health (health.go) and the one flow
	// records are received at (flows.go); nil: time.Now.
	Now func() time.Time
	// ObservePush, if set, is told how long each agent took to catch up
	// with its map: from the first map offered that it had not applied to
	// its ack of that map or a newer one (a metric; nil: not measured).
	ObservePush func(time.Duration)
}

// Server accepts agent connections and pushes maps.
type Server struct {
	cfg     Config
	log     *slog.Logger
	trigger chan struct{}
	acks    chan struct{} // signalled when any gateway acknowledges a map
	policy  netmap.PolicyCache
	stepUps stepUps
	// renewals rate-limits certificate renewals per agent (renew.go).
	renewals renewLimiter

	// pmu guards the work queued for the recompute goroutine: the merged
	// change not yet recomputed and the agents that connected since.
	pmu     sync.Mutex
	pending store.Change
	joined  []*agent
	// applying is set while the recompute goroutine holds a change it took
	// from pending and has not yet installed (the drift check must count
	// it as on its way, like pending).
	applying bool
	maps     *mapState // the recompute goroutine's alone

	mu     sync.Mutex
	agents map[string]*agent // by agent ID
	// public is the address each client device last connected from, kept
	// after it disconnects (a control-channel blip must not cut its
	// source-network flows); in memory only, pruned of deleted devices.
	public map[string]netip.Addr
	// instances is the run each gateway last said hello from (instance.go).
	instances map[string]controlproto.InstanceID
	// tcpEndpoints is where each gateway last said it accepts WireGuard
	// over TLS (instance.go); kept and pruned like instances.
	tcpEndpoints map[string]string
	// postureAt is when each device's latest posture report arrived: a
	// report that changes nothing a map shows is stored without a change,
	// so the snapshot the maps come from, patched only with what changes
	// name, holds an older receive time (posture.go, load).
	postureAt map[string]time.Time
	// seen is each gateway's last connect or disconnect, and started when
	// this server was made (health.go); down is the gateways the maps call
	// down, the recompute goroutine's alone.
	seen    map[string]*gatewaySeen
	started time.Time
	down    map[string]bool
	// views is how each connected gateway sees its cluster's members
	// (cluster.go); epoch is the gossip key epoch of the maps sent, the
	// recompute goroutine's alone.
	views map[string]map[string]string
	epoch uint64
	// clusterReady is set once the grace period after the start passed:
	// maps carry clusters from then on (cluster.go).
	clusterReady atomic.Bool

	drifts atomic.Int64 // drift checks that found a difference
	sent   sendStats    // every map frame written since start, all agents
	// generation counts the states maps were computed from (s.maps).
	generation atomic.Uint64

	gwHealth gatewayHealth // clock skew and spool alerts (flows.go)
	// sessionCounts is counted from the snapshot of each recompute, so a
	// scrape reads no sessions from the store.
	sessionCounts atomic.Pointer[SessionCounts]
}

// SessionCounts counts the devices' newest sessions by state, as of the
// last map recompute.
type SessionCounts struct{ Active, Ended int }

// Drifts returns how many drift checks found the maps' state differing
// from the store (checkDrift); anything but 0 is a defect.
func (s *Server) Drifts() int64 { return s.drifts.Load() }

// New returns a Server; call Serve to run it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSkewThreshold <= 0 {
		cfg.ClockSkewThreshold = DefaultClockSkewThreshold
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		trigger: make(chan struct{}, 1),
		acks:    make(chan struct{}, 1),
		agents:  map[string]*agent{},
		public:  map[string]netip.Addr{},

		instances:    map[string]controlproto.InstanceID{},
		tcpEndpoints: map[string]string{},
		seen:         map[string]*gatewaySeen{},
		down:         map[string]bool{},
		views:        map[string]map[string]string{},
	}
	s.started = s.now()
	if s.cfg.State == nil {
		// Tests: the agents' reports still reach this server's maps.
		s.cfg.State = state.New(state.Config{Store: cfg.Store, Logger: cfg.Logger, Publish: s.Changed})
	}
	return s
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// Changed tells the server that committed state affecting network maps
// changed, and what (store.Change{All: true} when the caller cannot say).
// It never blocks; bursts merge into one recompute. A zero change is
// ignored.
func (s *Server) Changed(c store.Change) {
	if c.IsZero() {
		return
	}
	s.pmu.Lock()
	s.pending.Merge(c)
	s.pmu.Unlock()
	s.kick()
}

// joinedAgent queues a newly connected agent's first map.
func (s *Server) joinedAgent(a *agent) {
	s.pmu.Lock()
	s.joined = append(s.joined, a)
	s.pmu.Unlock()
	s.kick()
}

func (s *Server) kick() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// takeWork returns and clears the queued change and connected agents.
func (s *Server) takeWork() (store.Change, []*agent) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	c, j := s.pending, s.joined
	s.pending, s.joined = store.Change{}, nil
	s.applying = !c.IsZero()
	return c, j
}

// changesOnTheirWay reports whether a change is queued or being applied.
func (s *Server) changesOnTheirWay() bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.applying || !s.pending.IsZero()
}

// TLSConfig returns the server TLS configuration: TLS 1.3, client
// certificates required and verified against the controller CA.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cfg.ServerCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    s.cfg.CA.Pool(),
		NextProtos:   []string{controlproto.ALPN},
		// Agents never resume (every connection proves the agent's
		// certificate anew, and is checked against the store): issuing
		// each a session ticket, which seals its certificate chain, was
		// work and memory for nothing.
		SessionTicketsDisabled: true,
	}
}

// QUICConfig is the controller's end of the control channel. Only the
// agents send keep-alives (ping frames every controlproto.KeepAlive,
// pkg/controlclient):
// they keep their NAT bindings open, and their pings keep the connection
// alive for both ends; the controller sending its own as well doubled an
// idle fleet's packets.
// A silent agent is dropped after MaxIdleTimeout. A controller that
// restarted answers an old connection's next packet with a stateless reset
// (Config.ResetKey), so agents reconnect at their next keep-alive instead
// of waiting out the idle timeout.
func QUICConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: controlproto.IdleTimeout}
}

// Serve accepts agents on pc until ctx is cancelled; it returns after every
// goroutine it started has stopped.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	tr := &quic.Transport{Conn: pc, StatelessResetKey: s.cfg.ResetKey}
	defer tr.Close()
	ln, err := tr.Listen(s.TLSConfig(), QUICConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped (pc closed) before the listener was up
		}
		return fmt.Errorf("listen for agents: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.recomputeLoop(ctx) })
	defer func() {
		ln.Close()
		wg.Wait()
	}()
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept agent: %w", err)
		}
		wg.Go(func() { s.handle(ctx, conn) })
	}
}

// agent is one connected agent. The recompute loop puts the newest map in
// pending; the agent's writer goroutine sends it (whole or as a delta), so
// a slow agent never blocks the others and only ever receives the latest
// map.
type agent struct {
	id, kind string
	conn     *quic.Conn
	public   netip.Addr // the remote address the agent connected from
	caps     int        // the agent's Hello.CapabilityVersion

	mu       sync.Mutex
	pending  *controlproto.Frame // newest map not yet sent, whole
	offered  *controlproto.Frame // newest map offered (pending or sent)
	revision uint64              // of the last map offered; lets agents and logs order maps
	peers    map[string]bool     // gateways: device IDs of the last map's peers
	// sent is the last map written to the agent, whole: what the next
	// delta starts from. sentDelta says it went as a delta.
	sent      *controlproto.Frame
	sentDelta bool
	// resync makes the next map go whole: the agent reported an error, so
	// the map it holds may not be sent.
	resync bool
	wake   chan struct{}
	acked  atomic.Uint64 // last map revision the agent applied
	// now is the server's clock; pushStart is when the oldest map the
	// agent has not acknowledged was offered (zero: it is caught up), for
	// Config.ObservePush. Guarded by mu.
	now       func() time.Time
	pushStart time.Time

	stats sendStats

	unexpected uint64 // frames dropped as out of place; readLoop only

	wmu sync.Mutex // serializes writes on the control stream (maps, replies)

	checkpoint agentCheckpoint // audit log checkpoints (auditlog.go)
	// notices are revocation notices for a gateway to gossip, sent before
	// its next map (cluster.go); guarded by mu.
	notices []*controlproto.Revocation
}

// sendStats counts what the writer sent one agent.
type sendStats struct {
	bytes  atomic.Uint64 // map and delta frames, length prefix included
	maps   atomic.Uint64 // whole maps sent
	deltas atomic.Uint64 // deltas sent
}

// SentStats is what the controller sent one agent on its current
// connection: map frames, whole and as deltas, and their bytes on the wire
// (length prefix included).
type SentStats struct {
	Bytes  uint64
	Maps   uint64
	Deltas uint64
}

// Sent returns, per connected agent, the map frames sent on its current
// connection: for the load harness's bytes per change.
func (s *Server) Sent() map[string]SentStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]SentStats, len(s.agents))
	for id, a := range s.agents {
		out[id] = a.stats.snapshot()
	}
	return out
}

func (st *sendStats) snapshot() SentStats {
	return SentStats{Bytes: st.bytes.Load(), Maps: st.maps.Load(), Deltas: st.deltas.Load()}
}

// offer queues f unless it equals the map last offered, and returns the
// revision it was given (0 when nothing changed). It encodes nothing.
func (a *agent) offer(f *controlproto.Frame) uint64 {
	a.mu.Lock()
	if a.offered != nil && sameMap(a.offered, f) {
		a.mu.Unlock()
		return 0
	}
	a.revision++
	rev := a.revision
	switch {
	case f.GatewayMap != nil:
		f.GatewayMap.Revision = rev
	case f.ClientMap != nil:
		f.ClientMap.Revision = rev
	}
	a.pending, a.offered = f, f
	if a.pushStart.IsZero() && a.now != nil {
		a.pushStart = a.now()
	}
	a.mu.Unlock()
	a.poke()
	return rev
}

// caughtUp notes the agent applied map rev and returns how long it took
// since the oldest map it had not applied was offered (false: rev is not
// the newest offered, or nothing was outstanding).
func (a *agent) caughtUp(rev uint64) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pushStart.IsZero() || rev != a.revision || a.now == nil {
		return 0, false
	}
	d := a.now().Sub(a.pushStart)
	a.pushStart = time.Time{}
	return d, true
}

// offeredGatewayMap is the gateway map last offered to a (nil if none);
// nobody may modify it.
func (a *agent) offeredGatewayMap() *controlproto.GatewayMap {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.offered == nil {
		return nil
	}
	return a.offered.GatewayMap
}

func (a *agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// sameMap reports whether two map frames carry the same map, revisions
// aside.
func sameMap(a, b *controlproto.Frame) bool {
	switch {
	case a.GatewayMap != nil && b.GatewayMap != nil:
		return controlproto.EqualGatewayMaps(a.GatewayMap, b.GatewayMap)
	case a.ClientMap != nil && b.ClientMap != nil:
		return controlproto.EqualClientMaps(a.ClientMap, b.ClientMap)
	}
	return false
}

// take returns the pending map, the map it may go as a delta from (nil:
// send it whole), and clears both pending and resync.
func (a *agent) take() (f, base *controlproto.Frame) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, a.pending = a.pending, nil
	if f != nil && !a.resync && a.caps >= controlproto.MinDeltaCapability {
		base = a.sent
	}
	if f != nil {
		a.resync = false
	}
	return f, base
}

// wire returns what goes on the wire for f: a delta from base when there
// is one and it is smaller, otherwise f itself.
func wire(f, base *controlproto.Frame, caps int) *controlproto.Frame {
	if base == nil {
		return f
	}
	switch {
	case f.GatewayMap != nil && base.GatewayMap != nil:
		d, err := controlproto.DiffGatewayMap(base.GatewayMap, f.GatewayMap)
		if err == nil && d.SmallerThan(f.GatewayMap) {
			return &controlproto.Frame{Type: controlproto.TypeGatewayDelta, GatewayDelta: d}
		}
	case f.ClientMap != nil && base.ClientMap != nil:
		d, err := controlproto.DiffClientMap(base.ClientMap, f.ClientMap, caps)
		if err == nil && d.SmallerThan(f.ClientMap) {
			return &controlproto.Frame{Type: controlproto.TypeClientDelta, ClientDelta: d}
		}
	}
	return f // a map with a duplicate key goes whole (the agent judges it)
}

// sentMap records that f goes out (as delta when delta).
func (a *agent) sentMap(f *controlproto.Frame, delta bool) {
	a.mu.Lock()
	a.sent, a.sentDelta = f, delta
	a.mu.Unlock()
}

// add counts one map frame of n bytes (a delta when delta).
func (st *sendStats) add(delta bool, n int) {
	st.bytes.Add(uint64(n))
	if delta {
		st.deltas.Add(1)
	} else {
		st.maps.Add(1)
	}
}

// nack handles an ack with an error: the agent kept an older map, so the
// next map goes whole; when it asked to resync the delta just sent, the
// newest map goes whole now.
func (a *agent) nack(ack *controlproto.Ack) {
	a.mu.Lock()
	a.resync = true
	requeue := ack.Resync && a.sentDelta && a.sent != nil && revisionOf(a.sent) == ack.Revision &&
		a.pending == nil && a.offered != nil
	if requeue {
		a.pending = a.offered
	}
	a.mu.Unlock()
	if requeue {
		a.poke()
	}
}

func revisionOf(f *controlproto.Frame) uint64 {
	switch {
	case f.GatewayMap != nil:
		return f.GatewayMap.Revision
	case f.ClientMap != nil:
		return f.ClientMap.Revision
	}
	return 0
}

func (s *Server) handle(ctx context.Context, conn *quic.Conn) {
	// Closing the listener leaves accepted connections open and stream
	// reads do not watch ctx: close the connection when Serve's context
	// ends, or Serve would wait for every agent to hang up. Agents
	// reconnect (codeNormal is not a revocation).
	stopClose := context.AfterFunc(ctx, func() { conn.CloseWithError(codeNormal, "controller shutting down") })
	defer stopClose()
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		conn.CloseWithError(codeProtocol, "no client certificate")
		return
	}
	id, kind, err := ca.AgentIdentity(certs[0])
	if err != nil {
		conn.CloseWithError(codeProtocol, err.Error())
		return
	}
	log := s.log.With("agent", id, "kind", kind, "remote", conn.RemoteAddr().String())
	if !s.exists(ctx, id, kind) {
		log.Warn("agent not enrolled (revoked or deleted); closing")
		conn.CloseWithError(codeRevoked, "this agent is no longer enrolled; enroll again")
		return
	}
	// A connection lives no longer than the certificate it was opened
	// with: the agent reconnects with its renewed one, or, if it could not
	// renew, is refused and told to sign in again.
	expire := time.AfterFunc(time.Until(certs[0].NotAfter), func() {
		log.Info("agent certificate expired; closing its connection (it reconnects with its renewed certificate)")
		conn.CloseWithError(codeNormal, "certificate expired: reconnect with the renewed certificate")
	})
	defer expire.Stop()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	stream, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		conn.CloseWithError(codeProtocol, "no control stream")
		return
	}
	hello, err := controlproto.ReadFrame(stream)
	if err != nil || hello.Type != controlproto.TypeHello || string(hello.Hello.Kind) != kind {
		log.Warn("bad hello", "err", err)
		conn.CloseWithError(codeProtocol, "first frame must be a hello of the certificate's kind")
		return
	}
	if v := hello.Hello.CapabilityVersion; v < 1 {
		log.Warn("agent speaks an unsupported capability version; refused", "capability_version", v)
		conn.CloseWithError(codeProtocol, fmt.Sprintf("capability version %d is not supported: this controller speaks 1 to %d; upgrade the agent", v, controlproto.CapabilityVersion))
		return
	}
	if kind == ca.KindGateway {
		// A new endpoint reaches its clients' maps through the state.
		s.updateEndpoint(ctx, log, id, hello.Hello.Endpoint)
	}

	a := &agent{now: s.cfg.Now, id: id, kind: kind, conn: conn, public: remoteAddr(conn.RemoteAddr()), caps: hello.Hello.CapabilityVersion,
		wake: make(chan struct{}, 1)}
	s.mu.Lock()
	if old := s.agents[id]; old != nil {
		old.conn.CloseWithError(codeReplaced, "replaced by a newer connection")
	}
	s.agents[id] = a
	if kind == ca.KindClient && a.public.IsValid() {
		s.public[id] = a.public
	}
	clusterChanged := false
	if kind == ca.KindGateway {
		s.noteInstanceLocked(log, id, hello.Hello.Instance)
		s.noteTCPEndpointLocked(log, id, hello.Hello.TCPEndpoint)
		s.noteGatewayLocked(id, hello.Hello.AgentVersion, s.now())
		clusterChanged = s.noteClusterLocked(id, hello.Hello.ClusterAddr, certs[0])
	}
	s.mu.Unlock()
	if clusterChanged {
		// The other gateways of its cluster list it (cluster.go).
		s.refreshGateways()
	}
	defer func() {
		s.mu.Lock()
		if s.agents[id] == a {
			delete(s.agents, id)
			delete(s.views, id)
			if kind == ca.KindGateway {
				s.noteGatewayLocked(id, "", s.now())
			}
		}
		s.mu.Unlock()
	}()
	log.Info("agent connected", "version", hello.Hello.AgentVersion, "capability_version", a.caps)
	s.joinedAgent(a)
	s.joinedCheckpoint(log, a, hello.Hello)

	cctx := conn.Context()
	var wg sync.WaitGroup
	wg.Go(func() { s.writeLoop(cctx, log, a, stream) })
	s.readLoop(ctx, log, a, stream)
	conn.CloseWithError(codeNormal, "")
	wg.Wait()
	st := a.stats.snapshot()
	log.Info("agent disconnected", "maps_sent", st.Maps, "deltas_sent", st.Deltas, "bytes_sent", st.Bytes)
}

// remoteAddr is the IP address of a connection's peer, unmapped (a
// dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d); invalid if
// unknown.
func remoteAddr(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) exists(ctx context.Context, id, kind string) bool {
	var err error
	switch kind {
	case ca.KindGateway:
		_, err = s.cfg.Store.GetGateway(ctx, id)
	case ca.KindClient:
		var d store.Device
		d, err = s.cfg.Store.GetDevice(ctx, id)
		if err == nil && !d.RevokedAt.IsZero() {
			return false
		}
	default:
		return false
	}
	return err == nil
}

// updateEndpoint stores the endpoint a gateway said hello with; it
// reports whether the stored one changed.
func (s *Server) updateEndpoint(ctx context.Context, log *slog.Logger, id, endpoint string) {
	if endpoint == "" {
		return
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		log.Warn("gateway sent an invalid endpoint; ignoring", "endpoint", endpoint)
		return
	}
	// The read pool first: a gateway reconnecting with its known endpoint
	// costs no write transaction.
	gw, err := s.cfg.Store.GetGateway(ctx, id)
	if err != nil || gw.Endpoint == endpoint {
		return
	}
	if err := s.cfg.State.SetGatewayEndpoint(ctx, id, endpoint); err != nil {
		log.Error("update gateway endpoint", "err", err)
	}
}

func (s *Server) writeLoop(ctx context.Context, log *slog.Logger, a *agent, w *quic.Stream) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		}
		if err := s.writeCheckpoint(ctx, log, a, w); err != nil {
			log.Warn("push audit log checkpoint", "err", err)
			a.conn.CloseWithError(codeProtocol, "write failed")
			return
		}
		if err := writeNotices(a, w); err != nil {
			log.Warn("push revocation notices", "err", err)
			a.conn.CloseWithError(codeProtocol, "write failed")
			return
		}
		f, base := a.take()
		if f == nil {
			continue
		}
		out := wire(f, base, a.caps)
		buf, err := controlproto.EncodeFrame(out) // the one encoding
		if err == nil {
			// Recorded before the write: the agent's ack of this map
			// can be read before Write returns, and nack must see it.
			a.sentMap(f, out != f)
			a.wmu.Lock()
			_, err = w.Write(buf)
			a.wmu.Unlock()
		}
		if err != nil {
			log.Warn("push map", "err", err)
			a.conn.CloseWithError(codeProtocol, "write failed")
			return
		}
		a.stats.add(out != f, len(buf))
		s.sent.add(out != f, len(buf))
	}
}

func (s *Server) readLoop(ctx context.Context, log *slog.Logger, a *agent, r *quic.Stream) {
	for {
		f, err := controlproto.ReadFrame(r)
		if err != nil {
			var appErr *quic.ApplicationError
			if !errors.As(err, &appErr) && ctx.Err() == nil {
				log.Debug("control stream ended", "err", err)
			}
			return
		}
		switch {
		case f.Type == controlproto.TypePing:
			// A keep-alive: its packet was what mattered.
		case f.Type == controlproto.TypeFlowEvents && a.kind == ca.KindGateway:
			s.recordFlows(ctx, log, a, r, f.FlowEvents)
		case f.Type == controlproto.TypeActivity && a.kind == ca.KindGateway:
			s.recordActivity(log, a, f.Activity)
		case f.Type == controlproto.TypePosture && a.kind == ca.KindClient:
			s.handlePosture(ctx, log, a, f.Posture)
		case f.Type == controlproto.TypeAuditAlert && a.kind == ca.KindGateway:
			s.auditAlert(ctx, log, a, f.AuditAlert)
		case f.Type == controlproto.TypeRenew:
			s.renew(ctx, log, a, r, f.Renew)
		case f.Type == controlproto.TypeAck:
			if f.Ack.Resync {
				// Not applied: the whole map follows, and its ack counts.
				log.Info("agent could not apply a map delta; sending the whole map", "revision", f.Ack.Revision, "reason", f.Ack.Error)
				a.nack(f.Ack)
				continue
			}
			if f.Ack.Error != "" {
				log.Error("agent rejected its map and kept the previous one", "revision", f.Ack.Revision, "error", f.Ack.Error)
				a.nack(f.Ack)
			}
			a.acked.Store(f.Ack.Revision)
			if f.Ack.Error == "" && s.cfg.ObservePush != nil {
				if d, ok := a.caughtUp(f.Ack.Revision); ok {
					s.cfg.ObservePush(d)
				}
			}
			select {
			case s.acks <- struct{}{}:
			default:
			}
		default:
			// Counted, and logged only now and then: a misbehaving agent
			// must not be able to flood the log.
			a.unexpected++
			if a.unexpected <= 3 || a.unexpected%1000 == 0 {
				log.Warn("unexpected control frame; dropped", "type", f.Type, "count", a.unexpected)
			}
		}
	}
}

// mapState is what the agents' maps were last computed from: an immutable
// index of one store snapshot and what goes with it. Maps computed later
// for agents no change reached come from the same state, so every agent's
// map is always the one this state gives (netmap.Affects). Only the
// recompute goroutine reads or replaces it.
type mapState struct {
	ix            *netmap.Index
	zones         []controlproto.DNSZone
	sessions      map[string]*session.Session
	activityEvery time.Duration
	instances     map[string]controlproto.InstanceID
	tcpEndpoints  map[string]string
}

// retryAfter is how long a failed recompute waits before it tries again
// (its change stays queued).
const retryAfter = time.Second

func (s *Server) recomputeLoop(ctx context.Context) {
	sweep := time.NewTicker(cmp.Or(s.cfg.PostureSweep, DefaultPostureSweep))
	defer sweep.Stop()
	drift := time.NewTicker(cmp.Or(s.cfg.DriftCheck, DefaultDriftCheck))
	defer drift.Stop()
	var checks sync.WaitGroup // drift checks, off this loop
	defer checks.Wait()
	var checking atomic.Bool // one at a time
	lastSweep := time.Now()
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-health.C:
			if s.maps != nil {
				s.checkHealth(s.maps.gatewayIDs(), s.now())
			}
			s.checkEpoch()
			continue
		case <-drift.C:
			if st := s.maps; st != nil && checking.CompareAndSwap(false, true) {
				gen := s.generation.Load()
				checks.Go(func() {
					defer checking.Store(false)
					s.checkDrift(ctx, st, gen)
				})
			}
			continue
		case <-s.trigger:
		case now := <-sweep.C:
			// Posture reports that went stale since the last sweep: only
			// their age changed, so no mutation names their devices.
			if s.maps != nil {
				if aged := s.maps.ix.PostureAged(lastSweep, now); len(aged) > 0 {
					s.Changed(store.Change{Devices: aged})
				}
			}
			lastSweep = now
			continue
		}
		c, joined := s.takeWork()
		err := s.recompute(ctx, c, joined)
		s.pmu.Lock()
		s.applying = false
		s.pmu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Error("recompute network maps; retrying", "err", err)
			// Put the work back: a change dropped here would leave the
			// maps it reaches stale until another change reached them.
			s.pmu.Lock()
			s.pending.Merge(c)
			s.joined = append(joined, s.joined...)
			s.pmu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryAfter):
			}
			s.kick()
		}
	}
}

// DefaultDriftCheck is how often the state maps are computed from is
// compared with the whole store (checkDrift): a full read and comparison,
// a fraction of a CPU-second at 10,000 devices, off the change path.
const DefaultDriftCheck = 5 * time.Minute

// driftGrace is how long a drift the check found must stay unexplained by
// a published change before it counts (checkDrift).
const driftGrace = 2 * time.Second

// DefaultPostureSweep bounds how long a device keeps access that a stale
// posture report no longer grants, beyond its max_report_age.
const DefaultPostureSweep = 30 * time.Second

// ackTimeout bounds how long client maps wait for gateways to apply theirs.
const ackTimeout = 2 * time.Second

// recompute applies change c (zero: none) and gives the agents that
// joined their first maps. With a change it reads one snapshot and pushes
// new maps to the agents the change reaches; agents that joined get theirs
// from the current state. It pushes in two phases: gateways first, then,
// once they acknowledged (or ackTimeout passed), clients. A device that
// gains access then finds its peer already configured at the gateway when
// it handshakes, and a device that loses access still has its route while
// the gateway's RSTs for its cut flows reach it.
func (s *Server) recompute(ctx context.Context, c store.Change, joined []*agent) error {
	start := time.Now()
	st := s.maps
	if st == nil {
		c.All = true // nothing computed yet
	}
	// An agent the state does not know yet (enrolled since), or whose
	// connection changes other agents' maps, is a change of its own.
	s.mu.Lock()
	for _, a := range joined {
		if st == nil || s.agents[a.id] != a {
			continue
		}
		if a.kind == ca.KindGateway {
			if _, ok := st.ix.Gateway(a.id); !ok || st.instances[a.id] != s.instances[a.id] || st.tcpEndpoints[a.id] != s.tcpEndpoints[a.id] {
				c.Merge(store.Change{Gateways: []string{a.id}})
			}
		} else if _, ok := st.ix.Device(a.id); !ok || st.ix.PublicAddrChanged(a.id, s.public[a.id]) {
			c.Merge(store.Change{Devices: []string{a.id}})
		}
	}
	s.mu.Unlock()

	var aff netmap.Affected
	var loadTook, gwTook time.Duration
	loaded := !c.IsZero()
	if loaded {
		next, err := s.load(ctx, c)
		loadTook = time.Since(start)
		if err != nil {
			return err
		}
		var old *netmap.Index
		if st != nil {
			old = st.ix
		}
		aff = netmap.Affects(old, next.ix, c, s.cfg.DNS)
		if err := next.ix.PolicyError(); err != nil && aff.All {
			s.log.Error("active policy does not parse: maps carry no rules until a policy is applied again", "err", err)
		}
		st, s.maps = next, next
		s.generation.Add(1)
	}

	gateways, clients := s.targets(aff, joined)
	defer func() {
		s.log.Debug("maps computed", "all", aff.All, "joined", len(joined), "snapshot", loaded,
			"gateways", len(gateways), "clients", len(clients), "took", time.Since(start),
			"load", loadTook, "gateway_maps", gwTook)
	}()
	gwStart := time.Now()
	waiting := map[*agent]uint64{}
	notices := map[string]*controlproto.Revocation{} // by device, this recompute's
	for _, a := range gateways {
		gw, ok := st.ix.Gateway(a.id)
		if !ok {
			a.conn.CloseWithError(codeRevoked, "gateway deleted")
			continue
		}
		// A change that reaches the gateway only through some devices
		// patches their peer entries into the map it was offered last
		// (computed from the previous state) instead of computing all
		// of its peers again.
		var gm *controlproto.GatewayMap
		stamp := func(controlproto.GatewayPeer) bool { return true }
		if prev := a.offeredGatewayMap(); prev != nil && aff.PeersOnly(a.id) {
			gm = st.ix.PatchGatewayMap(prev, gw, aff.Devices)
			stamp = func(p controlproto.GatewayPeer) bool { return aff.Devices[p.DeviceID] }
		} else {
			gm = st.ix.GatewayMap(gw)
			gm.DNSZones = st.zones
			gm.ActivityInterval = st.activityEvery
			gm.GrantLifetime = cmp.Or(s.cfg.GrantLifetime, controlproto.DefaultGrantLifetime)
		}
		if sm := s.cfg.Sessions; sm != nil {
			// The gateway ends each peer at its session's absolute limit
			// (or its own time bound, a break-glass session's) by
			// itself, in case it stops hearing from us.
			for i, p := range gm.Peers {
				if ss := st.sessions[p.DeviceID]; ss != nil && stamp(p) {
					gm.Peers[i].ExpiresAt = sm.Limits().EndsAt(ss)
					gm.Peers[i].SessionID = ss.ID
				}
			}
		}
		gm.Cluster = s.clusterFor(st, a, gw)
		a.queueNotices(s.revocations(s.log, a.offeredGatewayMap(), gm, notices))
		peers := make(map[string]bool, len(gm.Peers))
		for _, p := range gm.Peers {
			peers[p.DeviceID] = true
		}
		a.mu.Lock()
		a.peers = peers
		a.mu.Unlock()
		f := &controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: gm, Capability: controlproto.CapabilityVersion}
		if rev, err := offerFrame(a, f); err != nil {
			return err
		} else if rev != 0 {
			waiting[a] = rev
		}
	}
	gwTook = time.Since(gwStart)
	s.waitAcks(ctx, waiting)
	return s.pushClients(st, clients)
}

// clientsPerWorker is how many client maps make another worker worth
// starting.
const clientsPerWorker = 64

// pushClients computes and offers the client maps, spread over up to one
// worker per CPU: the maps of one state are independent and the state is
// read-only (load settled every session), and a broad change or a connect
// storm queues thousands, which one goroutine among thousands of
// connections' would compute slowly. The workers end before it returns.
func (s *Server) pushClients(st *mapState, clients []*agent) error {
	workers := min(runtime.GOMAXPROCS(0), (len(clients)+clientsPerWorker-1)/clientsPerWorker)
	if workers <= 1 {
		for _, a := range clients {
			if err := s.pushClient(st, a); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		emu  sync.Mutex
		ferr error
	)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(clients); i = int(next.Add(1)) - 1 {
				if err := s.pushClient(st, clients[i]); err != nil {
					emu.Lock()
					ferr = cmp.Or(ferr, err)
					emu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return ferr
}

// pushClient computes one client's map from st and offers it (or closes
// the connection of a device that no longer exists or was revoked).
func (s *Server) pushClient(st *mapState, a *agent) error {
	d, ok := st.ix.Device(a.id)
	if !ok || !d.RevokedAt.IsZero() {
		a.conn.CloseWithError(codeRevoked, "device revoked")
		return nil
	}
	cm := st.ix.ClientMap(d) // its gateways are shared: never modified
	cm.DNSZones, cm.PostureInterval = st.zones, s.postureInterval()
	if cm.Session = st.ix.SessionInfo(d); cm.Session != nil && cm.Session.State == controlproto.SessionActive {
		cm.Session.StepUp = s.stepUps.forDevice(d.ID, st.sessions[d.ID])
	}
	switch {
	case a.caps < controlproto.MinGatewayListCapability:
		cm = cm.Legacy() // each segment on the first gateway of its order
	case a.caps < controlproto.MinDrainCapability:
		cm = cm.DrainAsDown() // it would stay on a draining gateway
	}
	f := &controlproto.Frame{Type: controlproto.TypeClientMap, ClientMap: cm, Capability: controlproto.CapabilityVersion}
	_, err := offerFrame(a, f)
	return err
}

// load reads the snapshot after change c and prepares the state maps are
// computed from. A change naming a few users, groups or devices is read
// in part and patched into the last snapshot (store.Snapshot.Patch).
func (s *Server) load(ctx context.Context, c store.Change) (*mapState, error) {
	snap, err := s.snapshot(ctx, c)
	if err != nil {
		return nil, err
	}
	s.freshPosture(snap)
	var prev *netmap.Index
	if s.maps != nil {
		prev = s.maps.ix
	}
	st := &mapState{ix: netmap.NewIndexFrom(prev, snap, c, &s.policy)}
	if sm := s.cfg.Sessions; sm != nil {
		now := time.Now()
		st.sessions = sm.View(snap.Sessions)
		var n SessionCounts
		for _, ss := range snap.Sessions {
			if ss.Active() {
				n.Active++
			} else {
				n.Ended++
			}
		}
		s.sessionCounts.Store(&n)
		st.ix.SetSessions(sm.Limits(), st.sessions, now)
		st.activityEvery = sm.Limits().ActivityInterval()
		// Checking a session at the gate's time may end it (it writes the
		// session); do it once here, so that computing maps from this
		// state only reads it and may run on several goroutines.
		for _, ss := range st.sessions {
			sm.Limits().Check(ss, now)
		}
	}
	st.zones = st.ix.DNSZones(s.cfg.DNS)
	s.mu.Lock()
	// Devices' public addresses, for source-network conditions: a copy,
	// as handle adds to the map meanwhile.
	public := make(map[string]netip.Addr, len(s.public))
	for id, addr := range s.public {
		if _, ok := st.ix.Device(id); !ok {
			// Deleted or revoked; unless connected now: then it may be
			// newer than the snapshot (a connected deleted device is
			// closed when its map is computed, and pruned next time).
			if s.agents[id] == nil {
				delete(s.public, id)
			}
			continue
		}
		public[id] = addr
	}
	st.instances = s.instancesLocked(st.ix)
	st.tcpEndpoints = s.tcpEndpointsLocked(st.ix)
	s.mu.Unlock()
	st.ix.SetGatewayInstances(st.instances)
	st.ix.SetGatewayTCPEndpoints(st.tcpEndpoints)
	st.ix.SetGatewayDown(s.downCopy())
	st.ix.SetPublicAddrs(public)
	return st, nil
}

func (s *Server) snapshot(ctx context.Context, c store.Change) (*store.Snapshot, error) {
	if s.maps == nil || !c.Partial() {
		return s.cfg.Store.Snapshot(ctx)
	}
	prev := s.maps.ix.Snapshot()
	cover := prev.Cover(c)
	part, err := s.cfg.Store.SnapshotPart(ctx, cover)
	if err != nil {
		return nil, err
	}
	return prev.Patch(part, cover), nil
}

// freshPosture puts in snap the receive times of posture reports stored
// since it was read without a change (the map of records is replaced, not
// modified: earlier snapshots share it).
func (s *Server) freshPosture(snap *store.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]store.PostureRecord
	for id, at := range s.postureAt {
		rec, ok := snap.Posture[id]
		if !ok || !at.After(rec.ReceivedAt) {
			continue
		}
		if out == nil {
			out = maps.Clone(snap.Posture)
		}
		rec.ReceivedAt = at
		out[id] = rec
	}
	if out != nil {
		snap.Posture = out
	}
}

// checkDrift compares the snapshot the maps were computed from with a
// full read of the store and recomputes what differs. Every mutation
// publishes what it changed, and the maps are patched with only that; a
// mutation that did not (a defect) would otherwise leave maps stale until
// something else touched the same entities.
//
// It runs beside the recompute loop (a full read and comparison take
// about half a second at 10,000 devices) on st, the state of generation
// gen, and drops its finding when the maps were recomputed meanwhile.
func (s *Server) checkDrift(ctx context.Context, st *mapState, gen uint64) {
	full, err := s.cfg.Store.Snapshot(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("drift check: read the store", "err", err)
		}
		return
	}
	s.freshPosture(full)
	c := store.Diff(st.ix.Snapshot(), full)
	if c.IsZero() || s.changesOnTheirWay() || s.generation.Load() != gen {
		return // the same, or changes on their way (checked next time)
	}
	// A mutation publishes its change just after its commit: the store
	// read may have fallen between the two. A missed publish is still
	// there after a grace period; a change on its way has reached the
	// queue or the maps by then.
	select {
	case <-ctx.Done():
		return
	case <-time.After(min(driftGrace, cmp.Or(s.cfg.DriftCheck, DefaultDriftCheck))):
	}
	if s.changesOnTheirWay() || s.generation.Load() != gen {
		return
	}
	s.drifts.Add(1)
	s.log.Error("network maps were computed from state that differs from the store (a change was not published); recomputing the maps it reaches",
		"change", c)
	s.Changed(c)
}

// targets returns the connected agents whose maps are to be computed: those
// aff names and those that joined (each once), gateways and clients apart.
func (s *Server) targets(aff netmap.Affected, joined []*agent) (gateways, clients []*agent) {
	seen := map[*agent]bool{}
	add := func(a *agent) {
		if a == nil || seen[a] {
			return
		}
		seen[a] = true
		if a.kind == ca.KindGateway {
			gateways = append(gateways, a)
		} else {
			clients = append(clients, a)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case aff.All:
		for _, a := range s.agents {
			add(a)
		}
	default:
		for id := range aff.Gateways {
			if a := s.agents[id]; a != nil && a.kind == ca.KindGateway {
				add(a)
			}
		}
		for id := range aff.Devices {
			if a := s.agents[id]; a != nil && a.kind == ca.KindClient {
				add(a)
			}
		}
	}
	for _, a := range joined {
		if s.agents[a.id] == a {
			add(a)
		}
	}
	return gateways, clients
}

// offerFrame offers a's map f to its writer (see offer); the error is for
// callers that may one day fail to build f, offering itself cannot fail.
func offerFrame(a *agent, f *controlproto.Frame) (uint64, error) {
	return a.offer(f), nil
}

// waitAcks waits until every agent in want applied at least its revision,
// disconnected, or ackTimeout passed.
func (s *Server) waitAcks(ctx context.Context, want map[*agent]uint64) {
	if len(want) == 0 {
		return
	}
	timeout := time.NewTimer(ackTimeout)
	defer timeout.Stop()
	for {
		for a, rev := range want {
			if a.acked.Load() >= rev || a.conn.Context().Err() != nil {
				delete(want, a)
			}
		}
		if len(want) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-timeout.C:
			for a, rev := range want {
				s.log.Warn("gateway did not acknowledge its map in time; pushing client maps anyway", "agent", a.id, "revision", rev)
			}
			return
		case <-s.acks:
		}
	}
}

// Totals is what the server has done since it started, for metrics.
type Totals struct {
	Clients, Gateways int // connected now
	Sent              SentStats
	Drifts            int64
	// SpoolFull and ClockSkewed count the gateways whose audit.spool.full
	// or audit.clock.skew alert is raised now (flows.go).
	SpoolFull, ClockSkewed int
	Sessions               SessionCounts
}

// Totals returns the server's running counts.
func (s *Server) Totals() Totals {
	t := Totals{Sent: s.sent.snapshot(), Drifts: s.drifts.Load()}
	if n := s.sessionCounts.Load(); n != nil {
		t.Sessions = *n
	}
	s.gwHealth.mu.Lock()
	t.SpoolFull, t.ClockSkewed = len(s.gwHealth.spoolFull), len(s.gwHealth.skewed)
	s.gwHealth.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		if a.kind == ca.KindGateway {
			t.Gateways++
		} else {
			t.Clients++
		}
	}
	return t
}

// Connected returns the IDs of connected agents.
func (s *Server) Connected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.agents))
	for id := range s.agents {
		ids = append(ids, id)
	}
	return ids
}
