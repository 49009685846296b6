// Package control is the controller's side of the agent control channel:
// a QUIC listener with mutual TLS that identifies each gateway and client
// device by the certificate the controller issued, pushes each one its whole
// network map whenever it changes, and records the flow events gateways
// report.
//
// Changes are pushed, never polled for: whoever mutates the store calls
// [Server.Changed]; one recompute goroutine coalesces bursts of changes,
// computes every connected agent's map from one snapshot and offers each
// agent its map; a map equal to the one last offered is dropped.
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
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
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
	// GrantLifetime is how long a gateway cut off from the controller may
	// go on serving its last map (GatewayMap.GrantLifetime); zero:
	// controlproto.DefaultGrantLifetime.
	GrantLifetime time.Duration
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

	mu     sync.Mutex
	agents map[string]*agent // by agent ID
	// public is the address each client device last connected from, kept
	// after it disconnects (a control-channel blip must not cut its
	// source-network flows); in memory only, pruned of deleted devices.
	public map[string]netip.Addr
	// instances is the run each gateway last said hello from (instance.go).
	instances map[string]controlproto.InstanceID
}

// New returns a Server; call Serve to run it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.State == nil {
		cfg.State = state.New(state.Config{Store: cfg.Store, Logger: cfg.Logger})
	}
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		trigger: make(chan struct{}, 1),
		acks:    make(chan struct{}, 1),
		agents:  map[string]*agent{},
		public:  map[string]netip.Addr{},

		instances: map[string]controlproto.InstanceID{},
	}
}

// Changed tells the server that state affecting network maps changed. It
// never blocks; bursts coalesce into one recompute.
func (s *Server) Changed() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
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
	}
}

// QUICConfig is the controller's end of the control channel. Only the
// agents send keep-alives (every 10 s, pkg/controlclient): they keep their
// NAT bindings open, and their pings keep the connection alive for both
// ends. The controller sending its own every 10 s as well doubled the
// packets of an idle fleet (at 10,000 agents keep-alives were nearly all
// of the idle controller's 11% of a core). A silent agent is still
// dropped after MaxIdleTimeout.
func QUICConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 30 * time.Second}
}

// Serve accepts agents on pc until ctx is cancelled; it returns after every
// goroutine it started has stopped.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	ln, err := quic.Listen(pc, s.TLSConfig(), QUICConfig())
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

	stats sendStats

	unexpected uint64 // frames dropped as out of place; readLoop only

	wmu sync.Mutex // serializes writes on the control stream (maps, replies)
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
	a.mu.Unlock()
	a.poke()
	return rev
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
func wire(f, base *controlproto.Frame) *controlproto.Frame {
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
		d, err := controlproto.DiffClientMap(base.ClientMap, f.ClientMap)
		if err == nil && d.SmallerThan(f.ClientMap) {
			return &controlproto.Frame{Type: controlproto.TypeClientDelta, ClientDelta: d}
		}
	}
	return f // a map with a duplicate key goes whole (the agent judges it)
}

