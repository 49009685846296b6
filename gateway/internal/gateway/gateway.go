// Package gateway runs a Cordon gateway: it enrolls once with a single-use
// token, holds the control connection, terminates WireGuard from client
// devices, authorizes every flow through the flow authorizer wrapped around
// its tun device, and reports flows to the controller through a spool on
// disk that keeps each record until the controller has committed it
// (flowspool.go).
//
// Data-plane modes:
//
//	tun:       kernel TUN + routing + the host firewall (package hostfw:
//	           default drop around the tunnel, masquerade toward the app
//	           subnet; root or CAP_NET_ADMIN).
//	userspace: gVisor netstack terminates flows and dials the apps with
//	           ordinary sockets (no privileges).
//
// Either way the stack is
//
//	clients ⇄ UDP ⇄ wireguard-go ⇄ flow.Authorizer ⇄ (kernel TUN | netstack) ⇄ apps
//	             ↑ or TLS on TCP (--tcp-listen)
//
// A client whose UDP is blocked carries the same WireGuard packets over
// TLS to the TCP port (tcpport.go); they enter the same wireguard-go
// device, so the authorizer sees the same packets either way.
//
// Fail static, fail closed (grants.go): the last map is saved to the state
// directory and served across a restart while the controller is away, for
// at most the grant lifetime the controller gave it after the gateway last
// heard from it; each device also drops out at its session's absolute
// limit, counted by the gateway itself.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/gateway/internal/cluster"
	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/gateway/internal/hostfw"
	"github.com/cordonhq/cordon/gateway/internal/lastmap"
	"github.com/cordonhq/cordon/gateway/internal/witness"
	"github.com/cordonhq/cordon/internal/metricshttp"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/certrenew"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/enroll"
	"github.com/cordonhq/cordon/pkg/netstack"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/privdir"
	"github.com/cordonhq/cordon/pkg/tunnet"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Modes.
const (
	ModeTUN       = "tun"
	ModeUserspace = "userspace"
)

// OverlayPrefix is the client address pool routed into the tun device.
var OverlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

const mtu = 1420

// Config configures a gateway.
type Config struct {
	StateDir   string
	Controller string // API URL, needed for enrollment
	CACert     string // path of the controller CA (enrollment)
	Token      string // enrollment token, needed once
	Name       string
	Mode       string
	Interface  string
	ListenPort int
	Endpoint   string // host:port clients dial
	// AllowLoopback lets userspace mode forward to apps on this host's
	// loopback (the no-root demo).
	AllowLoopback bool
	// ManageForwarding lets tun mode turn IPv4 forwarding on (and back to
	// what it was on a clean exit); without it the operator must have.
	ManageForwarding bool
	// Management are the sources that may reach this host's own services
	// (SSH, monitoring) through the tun-mode host firewall; everyone else
	// sees only the WireGuard port.
	Management []netip.Prefix
	Version    string
	Logger     *slog.Logger
	// SpoolMaxBytes bounds the flow record spool (0: spool's default,
	// 256 MiB); SpoolFull is what to do with new flows while it is full
	// (SpoolFailClosedPHI, the default, SpoolFailClosed or SpoolFailOpen).
	SpoolMaxBytes int64
	SpoolFull     string
	// MetricsListen, if set, serves Prometheus metrics (/metrics) and
	// health (/healthz, /readyz) there, without TLS (--metrics-listen).
	MetricsListen string
	// ClusterListen, if set, is where the gateway gossips with the other
	// gateways of its segment (--cluster-listen; cluster.go).
	ClusterListen netip.AddrPort
	// TCPListen, if set, is the HOST:PORT (usually :443) where the gateway
	// accepts WireGuard over TLS from clients whose UDP is blocked
	// (--tcp-listen; tcpport.go). Empty: UDP only.
	TCPListen string
}

// ErrNeedToken says the gateway is not enrolled and got no token.
var ErrNeedToken = errors.New("this gateway is not enrolled yet: pass --token (or --token-file) with a token from 'cordonctl gateway token create'")

