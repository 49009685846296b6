package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/client/internal/flowtrack"
	"github.com/cordonhq/cordon/client/internal/proxy"
	"github.com/cordonhq/cordon/client/internal/sysdns"
	"github.com/cordonhq/cordon/internal/metricshttp"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/certrenew"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/netstack"
	"github.com/cordonhq/cordon/pkg/privdir"
	"github.com/cordonhq/cordon/pkg/tunnet"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// Modes.
const (
	ModeTUN       = "tun"
	ModeUserspace = "userspace"
)

// MTU is the tunnel device's MTU (a shell that opens the device sets it).
const MTU = netstack.DefaultMTU

// In tun mode the routes to the apps live in their own routing table,
// looked up by a rule ahead of the main table, so routes the local
// network pushes cannot pull app traffic out of the tunnel, and a crashed
// client leaves the apps blackholed rather than reachable in clear
// (tunnet.Link.Isolate; docs/security.md).
const (
	RouteTable   = 7380 // unused on stock Linux (main is 254, local 255)
	RulePriority = 5300 // ahead of main (32766); after local (0)
)

// ErrSessionEnded is returned by Up when the controller ended this device's
// enrollment (revoked or deleted).
var ErrSessionEnded = errors.New("your session ended: this device is no longer enrolled; sign in again with 'cordon login'")

// UpConfig configures Up.
type UpConfig struct {
	StateDir  string
	Mode      string
	Interface string
	SOCKSAddr string // userspace mode
	HTTPAddr  string // userspace mode
	// DNS is how tun mode points the system at the stub: sysdns.ModeAuto
	// (default), ModeResolved, ModeResolvConf or ModeNone.
	DNS        string
	ResolvConf string // resolv-conf mode; default /etc/resolv.conf
	Version    string
	Logger     *slog.Logger
	// PostureFile, if set, is a JSON posture report whose fields override
	// the collected ones (tests, diagnostics; see posture.go).
	PostureFile string
	// MetricsListen, if set, is a loopback HOST:PORT serving Prometheus
	// metrics and /healthz, /readyz (--metrics-listen).
	MetricsListen string

	// TUN, in tun mode, is a TUN device the caller already opened (a
	// mobile or desktop shell hands the core the file descriptor its OS
	// gave it); Up owns it from then on and closes it. Nil: Up creates
	// the device named Interface. Interface is then the device's name.
	TUN tun.Device
	// ShellNetwork, in tun mode, leaves the interface's address, routes
	// and the system's DNS settings to the shell that opened TUN (the OS
	// configured them when it gave the descriptor, as Android's
	// VpnService.Builder does): Up changes nothing on the host but the
	// packets through TUN, and serves the DNS stub on the overlay
	// address. The routes the shell must set are the AllowedIPs of the
	// status (OnStatus).
	ShellNetwork bool
	// PostureFacts, if set, returns a JSON posture report whose fields
	// override the collected ones at every collection, as PostureFile
	// does: the facts only an OS shell can know (core.SetPosture).
	PostureFacts func() []byte
	// OnStatus, if set, receives the status after every map applied and
	// whenever the control channel connects or drops. It must not block.
	OnStatus func(Status)
}

// tunnel is the running client. Its mutable view (map, status) is guarded by
// mu; the data path never takes it.
type tunnel struct {
	cfg  UpConfig
	log  *slog.Logger
	st   *agentstate.State
	wg   *wgdev.Device
	link *tunnet.Link // tun mode only
	cc   *controlclient.Client
	stub *dnsstub.Stub
	sys  sysdns.Manager // tun mode only
	maps *applier       // applies maps; under applyMu
	fo   *failover      // gateway liveness and each segment's gateway (failover.go)
	dial probeDialer    // through the tunnel, for probes
	// bind carries WireGuard over UDP or, per gateway, a TLS stream;
	// paths decides which (path.go).
	bind  *wgstream.Bind
	paths *paths

	applyMu sync.Mutex // serializes applying maps (control goroutine, failover)

	mu     sync.Mutex
	raw    *controlproto.ClientMap // as the controller sent it
	cm     *controlproto.ClientMap // as applied: each segment on its gateway (Resolve)
	dns    map[string]netip.Addr   // entitled app name → address
	routes []netip.Prefix          // of the current map (tun mode)
}