// sentMap records that f went out (as delta when delta).
func (a *agent) sentMap(f *controlproto.Frame, delta bool, n int) {
	a.mu.Lock()
	a.sent, a.sentDelta = f, delta
	a.mu.Unlock()
	a.stats.bytes.Add(uint64(n))
	if delta {
		a.stats.deltas.Add(1)
	} else {
		a.stats.maps.Add(1)
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
		s.updateEndpoint(ctx, log, id, hello.Hello.Endpoint)
	}

	a := &agent{id: id, kind: kind, conn: conn, public: remoteAddr(conn.RemoteAddr()), caps: hello.Hello.CapabilityVersion,
		wake: make(chan struct{}, 1)}
	s.mu.Lock()
	if old := s.agents[id]; old != nil {
		old.conn.CloseWithError(codeReplaced, "replaced by a newer connection")
	}
	s.agents[id] = a
	if kind == ca.KindClient && a.public.IsValid() {
		s.public[id] = a.public
	}
	if kind == ca.KindGateway {
		s.noteInstanceLocked(log, id, hello.Hello.Instance)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.agents[id] == a {
			delete(s.agents, id)
		}
		s.mu.Unlock()
	}()
	log.Info("agent connected", "version", hello.Hello.AgentVersion, "capability_version", a.caps)
	s.Changed()

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

func (s *Server) updateEndpoint(ctx context.Context, log *slog.Logger, id, endpoint string) {
	if endpoint == "" {
		return
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil {
		log.Warn("gateway sent an invalid endpoint; ignoring", "endpoint", endpoint)
		return
	}
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
		f, base := a.take()
		if f == nil {
			continue
		}
		out := wire(f, base)
		buf, err := controlproto.EncodeFrame(out) // the one encoding
		if err == nil {
			a.wmu.Lock()
			_, err = w.Write(buf)
			a.wmu.Unlock()
		}
		if err != nil {
			log.Warn("push map", "err", err)
			a.conn.CloseWithError(codeProtocol, "write failed")
			return
		}
		a.sentMap(f, out != f, len(buf))
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
		case f.Type == controlproto.TypeFlowEvents && a.kind == ca.KindGateway:
			s.recordFlows(ctx, log, a, f.FlowEvents.Events)
		case f.Type == controlproto.TypeActivity && a.kind == ca.KindGateway:
			s.recordActivity(log, a, f.Activity)
		case f.Type == controlproto.TypePosture && a.kind == ca.KindClient:
			s.handlePosture(ctx, log, a, f.Posture)
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

func (s *Server) recordFlows(ctx context.Context, log *slog.Logger, a *agent, evs []controlproto.FlowEvent) {
	gatewayID := a.id
	a.mu.Lock()
	peers := a.peers
	a.mu.Unlock()
	if len(evs) > maxEventsPerFrame {
		log.Warn("flow event batch too large; truncated", "events", len(evs))
		evs = evs[:maxEventsPerFrame]
	}
	out := make([]store.AuditEvent, 0, len(evs))
	stepUp := false
	for _, e := range evs {
		ev, ok := FlowAudit(gatewayID, e)
		if !ok {
			continue // an action this controller does not know
		}
		// Step-ups only for the gateway's own peers: a gateway cannot make
		// another gateway's device ask its user to sign in again.
		if e.Action == controlproto.FlowDeny && peers[e.DeviceID] && s.stepUps.note(e) {
			stepUp = true
		}
		out = append(out, ev)
	}
	if err := s.cfg.State.Record(ctx, state.Origin{Actor: "gateway:" + gatewayID}, out...); err != nil {
		log.Error("record flow events", "err", err, "events", len(out))
	}
	if stepUp {
		s.Changed() // the device's map asks its user to verify again
	}
}

// FlowAudit converts a gateway's flow event into an audit event; false if
// its action is not one this controller knows.
func FlowAudit(gatewayID string, e controlproto.FlowEvent) (store.AuditEvent, bool) {
	subject := e.App
	if subject == "" {
		subject = e.Dst.String()
	}
	var typ audit.Type
	var outcome audit.Outcome
	switch e.Action {
	case controlproto.FlowAllow:
		typ, outcome = audit.FlowAllow, audit.Allow
	case controlproto.FlowDeny:
		typ, outcome = audit.FlowDeny, audit.Deny
	case controlproto.FlowCut:
		typ, outcome = audit.FlowCut, audit.Cut
	case controlproto.FlowDNSDeny:
		// A denied lookup: the name asked for is the subject.
		typ, outcome, subject = audit.DNSDeny, audit.Deny, e.Name
	default:
		return store.AuditEvent{}, false
	}
	d := map[string]string{
		"proto":   e.Proto.String(),
		"src":     e.Src.String(),
		"dst":     e.Dst.String(),
		"gateway": gatewayID,
	}
	for k, v := range map[string]string{"user": e.User, "device": e.DeviceID, "rule": e.Rule, "reason": e.Reason, "name": e.Name} {
		if v != "" {
			d[k] = v
		}
	}
	return store.AuditEvent{
		Time:    e.Time,
		Type:    typ,
		Actor:   "gateway:" + gatewayID,
		Outcome: string(outcome),
		Subject: subject,
		Details: d,
	}, true
}

func (s *Server) recomputeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		}
		if err := s.recompute(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("recompute network maps", "err", err)
		}
	}
}