// Run enrolls if needed and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if err := privdir.Ensure(cfg.StateDir, log); err != nil { // the keys live here: owner only
		return fmt.Errorf("--state-dir: %w", err)
	}
	st, err := loadOrEnroll(ctx, cfg)
	if err != nil {
		return err
	}
	log = log.With("gateway", st.Enrollment.ID)
	log.Info("gateway identity", "overlay_addr", st.Enrollment.OverlayAddr, "public_key", st.WGKey.Public().String(), "mode", cfg.Mode)

	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		defer ln.Close() // if Run fails before serving it
		metricsLn = ln
	}

	saved, err := lastmap.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	wit, err := witness.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	flows, err := openFlowReporter(cfg.StateDir, cfg.SpoolMaxBytes, cfg.SpoolFull, log.With("component", "flowspool"))
	if err != nil {
		return err
	}
	defer flows.close() // last: after the workers stopped
	// Listening before the host firewall admits the port.
	tcp, err := listenTCP(cfg, st, log)
	if err != nil {
		return err
	}
	defer tcp.close() // if Run fails before serving it
	dp, err := dataplane(cfg, tcp.port, st.Enrollment.OverlayAddr, log)
	if err != nil {
		return err
	}
	defer dp.cleanup()
	dev := dp.dev

	events := flows.events
	var decision prometheus.Histogram // timed only when served
	var observe func(time.Duration)
	if metricsLn != nil {
		decision = newDecisionHistogram()
		observe = func(d time.Duration) { decision.Observe(d.Seconds()) }
	}
	authz, err := flow.New(dev, flow.Config{Logger: log.With("component", "flow"), Events: events,
		LocalServices: dnsServices(st.Enrollment.OverlayAddr), Admit: flows.admit, ObserveDecision: observe})
	if err != nil {
		dev.Close()
		return err
	}
	flows.refused = func() uint64 { return authz.Stats().FlowsRefused }
	dnsSrv, err := startDNS(dev, authz, st.Enrollment.OverlayAddr, dp.bindDNS, events, log)
	if err != nil {
		authz.Close()
		return err
	}
	flows.queueDropped = func() uint64 { return authz.Stats().EventsDropped + dnsSrv.Stats().EventsDropped }
	wg, err := wgdev.New(authz, wgdev.Options{Name: cfg.Interface, UAPI: cfg.Mode == ModeTUN, Logger: log, Bind: tcp.bind()})
	if err != nil {
		dnsSrv.Close()
		authz.Close()
		return fmt.Errorf("start wireguard: %w", err)
	}
	defer wg.Close()
	defer dnsSrv.Close() // before the device goes
	if _, err := wg.Reconfig(wgdev.Config{PrivateKey: st.WGKey, ListenPort: cfg.ListenPort}); err != nil {
		return fmt.Errorf("configure wireguard: %w", err)
	}
	log.Info("wireguard listening", "port", cfg.ListenPort, "interface", cfg.Interface, "endpoint", cfg.Endpoint)

	// A new one per start: clients see it change and handshake again at
	// once (controlproto.ClientGateway.Instance).
	instance, err := controlproto.NewInstanceID()
	if err != nil {
		return err
	}
	g := &gw{log: log, key: st, authz: authz, dns: dnsSrv, wg: wg, port: cfg.ListenPort, fw: dp.fw, saved: saved,
		now: time.Now, lingerer: map[wgkey.Public]linger{}, saveNow: make(chan struct{}, 1), witness: wit, flows: flows,
		noLoopback: cfg.Mode == ModeUserspace && !cfg.AllowLoopback, clusterNews: make(chan struct{}, 1)}
	g.remote.now = g.now
	defer g.stop()
	hello := controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: cfg.Version, Endpoint: cfg.Endpoint, Instance: instance,
		TCPEndpoint: tcp.endpoint}
	if cfg.ClusterListen.IsValid() {
		cl, err := startCluster(cfg.ClusterListen, st, g, log.With("component", "cluster"))
		if err != nil {
			return err
		}
		defer cl.Close() // after the workers stopped (deferred below)
		g.cluster = cl
		hello.ClusterAddr = cl.Addr()
		log.Info("cluster listening", "addr", cl.Addr())
	}
	g.restore()
	g.mu.Lock()
	restored := g.cur
	g.mu.Unlock()
	g.updateCluster(restored)
	tlsConf, err := st.ClientTLS(controlproto.ALPN)
	if err != nil {
		return err
	}
	renewer, err := certrenew.New(certrenew.Config{State: st, Logger: log.With("component", "certrenew"),
		Remedy: fmt.Sprintf("delete %s and enroll this gateway again with a new token ('cordonctl gateway token create')", cfg.StateDir)})
	if err != nil {
		return err
	}
	cc := controlclient.New(controlclient.Config{
		Addr:    st.Enrollment.ControlAddr,
		TLS:     tlsConf,
		Renewer: renewer,
		Hello:   hello,
		OnHello: func(h *controlproto.Hello) { h.AuditLogSize = wit.Size() },
		OnFrame: g.onFrame,
		OnState: flows.connState,
		Logger:  log.With("component", "control"),
	})
	g.send = cc.Send
	flows.discard = cc.Discard // before cc.Run: connState reads it
	ctx, cancel := context.WithCancel(ctx)
	var workers sync.WaitGroup
	defer func() {
		cancel() // first: the workers stop on it
		workers.Wait()
	}()
	// The writer spools what is queued when ctx ends; the spool closes
	// after workers.Wait (deferred above).
	workers.Go(func() { flows.writer(ctx) })
	workers.Go(func() { flows.sender(ctx, cc.Send) })
	workers.Go(func() { recheckFlows(ctx, authz, recheckInterval) })
	workers.Go(func() { g.reportActivity(ctx, cc) })
	workers.Go(func() { g.keepValid(ctx, cc.Connected) })
	workers.Go(func() { g.saver(ctx) })
	if tcp.ln != nil {
		workers.Go(func() { tcp.serve(ctx, log) })
	}
	if metricsLn != nil {
		reg := g.metricsRegistry(cc.Connected, decision, tcp)
		workers.Go(func() { metricshttp.Serve(ctx, metricsLn, reg, g.ready, log.With("component", "metrics")) })
	}
	err = cc.Run(ctx)
	if errors.Is(err, controlclient.ErrRevoked) {
		// A deleted gateway must not serve its saved map on its next
		// start: remove it once the saver has stopped.
		cancel()
		workers.Wait()
		if rerr := saved.Remove(); rerr != nil {
			log.Error("remove the saved map of a revoked gateway", "err", rerr)
		}
		return fmt.Errorf("%w: delete %s and enroll again with a new token", err, cfg.StateDir)
	}
	return err
}