// routeResync is how often tun mode re-checks its routes against the
// kernel, putting back any that were flushed behind its back.
const routeResync = 30 * time.Second

func (t *tunnel) resyncRoutes(ctx context.Context) {
	tick := time.NewTicker(routeResync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		routes := t.routes
		t.mu.Unlock()
		if routes == nil {
			continue
		}
		if err := t.link.SyncRoutes(routes); err != nil {
			t.log.Warn("resync routes", "err", err)
		}
	}
}

// LookupHost resolves an internal name for the local proxy by asking the
// DNS server of the gateway serving it, through the tunnel, so the gateway
// decides what this device may see. Other names are not resolved at all:
// nothing goes to the system resolver, so internal names do not leak.
func (t *tunnel) LookupHost(name string) (netip.Addr, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	a, err := t.stub.LookupHost(ctx, name)
	return a, err == nil
}

// Up brings the tunnel up and runs until ctx ends, 'cordon down', or the
// controller ends the session.
func Up(ctx context.Context, cfg UpConfig) error {
	log := cfg.Logger
	var tunTaken bool                   // by the teardown, which closes it
	if given := cfg.TUN; given != nil { // Up owns it: closed on every early return
		defer func() {
			if !tunTaken {
				given.Close()
			}
		}()
		if cfg.Mode != ModeTUN {
			return fmt.Errorf("a tun device was given for mode %q: it is for tun mode only", cfg.Mode)
		}
	}
	if cfg.ShellNetwork {
		cfg.DNS = sysdns.ModeNone // the shell set the system's DNS
	}
	if err := privdir.Ensure(cfg.StateDir, log); err != nil { // the keys live here: owner only
		return fmt.Errorf("--state-dir: %w", err)
	}
	st, err := agentstate.Load(cfg.StateDir)
	if errors.Is(err, agentstate.ErrNotEnrolled) {
		return ErrNotSignedIn
	} else if err != nil {
		return err
	}
	e := st.Enrollment
	log = log.With("device", e.ID, "user", e.User)
	t := &tunnel{cfg: cfg, log: log, st: st}
	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		if metricsLn, err = listenMetrics(cfg.MetricsListen); err != nil {
			return err
		}
		defer metricsLn.Close() // if Up fails before serving it
	}
	if cfg.Mode == ModeTUN && !cfg.ShellNetwork {
		// A resolv.conf left pointing at the stub by a crashed run.
		if err := sysdns.Recover(cfg.StateDir, log); err != nil {
			log.Warn("restore resolv.conf from the last run", "err", err)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	// Teardown runs in this order: stop the control channel and proxies,
	// close WireGuard and the tun device, remove routes, and only then stop
	// the local socket, so 'cordon down' returns once the tunnel is gone.
	var workers, local sync.WaitGroup
	localCtx, stopLocal := context.WithCancel(context.Background())
	var dev tun.Device
	defer func() {
		cancel(nil)
		workers.Wait()
		if t.wg != nil {
			t.wg.Close() // closes dev too
		} else if dev != nil {
			dev.Close()
		}
		if t.link != nil {
			if err := t.link.Close(); err != nil {
				log.Warn("remove routes", "err", err)
			}
		}
		stopLocal()
		local.Wait()
	}()
	defer func() { // runs first: DNS is handed back while the tunnel is still up
		if t.sys != nil {
			if err := t.sys.Close(); err != nil {
				log.Warn("restore system DNS settings", "err", err)
			}
		}
		if t.stub != nil {
			t.stub.Close()
		}
	}()

	switch cfg.Mode {
	case ModeUserspace:
		// Loopback is allowed because app addresses may be on the gateway
		// host's loopback; WireGuard's cryptokey routing still admits only
		// the entitled app addresses from the gateway.
		ns, err := netstack.New(netstack.Config{
			Addrs: []netip.Addr{e.OverlayAddr}, MTU: MTU, Name: cfg.Interface, AllowLoopback: true,
			Logger: log.With("component", "netstack"),
		})
		if err != nil {
			return fmt.Errorf("start userspace network stack: %w", err)
		}
		dev = ns
		t.dial = ns
		t.stub = dnsstub.New(dnsstub.Config{Tunnel: ns, Logger: log.With("component", "dns")})
		for _, p := range []struct {
			addr string
			kind proxy.Kind
		}{{cfg.SOCKSAddr, proxy.SOCKS5}, {cfg.HTTPAddr, proxy.HTTP}} {
			if p.addr == "" {
				continue
			}
			ln, err := net.Listen("tcp", p.addr)
			if err != nil {
				return fmt.Errorf("listen for the local %s proxy on %s: %w", p.kind, p.addr, err)
			}
			srv := proxy.New(proxy.Config{Kind: p.kind, Dialer: ns, Resolver: t, Explainer: t, Logger: log.With("component", "proxy")})
			workers.Go(func() { srv.Serve(ctx, ln) })
			log.Info("local proxy listening", "kind", p.kind.String(), "addr", ln.Addr().String())
		}
	case ModeTUN:
		if dev, err = openTUN(cfg); err != nil {
			return err
		}
		tunTaken = true
		if cfg.TUN != nil { // named by the shell's OS
			if cfg.Interface, err = dev.Name(); err != nil {
				return fmt.Errorf("the tun device given: read its name: %w", err)
			}
			t.cfg.Interface = cfg.Interface
		}
		t.dial = &net.Dialer{}
		if !cfg.ShellNetwork {
			if t.link, err = tunnet.Configure(cfg.Interface, netip.PrefixFrom(e.OverlayAddr, 32), MTU); err != nil {
				return err
			}
			if err := t.link.Isolate(RouteTable, RulePriority); err != nil {
				return fmt.Errorf("%w (another program may use routing table %d or rule priority %d)", err, RouteTable, RulePriority)
			}
		}
		if err := t.startStub(e.OverlayAddr); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown --mode %q: use tun or userspace", cfg.Mode)
	}

	// WireGuard reads the host's packets through activityTUN, which notes
	// app traffic: gateways are probed only while there is some.
	act := &activityTUN{Device: dev, flows: flowtrack.New()}
	t.fo = newFailover(act)
	t.paths = newPaths(nil, log.With("component", "path"))
	t.bind = wgstream.NewBind(nil, wgstream.Options{Dial: streamDialer(st, t.paths), OnDialError: func(addr string, err error) {
		log.Warn("TLS to the gateway's TCP endpoint failed; retrying", "tcp_endpoint", addr, "err", err)
	}})
	t.paths.bind = t.bind
	wg, err := wgdev.New(act, wgdev.Options{Name: cfg.Interface, UAPI: cfg.Mode == ModeTUN && !cfg.ShellNetwork, Logger: log, Bind: t.bind})
	if err != nil {
		dev = nil // wgdev.New closed it
		return fmt.Errorf("start wireguard: %w", err)
	}
	t.wg = wg
	if _, err := t.wg.Reconfig(wgdev.Config{PrivateKey: st.WGKey}); err != nil {
		return fmt.Errorf("configure wireguard: %w", err)
	}
	t.maps = newApplier(st.WGKey, wg, t.stub) // both modes have a stub
	if t.link != nil {
		t.maps.rt = t.link
	}
	if t.sys != nil {
		t.maps.sys = t.sys
	}

	tlsConf, err := st.ClientTLS(controlproto.ALPN)
	if err != nil {
		return err
	}
	renewer, err := certrenew.New(certrenew.Config{State: st, Logger: log.With("component", "certrenew"),
		Remedy: "sign in again with 'cordon login', then run 'cordon up' again"})
	if err != nil {
		return err
	}
	t.cc = controlclient.New(controlclient.Config{
		Addr:    e.ControlAddr,
		TLS:     tlsConf,
		Renewer: renewer,
		Hello:   controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: cfg.Version},
		OnFrame: t.onFrame,
		OnState: func(bool) { t.notifyStatus() },
		Logger:  log.With("component", "control"),
	})
	ln, err := listenLocal(cfg.StateDir)
	if err != nil {
		return err
	}
	local.Go(func() { serveLocal(localCtx, ln, t, func() { cancel(errDown) }) })
	if t.link != nil {
		workers.Go(func() { t.resyncRoutes(ctx) })
	}
	workers.Go(func() { t.reportPosture(ctx) })
	workers.Go(func() { t.watchGateways(ctx) })
	workers.Go(func() { t.watchPaths(ctx) })
	if metricsLn != nil {
		reg := t.metricsRegistry(time.Now)
		workers.Go(func() { metricshttp.Serve(ctx, metricsLn, reg, t.ready, log.With("component", "metrics")) })
	}
	log.Info("tunnel starting", "mode", cfg.Mode, "overlay_addr", e.OverlayAddr)

	err = t.cc.Run(ctx)
	if errors.Is(err, controlclient.ErrRevoked) {
		return fmt.Errorf("%w (%v)", ErrSessionEnded, err)
	}
	if errors.Is(context.Cause(ctx), errDown) {
		log.Info("tunnel down on request")
	}
	return err
}