// ackTimeout bounds how long client maps wait for gateways to apply theirs.
const ackTimeout = 2 * time.Second

// recompute pushes new maps in two phases: gateways first, then, once they
// acknowledged (or ackTimeout passed), clients. A device that gains access
// then finds its peer already configured at the gateway when it
// handshakes, and a device that loses access still has its route while the
// gateway's RSTs for its cut flows reach it.
func (s *Server) recompute(ctx context.Context) error {
	snap, err := s.cfg.Store.Snapshot(ctx)
	if err != nil {
		return err
	}
	ix := netmap.NewIndexCached(snap, &s.policy)
	var sessions map[string]*session.Session
	var activityEvery time.Duration
	if sm := s.cfg.Sessions; sm != nil {
		sessions = sm.View(snap.Sessions)
		ix.SetSessions(sm.Limits(), sessions, time.Now())
		activityEvery = sm.Limits().ActivityInterval()
	}
	if err := ix.PolicyError(); err != nil {
		s.log.Error("active policy does not parse: maps carry no rules until a policy is applied again", "version", snap.Policy.Version, "err", err)
	}
	zones := ix.DNSZones(s.cfg.DNS)
	s.mu.Lock()
	var gateways, clients []*agent
	for _, a := range s.agents {
		if a.kind == ca.KindGateway {
			gateways = append(gateways, a)
		} else {
			clients = append(clients, a)
		}
	}
	// Devices' public addresses, for source-network conditions: a copy,
	// as handle adds to the map meanwhile.
	public := make(map[string]netip.Addr, len(s.public))
	for id, addr := range s.public {
		if _, ok := ix.Device(id); !ok {
			// Deleted or revoked; unless connected now: then it may be
			// newer than the snapshot (a connected deleted device is
			// closed below, and pruned next time).
			if s.agents[id] == nil {
				delete(s.public, id)
			}
			continue
		}
		public[id] = addr
	}
	instances := s.instancesLocked(ix)
	s.mu.Unlock()
	ix.SetPublicAddrs(public)

	waiting := map[*agent]uint64{}
	for _, a := range gateways {
		gw, ok := ix.Gateway(a.id)
		if !ok {
			a.conn.CloseWithError(codeRevoked, "gateway deleted")
			continue
		}
		gm := ix.GatewayMap(gw)
		gm.DNSZones = zones
		gm.ActivityInterval = activityEvery
		gm.GrantLifetime = cmp.Or(s.cfg.GrantLifetime, controlproto.DefaultGrantLifetime)
		if sm := s.cfg.Sessions; sm != nil {
			// The gateway ends each peer at its session's absolute limit
			// by itself, in case it stops hearing from us.
			for i, p := range gm.Peers {
				if ss := sessions[p.DeviceID]; ss != nil {
					gm.Peers[i].ExpiresAt = ss.Started.Add(sm.Limits().Absolute)
				}
			}
		}
		peers := make(map[string]bool, len(gm.Peers))
		for _, p := range gm.Peers {
			peers[p.DeviceID] = true
		}
		a.mu.Lock()
		a.peers = peers
		a.mu.Unlock()
		f := &controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: gm}
		if rev, err := offerFrame(a, f); err != nil {
			return err
		} else if rev != 0 {
			waiting[a] = rev
		}
	}
	s.waitAcks(ctx, waiting)
	for _, a := range clients {
		d, ok := ix.Device(a.id)
		if !ok || !d.RevokedAt.IsZero() {
			a.conn.CloseWithError(codeRevoked, "device revoked")
			continue
		}
		cm := ix.ClientMap(d)
		stampInstances(cm, instances)
		cm.DNSZones, cm.PostureInterval = zones, s.postureInterval()
		if cm.Session = ix.SessionInfo(d); cm.Session != nil && cm.Session.State == controlproto.SessionActive {
			cm.Session.StepUp = s.stepUps.forDevice(d.ID, sessions[d.ID])
		}
		f := &controlproto.Frame{Type: controlproto.TypeClientMap, ClientMap: cm}
		if _, err := offerFrame(a, f); err != nil {
			return err
		}
	}
	return nil
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