func loadOrEnroll(ctx context.Context, cfg Config) (*agentstate.State, error) {
	st, err := agentstate.Load(cfg.StateDir)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, agentstate.ErrNotEnrolled) {
		return nil, err
	}
	if cfg.Token == "" {
		return nil, ErrNeedToken
	}
	if cfg.Controller == "" {
		return nil, errors.New("this gateway is not enrolled yet: pass --controller https://HOST:PORT")
	}
	caPEM, err := enroll.ReadCA(cfg.CACert)
	if err != nil {
		return nil, err
	}
	if st, err = agentstate.Keys(cfg.StateDir); err != nil {
		return nil, err
	}
	csr, err := st.CSR(cfg.Name)
	if err != nil {
		return nil, err
	}
	api, err := adminapi.New(cfg.Controller, "", caPEM)
	if err != nil {
		return nil, err
	}
	resp, err := api.EnrollGateway(ctx, &controlproto.EnrollGatewayRequest{
		Token: cfg.Token, Name: cfg.Name, PublicKey: st.WGKey.Public(), CSR: csr, Endpoint: cfg.Endpoint,
	})
	if err != nil {
		return nil, fmt.Errorf("enroll gateway: %w", err)
	}
	if err := enroll.Save(st, cfg.Controller, caPEM, resp); err != nil {
		return nil, err
	}
	cfg.Logger.Info("enrolled", "gateway", resp.ID, "overlay_addr", resp.OverlayAddr)
	return st, nil
}

// plane is the data plane the authorizer wraps, and what tun mode set up
// on the host.
type plane struct {
	dev     tun.Device
	fw      *hostfw.Firewall // tun mode only
	bindDNS string           // interface the DNS sockets bind to (tun mode)
	cleanup func()
}