var errDown = errors.New("cordon down")

// openTUN opens tun mode's device: the one cfg.TUN the caller opened,
// else a new one named cfg.Interface.
func openTUN(cfg UpConfig) (tun.Device, error) {
	if cfg.TUN != nil {
		return cfg.TUN, nil
	}
	td, err := tun.CreateTUN(cfg.Interface, MTU)
	if err != nil {
		return nil, fmt.Errorf("create tun device %s (tun mode needs root or CAP_NET_ADMIN; use --mode userspace otherwise): %w", cfg.Interface, err)
	}
	return td, nil
}

// onFrame takes a map the controller pushed (a delta arrives here as the
// whole map it makes; see controlclient) and applies it whole or not at
// all (apply.go).
func (t *tunnel) onFrame(f *controlproto.Frame) error {
	if f.Type != controlproto.TypeClientMap {
		t.log.Warn("unexpected control frame; ignored", "type", f.Type)
		return nil
	}
	m := f.ClientMap
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	prev, c, err := t.applyLocked(m)
	if err != nil {
		t.log.Error("map rejected; keeping the previous one", "revision", m.Revision, "err", err)
		return err
	}
	names := slices.Sorted(maps.Keys(c.names))
	t.log.Info("map applied", "revision", m.Revision, "gateways", len(m.Gateways), "apps", names, "segments", t.fo.Current())
	var was *controlproto.SessionInfo
	if prev != nil {
		was = prev.Session
	}
	t.announceSession(was, m.Session)
	t.notifyStatus()
	return nil
}

