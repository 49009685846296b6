// Package gateway runs a Cordon gateway: it enrolls once with a single-use
// token, holds the control connection, terminates WireGuard from client
// devices, authorizes every flow through the flow authorizer wrapped around
// its tun device, and reports flows to the controller.
//
// Data-plane modes:
//
//	tun:       kernel TUN + routing + nftables masquerade toward the app
//	           subnet (root or CAP_NET_ADMIN).
//	userspace: gVisor netstack terminates flows and dials the apps with
//	           ordinary sockets (no privileges).
//
// Either way the stack is
//
//	clients ⇄ UDP ⇄ wireguard-go ⇄ flow.Authorizer ⇄ (kernel TUN | netstack) ⇄ apps
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/gateway/internal/nat"
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
	Version       string
	Logger        *slog.Logger
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

	dev, cleanup, err := dataplane(cfg, st.Enrollment.OverlayAddr, log)
	if err != nil {
		return err
	}
	defer cleanup()

	events := make(chan controlproto.FlowEvent, 4096)
	authz, err := flow.New(dev, flow.Config{Logger: log.With("component", "flow"), Events: events,
		LocalServices: dnsServices(st.Enrollment.OverlayAddr)})
	if err != nil {
		dev.Close()
		return err
	}
	dnsSrv, err := startDNS(dev, authz, st.Enrollment.OverlayAddr, events, log)
	if err != nil {
		authz.Close()
		return err
	}
	wg, err := wgdev.New(authz, wgdev.Options{Name: cfg.Interface, UAPI: cfg.Mode == ModeTUN, Logger: log})
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

	g := &gw{log: log, key: st, authz: authz, dns: dnsSrv, wg: wg, port: cfg.ListenPort, lingerer: map[wgkey.Public]linger{}}
	defer g.stop()
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
		Hello:   controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: cfg.Version, Endpoint: cfg.Endpoint},
		OnFrame: g.onFrame,
		Logger:  log.With("component", "control"),
	})
	ctx, cancel := context.WithCancel(ctx)
	var workers sync.WaitGroup
	defer func() {
		cancel() // first: the workers stop on it
		workers.Wait()
	}()
	workers.Go(func() { reportFlows(ctx, events, cc) })
	workers.Go(func() { recheckFlows(ctx, authz, recheckInterval) })
	workers.Go(func() { g.reportActivity(ctx, cc) })
	err = cc.Run(ctx)
	if errors.Is(err, controlclient.ErrRevoked) {
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

// dataplane builds the device the authorizer wraps.
func dataplane(cfg Config, overlay netip.Addr, log *slog.Logger) (tun.Device, func(), error) {
	switch cfg.Mode {
	case ModeUserspace:
		ns, err := netstack.New(netstack.Config{
			Addrs: []netip.Addr{overlay}, MTU: mtu, Name: cfg.Interface,
			AllowLoopback: cfg.AllowLoopback,
			Forward:       &netstack.ForwardConfig{},
			Logger:        log.With("component", "netstack"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("start userspace network stack: %w", err)
		}
		return ns, func() {}, nil
	case ModeTUN:
		dev, err := tun.CreateTUN(cfg.Interface, mtu)
		if err != nil {
			return nil, nil, fmt.Errorf("create tun device %s (tun mode needs root or CAP_NET_ADMIN; use --mode userspace otherwise): %w", cfg.Interface, err)
		}
		link, err := tunnet.Configure(cfg.Interface, netip.PrefixFrom(overlay, 32), mtu)
		if err != nil {
			dev.Close()
			return nil, nil, err
		}
		if err := link.SyncRoutes([]netip.Prefix{OverlayPrefix}); err != nil {
			dev.Close()
			return nil, nil, err
		}
		if err := tunnet.EnableForwarding(); err != nil {
			dev.Close()
			return nil, nil, err
		}
		n, err := nat.Install(cfg.Interface, OverlayPrefix)
		if err != nil {
			dev.Close()
			return nil, nil, err
		}
		return dev, func() {
			if err := n.Close(); err != nil {
				log.Warn("remove nat rules", "err", err)
			}
		}, nil
	}
	return nil, nil, fmt.Errorf("unknown --mode %q: use tun or userspace", cfg.Mode)
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

	// activityEvery is the map's ActivityInterval (nanoseconds; 0: the
	// controller wants no activity reports).
	activityEvery atomic.Int64

	mu       sync.Mutex
	want     []wgdev.Peer            // peers of the current map
	lingerer map[wgkey.Public]linger // peers removed from the map, kept for a while
	timer    *time.Timer
	closed   bool
}

type linger struct {
	peer  wgdev.Peer
	until time.Time
}

// onFrame applies a pushed map whole or not at all: the policy compiles
// first; only then do the authorizer and WireGuard move to it.
func (g *gw) onFrame(f *controlproto.Frame) error {
	if f.Type != controlproto.TypeGatewayMap {
		g.log.Warn("unexpected control frame; ignored", "type", f.Type)
		return nil
	}
	m := f.GatewayMap
	peers := make([]policy.Peer, len(m.Peers))
	want := make([]wgdev.Peer, len(m.Peers))
	for i, p := range m.Peers {
		peers[i] = p.Peer
		want[i] = wgdev.Peer{PublicKey: p.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.Addr, p.Addr.BitLen())}}
	}
	compiled, err := policy.Compile(m.Rules, peers)
	if err != nil {
		g.log.Error("map rejected: policy does not compile; keeping the previous one", "revision", m.Revision, "err", err)
		return fmt.Errorf("policy does not compile: %w", err)
	}
	if err := g.dns.SetMap(m.DNSZones, m.Apps); err != nil {
		g.log.Error("map rejected: DNS records do not apply; keeping the previous map", "revision", m.Revision, "err", err)
		return fmt.Errorf("dns records: %w", err)
	}
	// Policy first: flows the new map no longer allows are cut (with RSTs
	// to both ends) while their peers are still configured to carry them.
	g.authz.SetPolicy(compiled)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
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
	if err := g.reconcileLocked(now); err != nil {
		return err
	}
	g.activityEvery.Store(int64(m.ActivityInterval))
	g.log.Info("map applied", "revision", m.Revision, "peers", len(m.Peers), "rules", len(m.Rules), "apps", len(m.Apps))
	return nil
}

// reconcileLocked configures the map's peers plus the lingering ones and
// arms a timer for the next lingering peer to go.
func (g *gw) reconcileLocked(now time.Time) error {
	if g.closed {
		return nil
	}
	peers := slices.Clone(g.want)
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
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if !next.IsZero() {
		g.timer = time.AfterFunc(next.Sub(now), func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.reconcileLocked(time.Now())
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
)

// reportActivity tells the controller, every ActivityInterval, which
// devices sent app traffic since the last report and how long ago they
// last did, for the session idle limit. Reports are not resent when lost:
// the next one carries newer activity, and a session that ends for lack
// of news ends on the safe side.
func (g *gw) reportActivity(ctx context.Context, cc *controlclient.Client) {
	var mark flow.ActivityMark
	t := time.NewTimer(activityIdlePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		every := time.Duration(g.activityEvery.Load())
		if every <= 0 {
			t.Reset(activityIdlePoll)
			continue
		}
		every = min(max(every, minActivityEvery), maxActivityEvery)
		t.Reset(every)
		var act map[string]time.Duration
		act, mark = g.authz.Activity(mark)
		if len(act) == 0 {
			continue
		}
		rep := &controlproto.Activity{Devices: make([]controlproto.DeviceActivity, 0, len(act))}
		for id, idle := range act {
			rep.Devices = append(rep.Devices, controlproto.DeviceActivity{DeviceID: id, Idle: idle})
		}
		cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: rep})
	}
}

// reportFlows batches flow events to the controller.
func reportFlows(ctx context.Context, events <-chan controlproto.FlowEvent, cc *controlclient.Client) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var batch []controlproto.FlowEvent
	flush := func() {
		if len(batch) == 0 {
			return
		}
		cc.Send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{Events: batch}})
		batch = nil
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case e := <-events:
			batch = append(batch, e)
			if len(batch) >= 500 {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}