// dataplane builds the device the authorizer wraps. In tun mode the host
// firewall goes in first, before the interface exists and before
// forwarding is checked: the host is never open, not even while starting.
func dataplane(cfg Config, tcpPort uint16, overlay netip.Addr, log *slog.Logger) (*plane, error) {
	switch cfg.Mode {
	case ModeUserspace:
		ns, err := netstack.New(netstack.Config{
			Addrs: []netip.Addr{overlay}, MTU: mtu, Name: cfg.Interface,
			AllowLoopback: cfg.AllowLoopback,
			Forward:       &netstack.ForwardConfig{},
			Logger:        log.With("component", "netstack"),
		})
		if err != nil {
			return nil, fmt.Errorf("start userspace network stack: %w", err)
		}
		if len(cfg.Management) > 0 {
			log.Warn("--management-sources applies to tun mode only: in userspace mode the host's own firewall guards the host")
		}
		return &plane{dev: ns, cleanup: func() {}}, nil
	case ModeTUN:
		if cfg.ListenPort <= 0 || cfg.ListenPort > 65535 {
			return nil, fmt.Errorf("--listen-port %d: want 1 to 65535", cfg.ListenPort)
		}
		fw, err := hostfw.Install(hostfw.Config{Interface: cfg.Interface, Overlay: OverlayPrefix,
			ListenPort: uint16(cfg.ListenPort), TCPPort: tcpPort, Management: cfg.Management, ClusterPort: cfg.ClusterListen.Port()})
		if err != nil {
			return nil, err
		}
		log.Info("host firewall installed: the WAN sees only the WireGuard port; forwarding only from the tunnel",
			"table", "inet "+hostfw.TableName, "management_sources", cfg.Management)
		dev, err := tun.CreateTUN(cfg.Interface, mtu)
		if err != nil {
			fw.Close()
			return nil, fmt.Errorf("create tun device %s (tun mode needs root or CAP_NET_ADMIN; use --mode userspace otherwise): %w", cfg.Interface, err)
		}
		fail := func(err error) (*plane, error) {
			dev.Close()
			fw.Close()
			return nil, err
		}
		link, err := tunnet.Configure(cfg.Interface, netip.PrefixFrom(overlay, 32), mtu)
		if err != nil {
			return fail(err)
		}
		if err := link.SyncRoutes([]netip.Prefix{OverlayPrefix}); err != nil {
			return fail(err)
		}
		restoreFwd, err := prepareForwarding(cfg.StateDir, cfg.ManageForwarding, log)
		if err != nil {
			return fail(err)
		}
		return &plane{dev: dev, fw: fw, bindDNS: cfg.Interface, cleanup: func() {
			// Forward nothing; the table and its drop policies stay.
			if err := fw.Close(); err != nil {
				log.Warn("close host firewall", "err", err)
			}
			restoreFwd()
		}}, nil
	}
	return nil, fmt.Errorf("unknown --mode %q: use tun or userspace", cfg.Mode)
}

// peerLinger is how long a WireGuard peer stays configured after its device
// lost its last rule here. The authorizer already denies all its traffic
// (it is no longer in the policy), but the peer must outlive the RSTs that
// tell its open connections they were cut, and a quick remove-then-add must
// not wipe the device's WireGuard session.
const peerLinger = 2 * time.Second

type gw struct {
	log   *slog.Logger
	key   *agentstate.State
	authz *flow.Authorizer
	dns   *dns.Server
	wg    *wgdev.Device
	port  int
	fw    *hostfw.Firewall // nil in userspace mode
	saved *lastmap.Store
	now   func() time.Time
	// witness holds the latest audit log checkpoint (auditlog.go); send
	// queues a frame for the controller.
	witness *witness.Witness
	send    func(*controlproto.Frame) bool
	flows   *flowReporter // flow record spool (flowspool.go)
	// noLoopback is set in userspace mode without --allow-loopback, where
	// apps on this host's loopback cannot be reached.
	noLoopback bool
	alerted    string // the held checkpoint last alerted about (auditlog.go)
	// cluster is the gateway's cluster (nil without --cluster-listen);
	// remote the activity its peers saw; clusterNews wakes the activity
	// reporter when a member's state changed (cluster.go).
	cluster     *cluster.Cluster
	remote      remoteActivity
	clusterNews chan struct{}
	lastCluster *controlproto.GatewayCluster // the one last applied (updateCluster's)

	// activityEvery is the map's ActivityInterval (nanoseconds; 0: the
	// controller wants no activity reports).
	activityEvery atomic.Int64

	// mu serialises every change of what the gateway serves: maps from
	// the controller, expiries (grants.go) and lingering peers.
	mu sync.Mutex
	// cur is the last map from the controller (or from disk) and
	// validUntil when it stops granting anything (grants.go).
	cur        *controlproto.GatewayMap
	validUntil time.Time
	expiry     *time.Timer
	segs       []netip.Prefix // forwarded by the host firewall
	// toSave is the newest record for the saver (grants.go), which writes
	// it off the path of map application (and of the map's ack).
	toSave   *lastmap.Record
	saveNow  chan struct{}
	want     []wgdev.Peer            // peers in effect
	lingerer map[wgkey.Public]linger // peers removed from the map, kept for a while
	timer    *time.Timer
	closed   bool
	// drainSince is when the map first said the gateway drains (zero:
	// not draining; drain.go); drainTimer re-checks its peers meanwhile.
	drainSince time.Time
	drainTimer *time.Timer
	configured int // WireGuard peers configured by the last reconcile
}