// notifyStatus hands the status to UpConfig.OnStatus, if set.
func (t *tunnel) notifyStatus() {
	if t.cfg.OnStatus != nil {
		t.cfg.OnStatus(t.status())
	}
}

// announceSession tells the user, in the log of 'cordon up', when the
// session ended or an app asks for a fresh sign-in ('cordon status' shows
// the same).
func (t *tunnel) announceSession(was, now *controlproto.SessionInfo) {
	if now == nil {
		return
	}
	if now.State != controlproto.SessionActive {
		if was == nil || was.State != now.State || was.ID != now.ID {
			t.log.Warn("session ended: "+now.Message, "reason", now.Reason)
		}
		return
	}
	if was == nil || was.ID != now.ID {
		t.log.Info("session active", "session", now.ID, "expires", now.ExpiresAt, "idle_limit", now.IdleLimit)
	}
	for _, su := range now.StepUp {
		if was == nil || !slices.ContainsFunc(was.StepUp, func(o controlproto.StepUp) bool { return o.App == su.App }) {
			t.log.Warn("app "+su.App+" needs you to verify again: run 'cordon login' (the tunnel stays up)", "app", su.App)
		}
	}
}

// applyLocked applies map m (as the controller sent it) with each segment
// on the gateway failover picks, and returns the map applied before.
// Callers hold applyMu.
func (t *tunnel) applyLocked(m *controlproto.ClientMap) (prev *controlproto.ClientMap, c mapConfig, err error) {
	// The host's packets wait while segments may move, until WireGuard
	// routes them the new way (failover.go).
	release := sync.OnceFunc(t.fo.active.hold())
	defer release()
	t.maps.peersSet = release
	defer func() { t.maps.peersSet = nil }()
	t.fo.prune(m)
	t.paths.sync(m)
	now := time.Now()
	before := t.fo.Current()
	view := *m
	view.Gateways = slices.Clone(m.Resolve(func(sg controlproto.ClientSegment) string { return t.fo.pick(m, sg, now) }, true))
	for i, g := range view.Gateways {
		view.Gateways[i].Endpoint = t.paths.endpoint(g) // "tls://IP:port" on the TCP path
	}
	view.Segments = nil
	c, err = t.maps.apply(&view)
	if err != nil {
		return nil, c, err
	}
	t.fo.forgetMoved(m, before)
	t.mu.Lock()
	prev = t.cm
	t.raw, t.cm, t.dns, t.routes = m, &view, c.names, c.routes
	t.mu.Unlock()
	return prev, c, nil
}