type linger struct {
	peer  wgdev.Peer
	until time.Time
}

// onFrame takes a map the controller pushed: it applies whole or not at
// all (applyLocked), renews the grants (the controller was just heard
// from) and is saved for a restart.
func (g *gw) onFrame(f *controlproto.Frame) error {
	if f.Type == controlproto.TypeAuditCheckpoint {
		g.onCheckpoint(f.AuditCheckpoint)
		return nil
	}
	if f.Type == controlproto.TypeFlowAck {
		g.flows.ack(f.FlowAck)
		return nil
	}
	if f.Type == controlproto.TypeRevocation {
		if g.cluster == nil {
			return nil // nobody to tell: the map that follows does the job here
		}
		if err := g.cluster.Revoke(f.Revocation); err != nil {
			g.log.Error("revocation notice from the controller refused", "err", err)
		}
		return nil
	}
	if f.Type != controlproto.TypeGatewayMap {
		g.log.Warn("unexpected control frame; ignored", "type", f.Type)
		return nil
	}
	if err := g.onMap(f); err != nil {
		return err
	}
	g.updateCluster(f.GatewayMap)
	return nil
}

// updateCluster hands the map's cluster to the cluster and the host
// firewall when it changed. A map without one (a controller before
// capability 12, or one that restarted moments ago and does not know
// every member yet) leaves the last one in place. Not under g.mu; called
// from the control channel's reader (and once before it starts).
func (g *gw) updateCluster(m *controlproto.GatewayMap) {
	if g.cluster == nil || m == nil {
		return
	}
	if m.Cluster == nil {
		if g.lastCluster == nil {
			g.log.Debug("--cluster-listen is set and the controller sent no cluster yet")
		}
		return
	}
	if controlproto.EqualClusters(m.Cluster, g.lastCluster) {
		return
	}
	if err := g.cluster.Update(m.Cluster); err != nil {
		g.log.Error("cluster not updated", "err", err)
		return // tried again with the next map
	}
	if g.fw != nil {
		// The host firewall admits the cluster port from the listed
		// peers only.
		var peers []netip.Addr
		for _, mb := range m.Cluster.Members {
			if mb.GatewayID != g.key.Enrollment.ID {
				peers = append(peers, mb.Addr.Addr())
			}
		}
		if err := g.fw.SetClusterPeers(peers); err != nil {
			g.log.Error("host firewall: cluster peers not updated", "err", err)
			return
		}
	}
	g.lastCluster = m.Cluster
}

// onMap applies a map from the controller.
func (g *gw) onMap(f *controlproto.Frame) error {
	m := f.GatewayMap
	g.flows.controllerCaps(f.Capability)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	prev, prevValid := g.cur, g.validUntil
	g.cur, g.validUntil = m, now.Add(grantLifetime(m))
	if err := g.applyLocked(now); err != nil {
		g.cur, g.validUntil = prev, prevValid
		// A step after the authorizer and DNS (the host firewall,
		// WireGuard) failed: put those back to the previous map too.
		if rerr := g.applyLocked(now); rerr != nil {
			g.log.Error("restore the previous map after a rejected one", "err", rerr)
		}
		g.log.Error("map rejected; keeping the previous one", "revision", m.Revision, "err", err)
		return err
	}
	g.saveLocked(now)
	g.flows.setApps(m.Apps)
	g.activityEvery.Store(int64(m.ActivityInterval))
	if names := loopbackApps(m.Apps); g.noLoopback && len(names) > 0 {
		g.log.Error("apps on this host's loopback cannot be reached in userspace mode; restart with --allow-loopback (demo only) or give the apps a non-loopback address", "apps", strings.Join(names, ","))
	}
	g.log.Info("map applied", "revision", m.Revision, "peers", len(g.want), "rules", len(m.Rules), "apps", len(m.Apps), "valid_until", g.validUntil)
	return nil
}

// applyLocked makes the current map, less what expired by now, what the
// gateway serves: the policy compiles and the DNS records load first, and
// only then do the authorizer, the host firewall and WireGuard move to it.
func (g *gw) applyLocked(now time.Time) error {
	m := g.cur
	if m == nil || g.closed {
		return nil
	}
	live, next := livePeers(m.Peers, now, g.validUntil)
	peers := make([]policy.Peer, len(live))
	want := make([]wgdev.Peer, len(live))
	for i, p := range live {
		peers[i] = p.Peer
		if p.SessionID != "" {
			// The session's ID rides on the policy's session, for the
			// flow records (it decides nothing).
			var sess policy.Session
			if p.Session != nil {
				sess = *p.Session
			}
			sess.ID = p.SessionID
			peers[i].Session = &sess
		}
		want[i] = wgdev.Peer{PublicKey: p.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.Addr, p.Addr.BitLen())}}
	}
	compiled, err := policy.Compile(m.Rules, peers)
	if err != nil {
		return fmt.Errorf("policy does not compile: %w", err)
	}
	if err := g.dns.SetMap(m.DNSZones, m.Apps); err != nil {
		return fmt.Errorf("dns records: %w", err)
	}

	// Policy first: flows the new map no longer allows are cut (with RSTs
	// to both ends) while their peers are still configured to carry them.
	g.authz.SetPolicyVersion(compiled, m.PolicyVersion)
	if g.fw != nil {
		// The map's segments while it is valid (not only while it has
		// peers: a netlink round trip on every first or last peer would
		// delay the map's ack, and with it the clients' maps).
		var segs []netip.Prefix
		if now.Before(g.validUntil) {
			for _, sg := range m.Segments {
				segs = append(segs, sg.CIDRs...)
			}
		}
		if !slices.Equal(segs, g.segs) {
			if err := g.fw.SetSegments(segs); err != nil {
				return err
			}
			g.segs = segs
		}
	}
	inMap := make(map[wgkey.Public]bool, len(want))
	for _, p := range want {
		inMap[p.PublicKey] = true
		delete(g.lingerer, p.PublicKey)
	}
	for _, p := range g.want {
		if !inMap[p.PublicKey] {
			g.lingerer[p.PublicKey] = linger{peer: p, until: now.Add(peerLinger)}
		}
	}
	g.want = want
	g.noteDrainLocked(m.Draining, now)
	g.scheduleExpiryLocked(now, next)
	return g.reconcileLocked(now)
}

// reconcileLocked configures the map's peers plus the lingering ones and
// arms a timer for the next lingering peer to go.
func (g *gw) reconcileLocked(now time.Time) error {
	if g.closed {
		return nil
	}
	peers := g.drainPeersLocked(now)
	var next time.Time
	for k, l := range g.lingerer {
		if !now.Before(l.until) {
			delete(g.lingerer, k)
			continue
		}
		peers = append(peers, l.peer)
		if next.IsZero() || l.until.Before(next) {
			next = l.until
		}
	}
	if _, err := g.wg.Reconfig(wgdev.Config{PrivateKey: g.key.WGKey, ListenPort: g.port, Peers: peers}); err != nil {
		g.log.Error("apply wireguard peers", "err", err)
		return fmt.Errorf("apply wireguard peers: %w", err)
	}
	g.configured = len(peers)
	g.armDrainLocked()
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if !next.IsZero() {
		g.timer = time.AfterFunc(next.Sub(now), func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.reconcileLocked(g.now())
		})
	}
	return nil
}

// stop ends lingering-peer timers; called before the device closes.
func (g *gw) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
	if g.drainTimer != nil {
		g.drainTimer.Stop()
	}
	if g.expiry != nil {
		g.expiry.Stop()
	}
}