// watchGateways probes the gateways of the current map while the device
// sends app traffic and moves segments off dead gateways (failover.go).
// Each probe runs on a goroutine of its own (at most DeadAfter/ProbeEvery
// per gateway in flight), waited for before it returns.
func (t *tunnel) watchGateways(ctx context.Context) {
	tick := time.NewTicker(ProbeEvery)
	defer tick.Stop()
	var probes sync.WaitGroup
	defer probes.Wait()
	spareEvery := int(SpareProbeEvery / ProbeEvery)
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		m := t.raw
		t.mu.Unlock()
		if m == nil || m.Segments == nil {
			continue // nothing to fail over (or a controller before capability 9)
		}
		now := time.Now()
		if t.fo.idle(now, ActiveWindow) {
			t.fo.pause()
		} else {
			n := 0
			for _, g := range m.Gateways {
				if n == maxProbeRound || !(round%spareEvery == 0 || t.fo.inUse(g.GatewayID)) {
					continue
				}
				n++
				t.fo.sent(g.GatewayID, now)
				t.paths.probeSent(g.GatewayID, now)
				probes.Go(func() {
					if err := probe(ctx, t.dial, g.OverlayAddr); err != nil {
						t.log.Debug("gateway probe unanswered", "gateway", g.GatewayID, "err", err)
					} else if t.fo.answered(g.GatewayID, time.Now()) {
						t.log.Info("gateway answering again", "gateway", g.GatewayID)
					}
				})
			}
			for _, id := range t.fo.check(now) {
				t.log.Warn("gateway not answering: moving its segments to the next gateway", "gateway", id, "dead_after", DeadAfter)
			}
		}
		if !t.fo.wantsMove(m, time.Now()) {
			continue
		}
		t.applyMu.Lock()
		t.mu.Lock()
		same := t.raw == m
		t.mu.Unlock()
		if same { // else a new map came meanwhile, applied with fresh choices
			before := t.fo.Current()
			if _, _, err := t.applyLocked(m); err != nil {
				t.log.Error("move segments to another gateway", "err", err)
			} else {
				t.log.Info("gateway failover applied", "from", before, "to", t.fo.Current())
			}
		}
		t.applyMu.Unlock()
	}
}