// recheckInterval is how often open flows are re-checked against the
// policy: a time window that closes or an MFA that grows too old cuts the
// flows it admitted within this long.
const recheckInterval = 15 * time.Second

// recheckFlows re-checks open flows every interval until ctx ends.
func recheckFlows(ctx context.Context, authz *flow.Authorizer, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			authz.Recheck()
		}
	}
}

// Bounds on the activity report interval, whatever the controller asks.
const (
	minActivityEvery = 200 * time.Millisecond
	maxActivityEvery = time.Minute
	// activityIdlePoll is how often to look again while the controller
	// wants no reports (no map yet, or sessions without an idle limit).
	activityIdlePoll = time.Second
	// loadPoll is how often the load is compared with the one last sent.
	loadPoll = time.Second
	// loadRefresh is how often an unchanged load is sent again.
	loadRefresh = 30 * time.Second
)

// reportActivity tells the controller, every ActivityInterval, which
// devices sent app traffic since the last report and how long ago they
// last did, for the session idle limit. Reports are not resent when lost:
// the next one carries newer activity, and a session that ends for lack
// of news ends on the safe side.
func (g *gw) reportActivity(ctx context.Context, cc *controlclient.Client) {
	var mark flow.ActivityMark
	var sent controlproto.GatewayLoad // the load last sent, at sentAt
	var sentAt time.Time
	var sentCluster []controlproto.ClusterMemberState // the members' states last sent
	t := time.NewTimer(activityIdlePoll)
	defer t.Stop()
	// The load is looked at every loadPoll whatever the activity interval
	// (up to a minute), so that a change shows in the gateway list soon.
	loadTick := time.NewTicker(loadPoll)
	defer loadTick.Stop()
	for {
		rep := &controlproto.Activity{}
		var own []controlproto.DeviceActivity
		select {
		case <-ctx.Done():
			return
		case <-g.clusterNews:
		case <-loadTick.C:
		case <-t.C:
			wait := activityIdlePoll
			if every := time.Duration(g.activityEvery.Load()); every > 0 {
				wait = min(max(every, minActivityEvery), maxActivityEvery)
				var act map[string]time.Duration
				act, mark = g.authz.Activity(mark)
				own = deviceActivity(act)
				// What the cluster's other gateways saw counts too
				// (one of them may have lost the controller).
				g.remote.merge(act)
				rep.Devices = deviceActivity(act)
			}
			t.Reset(wait)
		}
		// The load goes when it changed, and now and then so that a
		// controller that (re)connected learns it.
		now := g.now()
		if load := g.load(); load != sent || now.Sub(sentAt) >= loadRefresh {
			rep.Load = &load
		}
		var members []controlproto.ClusterMemberState
		if g.cluster != nil {
			members = g.cluster.Members()
			if !slices.Equal(members, sentCluster) || rep.Load != nil {
				rep.Cluster = members
			}
		}
		if len(rep.Devices) > 0 || rep.Load != nil || rep.Cluster != nil {
			if cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: rep}) {
				if rep.Load != nil {
					sent, sentAt = *rep.Load, g.now()
				}
				if rep.Cluster != nil {
					sentCluster = members
				}
			}
		}
		if g.cluster != nil && len(own) > 0 {
			if err := g.cluster.SendActivity(own); err != nil {
				g.log.Debug("activity not sent to every cluster member", "err", err)
			}
		}
	}
}

func deviceActivity(act map[string]time.Duration) []controlproto.DeviceActivity {
	out := make([]controlproto.DeviceActivity, 0, len(act))
	for id, idle := range act {
		out = append(out, controlproto.DeviceActivity{DeviceID: id, Idle: idle})
	}
	return out
}

// load is the gateway's load for the controller's gateway list.
func (g *gw) load() controlproto.GatewayLoad {
	flows := int(g.authz.Stats().FlowsOpen)
	g.mu.Lock()
	defer g.mu.Unlock()
	return controlproto.GatewayLoad{Peers: g.configured, Flows: flows}
}

// loopbackApps names the apps whose address is on loopback.
func loopbackApps(apps []controlproto.App) []string {
	var out []string
	for _, a := range apps {
		if a.Addr.Addr().IsLoopback() {
			out = append(out, a.Name)
		}
	}
	return out
}
