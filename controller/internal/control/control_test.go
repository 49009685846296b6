package control_test

// In-process integration tests of the control channel: a real SQLite store,
// a real CA, control.Server on a loopback UDP socket, and agents that use
// pkg/controlclient with identities kept by pkg/agentstate, exactly as the
// gateway and client binaries do.
//
//	   nurse's device ──┐                      ┌── SQLite store (t.TempDir)
//	   (controlclient)  ├── QUIC, mutual TLS ──┤
//	   gateway gw-lan ──┘   127.0.0.1:random   └── CA (t.TempDir)
//	   (controlclient)          control.Server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// waitTimeout bounds every wait for something the controller should do.
// Pushes take milliseconds; the bound only matters when something is broken.
const waitTimeout = 10 * time.Second

// The controller's QUIC close codes (unexported in control.go); agents and
// these tests depend on their values.
const (
	codeNormal   quic.ApplicationErrorCode = 0
	codeRevoked  quic.ApplicationErrorCode = 1
	codeProtocol quic.ApplicationErrorCode = 2
)

// gwEndpoint is the WireGuard endpoint gateways announce in their hello.
const gwEndpoint = "127.0.0.1:51820"

var (
	pfx     = netip.MustParsePrefix
	ehrAddr = pfx("10.20.0.10/32")
	billing = pfx("10.20.0.11/32")
	pharm   = pfx("10.20.0.12/32")
)

// countingStore counts Snapshot calls: each recompute takes exactly one, so
// the count tells a test when a recompute it asked for has run. It also
// keeps how long the last one took, to break push latency down.
type countingStore struct {
	store.Store
	snapshots atomic.Int64
	lastTook  atomic.Int64 // time.Duration
}

func (s *countingStore) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	s.snapshots.Add(1)
	start := time.Now()
	defer func() { s.lastTook.Store(int64(time.Since(start))) }()
	return s.Store.Snapshot(ctx)
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type harness struct {
	ctx   context.Context
	store *countingStore
	ca    *ca.CA
	srv   *control.Server
	addr  string
	log   *syncBuffer
}

// newHarness starts a controller on loopback with an empty store. Cleanup
// stops it and checks that Serve returned nil.
func newHarness(t *testing.T, opts ...func(*control.Config)) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	authority, err := ca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := authority.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{ctx: ctx, store: &countingStore{Store: storetest.CheckAudit(t, db)}, ca: authority, log: &syncBuffer{}}
	cfg := control.Config{
		Store: h.store, CA: authority, ServerCert: cert,
		Logger: slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h.srv = control.New(cfg)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = pc.LocalAddr().String()
	served := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() { served <- h.srv.Serve(sctx, pc) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %v of its context ending", waitTimeout)
		}
		pc.Close()
		if t.Failed() {
			lines := strings.Split(h.log.String(), "\n")
			t.Logf("controller log (last %d lines):\n%s", min(len(lines), 100), strings.Join(lines[max(0, len(lines)-100):], "\n"))
		}
	})
	return h
}

// world is the directory most tests use:
//
//	segment lan 10.20.0.0/24
//	apps      ehr .10 tcp/443, billing .11 tcp/80, pharmacy .12 tcp/8443
//	groups    clinicians{nurse} billing{nurse} pharmacists{clerk}
//	rules     clin-ehr, bill-billing, pharm-pharmacy
//	devices   dev-nurse, dev-clerk, dev-visitor (visitor has no rule)
func (h *harness) world(t *testing.T) {
	t.Helper()
	ctx := h.ctx
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.store.CreateSegment(ctx, store.Segment{Name: "lan", CIDRs: []netip.Prefix{pfx("10.20.0.0/24")}}))
	for _, a := range []store.App{
		{Name: "ehr", Segment: "lan", DNSName: "ehr.h.internal", Addr: ehrAddr, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
		{Name: "billing", Segment: "lan", DNSName: "billing.h.internal", Addr: billing, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 80, Last: 80}}},
		{Name: "pharmacy", Segment: "lan", DNSName: "pharmacy.h.internal", Addr: pharm, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 8443, Last: 8443}}},
	} {
		must(h.store.CreateApp(ctx, a))
	}
	for _, u := range []string{"nurse", "clerk", "visitor"} {
		must(h.store.CreateUser(ctx, store.User{Name: u}))
	}
	for g, members := range map[string][]string{"clinicians": {"nurse"}, "billing": {"nurse"}, "pharmacists": {"clerk"}} {
		must(h.store.CreateGroup(ctx, store.Group{Name: g, Members: members}))
	}
	for _, r := range []store.Rule{
		{Name: "clin-ehr", Group: "clinicians", App: "ehr"},
		{Name: "bill-billing", Group: "billing", App: "billing"},
		{Name: "pharm-pharmacy", Group: "pharmacists", App: "pharmacy"},
	} {
		must(h.store.CreateRule(ctx, r))
	}
}

// enroll creates an agent identity in its own state directory, signed by
// authority (normally the controller's CA), and returns its TLS config.
func enroll(t *testing.T, authority *ca.CA, id, kind string) (*agentstate.State, *tls.Config) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), id))
	if err != nil {
		t.Fatal(err)
	}
	return enrollWithState(t, authority, st, id, kind)
}

// enrollGateway redeems an enrollment token for segment, as the API does,
// and returns the stored gateway (no endpoint yet) and its TLS config.
func (h *harness) enrollGateway(t *testing.T, id, segment string) (store.Gateway, *tls.Config) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), id))
	if err != nil {
		t.Fatal(err)
	}
	secret := sha256.Sum256([]byte("token for " + id))
	if err := h.store.CreateEnrollToken(h.ctx, store.EnrollToken{Hash: secret[:], Segment: segment, Name: id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	gw, err := h.store.RedeemEnrollToken(h.ctx, secret[:], time.Now(), store.Gateway{ID: id, PublicKey: st.WGKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	_, tc := enrollWithState(t, h.ca, st, id, ca.KindGateway)
	return gw, tc
}

// enrollWithState has authority sign st's CSR as id of kind and saves the
// enrollment, as the enroll and login flows do.
func enrollWithState(t *testing.T, authority *ca.CA, st *agentstate.State, id, kind string) (*agentstate.State, *tls.Config) {
	t.Helper()
	csr, err := st.CSR("hint-" + id) // the controller ignores the subject
	if err != nil {
		t.Fatal(err)
	}
	cert, err := authority.IssueAgentCert(csr, id, kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveEnrollment(agentstate.Enrollment{ID: id}, []byte(cert), authority.CertPEM()); err != nil {
		t.Fatal(err)
	}
	tc, err := st.ClientTLS(controlproto.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	return st, tc
}

// enrollDevice creates a device of user, as a login does.
func (h *harness) enrollDevice(t *testing.T, id, user string) (store.Device, *tls.Config) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), id))
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.store.CreateDevice(h.ctx, store.Device{ID: id, User: user, Hostname: id, PublicKey: st.WGKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	_, tc := enrollWithState(t, h.ca, st, id, ca.KindClient)
	return d, tc
}

// recomputed returns once a whole recompute that began after the call has
// finished: recomputes run one at a time, each takes one snapshot, so when
// the one after ours has started, ours is done.
func (h *harness) recomputed(t *testing.T) {
	t.Helper()
	n := h.store.snapshots.Load()
	for i := int64(1); i <= 2; i++ {
		h.srv.Changed(store.Change{All: true})
		waitUntil(t, fmt.Sprintf("recompute %d after the change", i), func() bool { return h.store.snapshots.Load() >= n+i })
	}
}

// waitUntil polls cond until it holds or waitTimeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("%s: not within %v", what, waitTimeout)
		case <-tick.C:
		}
	}
}

// received is a frame an agent got, and when.
type received struct {
	at time.Time
	f  *controlproto.Frame
}

// runningAgent is a controlclient.Client running against the harness.
type runningAgent struct {
	name string
	cc   *controlclient.Client

	mu     sync.Mutex
	frames []received
	wake   chan struct{}

	stop   context.CancelFunc // ends Run's context
	exited chan struct{}
	err    error // Run's result, valid once exited is closed
}

func (h *harness) start(t *testing.T, name string, tc *tls.Config, hello controlproto.Hello) *runningAgent {
	t.Helper()
	a := &runningAgent{name: name, wake: make(chan struct{}, 1), exited: make(chan struct{})}
	a.cc = controlclient.New(controlclient.Config{
		Addr: h.addr, TLS: tc, Hello: hello,
		OnFrame: func(f *controlproto.Frame) error {
			now := time.Now()
			a.mu.Lock()
			a.frames = append(a.frames, received{at: now, f: f})
			a.mu.Unlock()
			select {
			case a.wake <- struct{}{}:
			default:
			}
			return nil // applied: controlclient acknowledges it
		},
	})
	ctx, cancel := context.WithCancel(h.ctx)
	a.stop = cancel
	go func() {
		defer close(a.exited)
		a.err = a.cc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.exited:
		case <-time.After(waitTimeout):
			t.Errorf("%s: Run did not return within %v of its context ending", name, waitTimeout)
		}
	})
	return a
}

func (a *runningAgent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.frames)
}

// waitFrame returns the first frame at index >= from that satisfies ok,
// and its index.
func (a *runningAgent) waitFrame(t *testing.T, from int, what string, ok func(*controlproto.Frame) bool) (int, received) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		for i := from; i < len(a.frames); i++ {
			if ok(a.frames[i].f) {
				r := a.frames[i]
				a.mu.Unlock()
				return i, r
			}
		}
		last := "none"
		if n := len(a.frames); n > 0 {
			last = summary(a.frames[n-1].f)
		}
		a.mu.Unlock()
		select {
		case <-a.wake:
		case <-a.exited:
			t.Fatalf("%s: Run returned %v while waiting for %s", a.name, a.err, what)
		case <-timer.C:
			t.Fatalf("%s: no %s within %v; last frame: %s", a.name, what, waitTimeout, last)
		}
	}
}

// runErr waits for Run to return and returns its error.
func (a *runningAgent) runErr(t *testing.T) error {
	t.Helper()
	select {
	case <-a.exited:
		return a.err
	case <-time.After(waitTimeout):
		t.Fatalf("%s: Run still running after %v", a.name, waitTimeout)
		return nil
	}
}

func summary(f *controlproto.Frame) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// peerRules returns the rules of device in m and whether it is a peer.
func peerRules(m *controlproto.GatewayMap, device string) ([]policy.RuleID, bool) {
	for _, p := range m.Peers {
		if p.DeviceID == device {
			return p.Rules, true
		}
	}
	return nil, false
}

func isPeer(m *controlproto.GatewayMap, device string) bool {
	_, ok := peerRules(m, device)
	return ok
}

// allowedIPs is what the client routes through gatewayID when it puts
// each segment on the first gateway of its order.
func allowedIPs(m *controlproto.ClientMap, gatewayID string) []netip.Prefix {
	for _, g := range m.Resolve(controlproto.First, false) {
		if g.GatewayID == gatewayID {
			return g.AllowedIPs
		}
	}
	return nil
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// The gateway is told exactly the entitled devices and the client exactly
// its entitled app addresses; when an entitlement goes, both are pushed new
// maps (and the push latency is logged); a recompute that changes nothing
// sends nothing.
func TestMapsFollowDirectory(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	gw, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	nurseDev, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	clerkDev, _ := h.enrollDevice(t, "dev-clerk", "clerk")
	h.enrollDevice(t, "dev-visitor", "visitor")

	gwA := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint})
	_, first := gwA.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	m := first.f.GatewayMap
	if m.GatewayID != gw.ID || m.OverlayAddr != gw.OverlayAddr {
		t.Errorf("gateway map for %s %s, want %s %s", m.GatewayID, m.OverlayAddr, gw.ID, gw.OverlayAddr)
	}
	var peers []string
	for _, p := range m.Peers {
		peers = append(peers, p.DeviceID)
	}
	// Who must NOT be a peer: the visitor has no rule.
	if !slices.Equal(peers, []string{"dev-clerk", "dev-nurse"}) {
		t.Fatalf("gateway peers = %v, want [dev-clerk dev-nurse] (dev-visitor is entitled to nothing)", peers)
	}
	for _, p := range m.Peers {
		want := map[string]struct {
			addr netip.Addr
			key  string
		}{"dev-nurse": {nurseDev.OverlayAddr, nurseDev.PublicKey.String()}, "dev-clerk": {clerkDev.OverlayAddr, clerkDev.PublicKey.String()}}[p.DeviceID]
		if p.Addr != want.addr || p.PublicKey.String() != want.key {
			t.Errorf("peer %s: addr %s key %s, want %s %s", p.DeviceID, p.Addr, p.PublicKey, want.addr, want.key)
		}
	}
	if got, _ := peerRules(m, "dev-nurse"); !slices.Equal(got, []policy.RuleID{"bill-billing", "clin-ehr"}) {
		t.Errorf("nurse's rules at the gateway = %v, want [bill-billing clin-ehr]", got)
	}

	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	wantAllowed := []netip.Prefix{ehrAddr, billing, host(gw.OverlayAddr)}
	_, cm := nurse.waitFrame(t, 0, "client map routing ehr and billing via gw-lan", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeClientMap && len(f.ClientMap.Gateways) > 0
	})
	if got := cm.f.ClientMap; len(got.Gateways) != 1 || got.Gateways[0].GatewayID != gw.ID || got.Gateways[0].Endpoint != gwEndpoint ||
		got.DeviceID != nurseDev.ID || got.OverlayAddr != nurseDev.OverlayAddr || got.User != "nurse" {
		t.Fatalf("nurse's client map = %s", summary(cm.f))
	}
	// pharmacy (10.20.0.12) is in the same segment but not the nurse's.
	if got := allowedIPs(cm.f.ClientMap, gw.ID); !slices.Equal(got, wantAllowed) {
		t.Fatalf("nurse's AllowedIPs = %v, want exactly %v (not pharmacy %v)", got, wantAllowed, pharm)
	}

	steps := []struct {
		group, user string
		wantRules   []policy.RuleID // nurse's rules at the gateway; nil: no longer a peer
		wantAllowed []netip.Prefix  // toward gw-lan; nil: gateway gone from the map
	}{
		{"clinicians", "nurse", []policy.RuleID{"bill-billing"}, []netip.Prefix{billing, host(gw.OverlayAddr)}},
		{"billing", "nurse", nil, nil},
	}
	gwNext, nurseNext := gwA.count(), nurse.count()
	for _, s := range steps {
		if err := h.store.RemoveMember(h.ctx, s.group, s.user); err != nil {
			t.Fatal(err)
		}
		changed := time.Now()
		h.srv.Changed(store.Change{Users: []string{s.user}, Groups: []string{s.group}})
		i, g := gwA.waitFrame(t, gwNext, fmt.Sprintf("gateway map with nurse's rules %v", s.wantRules), func(f *controlproto.Frame) bool {
			if f.Type != controlproto.TypeGatewayMap {
				return false
			}
			rules, ok := peerRules(f.GatewayMap, "dev-nurse")
			return ok == (s.wantRules != nil) && slices.Equal(rules, s.wantRules)
		})
		gwNext = i + 1
		j, c := nurse.waitFrame(t, nurseNext, fmt.Sprintf("client map with AllowedIPs %v", s.wantAllowed), func(f *controlproto.Frame) bool {
			if f.Type != controlproto.TypeClientMap {
				return false
			}
			if s.wantAllowed == nil {
				return len(f.ClientMap.Gateways) == 0
			}
			return slices.Equal(allowedIPs(f.ClientMap, gw.ID), s.wantAllowed)
		})
		nurseNext = j + 1
		t.Logf("remove %s from %s: push latency (Changed to OnFrame) gateway %v, client %v; of which store snapshot %v",
			s.user, s.group, g.at.Sub(changed), c.at.Sub(changed), time.Duration(h.store.lastTook.Load()))
		// Gateways apply first; clients get their maps after the acks.
		if c.at.Before(g.at) {
			t.Errorf("client got its map %v before the gateway got its own", g.at.Sub(c.at))
		}
		if !isPeer(g.f.GatewayMap, "dev-clerk") {
			t.Errorf("after removing %s from %s, dev-clerk is no longer a peer: %s", s.user, s.group, summary(g.f))
		}
	}
	// Nothing changed: recomputing must send nobody anything.
	gwBefore, nurseBefore := gwA.count(), nurse.count()
	h.recomputed(t)
	h.recomputed(t)
	// Barrier: a real change afterwards must be the very next frame each
	// agent gets. A resend of an unchanged map would arrive before it.
	if err := h.store.AddMember(h.ctx, "clinicians", "nurse"); err != nil {
		t.Fatal(err)
	}
	h.srv.Changed(store.Change{Users: []string{"nurse"}, Groups: []string{"clinicians"}})
	i, _ := gwA.waitFrame(t, gwBefore, "gateway map with the nurse back", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeGatewayMap && isPeer(f.GatewayMap, "dev-nurse")
	})
	j, _ := nurse.waitFrame(t, nurseBefore, "client map with ehr back", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeClientMap && slices.Contains(allowedIPs(f.ClientMap, gw.ID), ehrAddr)
	})
	if i != gwBefore || j != nurseBefore {
		t.Errorf("unchanged recomputes sent %d frames to the gateway and %d to the client, want 0", i-gwBefore, j-nurseBefore)
	}
}

// A gateway's hello endpoint is stored (clients dial it); an invalid one is
// ignored and the stored one kept.
func TestGatewayEndpointFromHello(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	tests := []struct {
		name, stored, hello, want string
	}{
		{"set", "", gwEndpoint, gwEndpoint},
		{"changed", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2"},
		{"invalid ignored", "127.0.0.1:3", "no port here", "127.0.0.1:3"},
		{"empty keeps stored", "127.0.0.1:4", "", "127.0.0.1:4"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("gw-%d", i)
			_, tc := h.enrollGateway(t, id, "lan")
			if tt.stored != "" {
				if err := h.store.UpdateGatewayEndpoint(h.ctx, id, tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			a := h.start(t, id, tc, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: tt.hello})
			// The endpoint is stored before the first map is pushed.
			a.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
			got, err := h.store.GetGateway(h.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Endpoint != tt.want {
				t.Errorf("stored endpoint = %q, want %q", got.Endpoint, tt.want)
			}
		})
	}
}

// rawAgent is a hand-driven control connection, for sending what a real
// agent never would.
type rawAgent struct {
	conn   *quic.Conn
	stream *quic.Stream
	// The maps last read by readMap, which deltas apply to.
	gatewayMap *controlproto.GatewayMap
	clientMap  *controlproto.ClientMap
}

func dialRaw(t *testing.T, h *harness, tc *tls.Config) (*rawAgent, error) {
	t.Helper()
	tc = tc.Clone()
	tc.ServerName = "127.0.0.1"
	ctx, cancel := context.WithTimeout(h.ctx, waitTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, h.addr, tc, control.QUICConfig())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &rawAgent{conn: conn, stream: s}, nil
}

func (r *rawAgent) write(body []byte) error {
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	_, err := r.stream.Write(append(buf, body...))
	return err
}

func (r *rawAgent) writeFrame(f *controlproto.Frame) error {
	return controlproto.WriteFrame(r.stream, f)
}

// closedWith waits for the controller to close the connection and returns
// its application error.
func (r *rawAgent) closedWith(t *testing.T) *quic.ApplicationError {
	t.Helper()
	select {
	case <-r.conn.Context().Done():
	case <-time.After(waitTimeout):
		t.Fatalf("controller did not close the connection within %v", waitTimeout)
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(r.conn.Context()); !errors.As(err, &appErr) || !appErr.Remote {
		t.Fatalf("connection ended with %v, want an application error from the controller", err)
	}
	return appErr
}

// The first frame must be a hello of the kind the certificate names, with a
// capability version the controller speaks; anything else is closed with a
// protocol error and never registered.
func TestRejectsBadHello(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, devTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	helloBody := func(kind controlproto.AgentKind, capVersion int) []byte {
		b, err := json.Marshal(controlproto.Frame{Type: controlproto.TypeHello, Hello: &controlproto.Hello{Kind: kind, CapabilityVersion: capVersion, Endpoint: "127.0.0.1:9"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		tls  *tls.Config
		body []byte
	}{
		{"client cert says gateway", devTLS, helloBody(controlproto.KindGateway, controlproto.CapabilityVersion)},
		{"gateway cert says client", gwTLS, helloBody(controlproto.KindClient, controlproto.CapabilityVersion)},
		{"unknown kind", gwTLS, helloBody("admin", controlproto.CapabilityVersion)},
		{"capability version 0", gwTLS, helloBody(controlproto.KindGateway, 0)},
		{"flow events first", gwTLS, []byte(`{"type":"flow_events","flow_events":{"events":[]}}`)},
		{"not json", devTLS, []byte(`{"type":`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := dialRaw(t, h, tt.tls)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.write(tt.body); err != nil {
				t.Fatal(err)
			}
			appErr := r.closedWith(t)
			if appErr.ErrorCode != codeProtocol {
				t.Errorf("closed with %v, want protocol error %d", appErr, codeProtocol)
			}
			if got := h.srv.Connected(); len(got) != 0 {
				t.Errorf("Connected() = %v after a rejected hello", got)
			}
		})
	}
	gw, err := h.store.GetGateway(h.ctx, "gw-lan")
	if err != nil {
		t.Fatal(err)
	}
	if gw.Endpoint != "" {
		t.Errorf("a rejected hello stored endpoint %q", gw.Endpoint)
	}
}

// A certificate the controller's CA did not sign is refused in the TLS
// handshake, even when it names an enrolled gateway.
func TestRejectsForeignCA(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	h.enrollGateway(t, "gw-lan", "lan")
	other, err := ca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, forged := enroll(t, other, "gw-lan", ca.KindGateway)
	// The agent still pins the real controller CA, so only the client
	// certificate is foreign.
	forged.RootCAs = h.ca.Pool()

	r, err := dialRaw(t, h, forged)
	if err == nil {
		// TLS 1.3: the client may finish its side before the server has
		// checked the client certificate; the refusal then ends the
		// connection.
		if werr := r.write(hello(t, controlproto.KindGateway)); werr == nil {
			_, err = r.stream.Read(make([]byte, 1))
		} else {
			err = werr
		}
	}
	var terr *quic.TransportError
	if !errors.As(err, &terr) || !terr.ErrorCode.IsCryptoError() {
		t.Fatalf("connection with a foreign certificate ended with %v, want a TLS alert", err)
	}
	if got := h.srv.Connected(); len(got) != 0 {
		t.Errorf("Connected() = %v with a foreign certificate", got)
	}
	gw, err := h.store.GetGateway(h.ctx, "gw-lan")
	if err != nil {
		t.Fatal(err)
	}
	if gw.Endpoint != "" {
		t.Errorf("a forged gateway stored endpoint %q", gw.Endpoint)
	}
}

func hello(t *testing.T, kind controlproto.AgentKind) []byte {
	t.Helper()
	b, err := json.Marshal(controlproto.Frame{Type: controlproto.TypeHello, Hello: &controlproto.Hello{Kind: kind, CapabilityVersion: controlproto.CapabilityVersion, Endpoint: "127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Deleting a connected agent ends its Run with ErrRevoked, and so does
// connecting again afterwards.
func TestDeletedAgentIsRevoked(t *testing.T) {
	changeOf := func(kind controlproto.AgentKind, id string) store.Change {
		if kind == controlproto.KindGateway {
			return store.Change{Gateways: []string{id}}
		}
		return store.Change{Devices: []string{id}}
	}
	tests := []struct {
		name   string
		kind   controlproto.AgentKind
		enroll func(h *harness, t *testing.T) (string, *tls.Config)
		delete func(h *harness, id string) error
	}{
		{
			name: "device", kind: controlproto.KindClient,
			enroll: func(h *harness, t *testing.T) (string, *tls.Config) {
				d, tc := h.enrollDevice(t, "dev-nurse", "nurse")
				return d.ID, tc
			},
			delete: func(h *harness, id string) error { return h.store.DeleteDevice(h.ctx, id) },
		},
		{
			name: "gateway", kind: controlproto.KindGateway,
			enroll: func(h *harness, t *testing.T) (string, *tls.Config) {
				g, tc := h.enrollGateway(t, "gw-lan", "lan")
				return g.ID, tc
			},
			delete: func(h *harness, id string) error { return h.store.DeleteGateway(h.ctx, id) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.world(t)
			id, tc := tt.enroll(h, t)
			a := h.start(t, tt.name, tc, controlproto.Hello{Kind: tt.kind, Endpoint: gwEndpoint})
			a.waitFrame(t, 0, "first map", func(*controlproto.Frame) bool { return true })
			if err := tt.delete(h, id); err != nil {
				t.Fatal(err)
			}
			h.srv.Changed(changeOf(tt.kind, id))
			if err := a.runErr(t); !errors.Is(err, controlclient.ErrRevoked) {
				t.Fatalf("Run after deletion = %v, want ErrRevoked", err)
			}
			waitUntil(t, "agent unregistered", func() bool { return !slices.Contains(h.srv.Connected(), id) })

			again := h.start(t, tt.name+" again", tc, controlproto.Hello{Kind: tt.kind})
			if err := again.runErr(t); !errors.Is(err, controlclient.ErrRevoked) {
				t.Fatalf("Run of a deleted agent = %v, want ErrRevoked", err)
			}
			if n := again.count(); n != 0 {
				t.Errorf("a deleted agent received %d frames", n)
			}
		})
	}
}

// Flow events a gateway reports become flow.* audit events carrying who,
// which device and which rule; a client cannot write the audit trail.
func TestFlowEventsBecomeAudit(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, devTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	gwA := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint})
	nurse := h.start(t, "nurse", devTLS, controlproto.Hello{Kind: controlproto.KindClient})
	gwA.waitFrame(t, 0, "gateway map", func(*controlproto.Frame) bool { return true })
	nurse.waitFrame(t, 0, "client map", func(*controlproto.Frame) bool { return true })

	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	src := netip.MustParseAddrPort("100.64.0.2:40000")
	// Sent by the client first: it must be ignored.
	if !nurse.cc.Send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{Events: []controlproto.FlowEvent{
		{Time: at, Action: controlproto.FlowAllow, DeviceID: "dev-nurse", User: "forged", App: "pharmacy", Proto: policy.ProtoTCP, Src: src, Dst: netip.MustParseAddrPort("10.20.0.12:8443")},
	}}}) {
		t.Fatal("client Send dropped the frame")
	}
	events := []controlproto.FlowEvent{
		{Time: at, Action: controlproto.FlowAllow, DeviceID: "dev-nurse", User: "nurse", App: "ehr", Rule: "clin-ehr", Proto: policy.ProtoTCP, Src: src, Dst: netip.MustParseAddrPort("10.20.0.10:443")},
		{Time: at.Add(time.Second), Action: controlproto.FlowDeny, DeviceID: "dev-nurse", User: "nurse", Reason: "no rule", Proto: policy.ProtoUDP, Src: src, Dst: netip.MustParseAddrPort("10.20.0.12:53")},
		{Time: at.Add(2 * time.Second), Action: "explode", Proto: policy.ProtoTCP, Src: src, Dst: netip.MustParseAddrPort("10.20.0.10:443")},
	}
	if !gwA.cc.Send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{Events: events}}) {
		t.Fatal("gateway Send dropped the frame")
	}
	var got []store.AuditEvent
	waitUntil(t, "two flow audit events", func() bool {
		var err error
		got, err = h.store.ListAudit(h.ctx, store.AuditFilter{Type: "flow."})
		if err != nil {
			t.Fatal(err)
		}
		return len(got) >= 2
	})
	slices.Reverse(got) // oldest first
	want := []store.AuditEvent{
		{Time: at, Type: "flow.allow", Actor: "gateway:gw-lan", Outcome: "allow", Subject: "ehr", Details: map[string]string{
			"proto": "tcp", "src": src.String(), "dst": "10.20.0.10:443", "gateway": "gw-lan", "user": "nurse", "device": "dev-nurse", "rule": "clin-ehr"}},
		{Time: at.Add(time.Second), Type: "flow.deny", Actor: "gateway:gw-lan", Outcome: "deny", Subject: "10.20.0.12:53", Details: map[string]string{
			"proto": "udp", "src": src.String(), "dst": "10.20.0.12:53", "gateway": "gw-lan", "user": "nurse", "device": "dev-nurse", "reason": "no rule"}},
	}
	if len(got) != len(want) {
		t.Fatalf("audit has %d flow events, want %d (the client's and the unknown action must be dropped):\n%+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Time.Equal(w.Time) || g.Type != w.Type || g.Actor != w.Actor || g.Outcome != w.Outcome || g.Subject != w.Subject || !mapsEqual(g.Details, w.Details) {
			t.Errorf("audit event %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// A flood of frames the controller does not expect never takes it down:
// an undecodable type closes that one connection; well-formed frames of the
// wrong direction are dropped and the connection stays usable. Other agents
// keep getting their maps either way.
func TestFrameFloodDoesNotCrash(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	h.enrollDevice(t, "dev-clerk", "clerk")
	gwA := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint})
	gwA.waitFrame(t, 0, "gateway map", func(*controlproto.Frame) bool { return true })

	mapFrame, err := json.Marshal(controlproto.Frame{Type: controlproto.TypeClientMap, ClientMap: &controlproto.ClientMap{DeviceID: "dev-x"}})
	if err != nil {
		t.Fatal(err)
	}
	flowFrame, err := json.Marshal(controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{Events: []controlproto.FlowEvent{{Action: controlproto.FlowAllow, Proto: policy.ProtoTCP}}}})
	if err != nil {
		t.Fatal(err)
	}
	const flood = 2000
	tests := []struct {
		name       string
		body       []byte
		wantClosed bool
	}{
		{"unknown type", []byte(`{"type":"bogus","x":1}`), true},
		{"map sent up", mapFrame, false},
		{"flow events from a client", flowFrame, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("dev-flood-%d", i)
			_, tc := h.enrollDevice(t, id, "nurse")
			r, err := dialRaw(t, h, tc)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.write(hello(t, controlproto.KindClient)); err != nil {
				t.Fatal(err)
			}
			// A map arrives once the hello is accepted.
			if f, err := r.readMap(); err != nil || f.Type != controlproto.TypeClientMap {
				t.Fatalf("first frame after hello: %v %v", f, err)
			}
			var werr error
			for range flood {
				if werr = r.write(tt.body); werr != nil {
					break
				}
			}
			if tt.wantClosed {
				if appErr := r.closedWith(t); appErr.ErrorCode != codeNormal && appErr.ErrorCode != codeProtocol {
					t.Errorf("closed with %v", appErr)
				}
				waitUntil(t, "flooding agent unregistered", func() bool { return !slices.Contains(h.srv.Connected(), id) })
			} else {
				if werr != nil {
					t.Fatalf("controller stopped reading after dropped frames: %v", werr)
				}
				// Still served: a change reaches this connection.
				if err := h.store.AddMember(h.ctx, "pharmacists", "nurse"); err != nil {
					t.Fatal(err)
				}
				change := store.Change{Users: []string{"nurse"}, Groups: []string{"pharmacists"}}
				t.Cleanup(func() {
					// Published, as the state owner does: the server
					// patches what a change names into its last snapshot.
					h.store.RemoveMember(h.ctx, "pharmacists", "nurse")
					h.srv.Changed(change)
				})
				h.srv.Changed(change)
				for {
					f, err := r.readMap()
					if err != nil {
						t.Fatalf("connection after %d dropped frames: %v", flood, err)
					}
					if f.Type == controlproto.TypeClientMap && slices.Contains(allowedIPs(f.ClientMap, "gw-lan"), pharm) {
						break
					}
				}
			}
			// Other agents are still served.
			next := gwA.count()
			if err := h.store.AddMember(h.ctx, "billing", "clerk"); err != nil {
				t.Fatal(err)
			}
			h.srv.Changed(store.Change{Users: []string{"clerk"}, Groups: []string{"billing"}})
			gwA.waitFrame(t, next, "gateway map after the flood", func(f *controlproto.Frame) bool {
				if f.Type != controlproto.TypeGatewayMap {
					return false
				}
				rules, _ := peerRules(f.GatewayMap, "dev-clerk")
				return slices.Contains(rules, "bill-billing")
			})
			if err := h.store.RemoveMember(h.ctx, "billing", "clerk"); err != nil {
				t.Fatal(err)
			}
			h.srv.Changed(store.Change{Users: []string{"clerk"}, Groups: []string{"billing"}})
			evs, err := h.store.ListAudit(h.ctx, store.AuditFilter{Type: "flow."})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 0 {
				t.Errorf("a client's frames wrote %d flow audit events", len(evs))
			}
		})
	}
	if !strings.Contains(h.log.String(), "unexpected control frame") {
		t.Errorf("dropped frames were not logged")
	}
}

func readFrame(r *rawAgent) (*controlproto.Frame, error) {
	r.stream.SetReadDeadline(time.Now().Add(waitTimeout))
	defer r.stream.SetReadDeadline(time.Time{})
	return controlproto.ReadFrame(r.stream)
}

// Serve honours its contract: when its context ends it returns, even with
// agents connected (they are told to reconnect, not that they are revoked).
func TestServeReturnsWithAgentsConnected(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	// A second server on its own socket and context, so the harness's
	// cleanup is not what is tested.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cert, err := h.ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := control.New(control.Config{Store: h.store, CA: h.ca, ServerCert: cert})
	ctx, cancel := context.WithCancel(h.ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, pc) }()
	h2 := &harness{ctx: h.ctx, addr: pc.LocalAddr().String()}
	r2, err := dialRaw(t, h2, gwTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.write(hello(t, controlproto.KindGateway)); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(r2); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Serve did not return within %v of its context ending while an agent was connected", waitTimeout)
	}
	if appErr := r2.closedWith(t); appErr.ErrorCode == codeRevoked {
		t.Errorf("shutdown told the agent it was revoked: %v", appErr)
	}
}

// An agent's Run returns nil soon after its context ends, while connected
// (SIGTERM of a gateway or 'cordon down' must not wait for the controller),
// and the controller forgets it.
func TestAgentRunReturnsOnCancel(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, devTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	tests := []struct {
		name  string
		id    string
		tls   *tls.Config
		hello controlproto.Hello
	}{
		{"gateway", "gw-lan", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint}},
		{"client", "dev-nurse", devTLS, controlproto.Hello{Kind: controlproto.KindClient}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := h.start(t, tt.name, tt.tls, tt.hello)
			a.waitFrame(t, 0, "first map", func(*controlproto.Frame) bool { return true })
			if !a.cc.Connected() {
				t.Fatal("Connected() = false after a map arrived")
			}
			stopped := time.Now()
			a.stop()
			if err := a.runErr(t); err != nil {
				t.Errorf("Run after its context ended = %v, want nil", err)
			}
			t.Logf("Run returned %v after cancel", time.Since(stopped))
			if a.cc.Connected() {
				t.Error("Connected() = true after Run returned")
			}
			waitUntil(t, "controller forgets the agent", func() bool { return !slices.Contains(h.srv.Connected(), tt.id) })
		})
	}
}

// Under an applied policy, a gateway peer's session carries the address the
// device connects to the control server from (for source-network
// conditions), once the device is connected, and its MFA time.
func TestGatewayPeerSessionFromConnection(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	mfa := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	d, err := h.store.GetDevice(h.ctx, "dev-nurse")
	if err != nil {
		t.Fatal(err)
	}
	d.MFAAt = mfa
	if err := h.store.UpdateDevice(h.ctx, d); err != nil {
		t.Fatal(err)
	}
	src := []byte(`version: 1
groups:
  clinicians: {members: [nurse]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
rules:
  - {name: clin-ehr-office, from: [group:clinicians], to: [app:ehr], when: {source: [127.0.0.0/8]}}
`)
	if _, err := h.store.PutPolicyVersion(h.ctx, 0, store.PolicyVersion{File: "p.yaml", Source: src, Actor: "test", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	gwA := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint})
	session := func(f *controlproto.Frame) *policy.Session {
		if f.Type != controlproto.TypeGatewayMap {
			return nil
		}
		for _, p := range f.GatewayMap.Peers {
			if p.DeviceID == "dev-nurse" {
				return p.Session
			}
		}
		return nil
	}
	i, first := gwA.waitFrame(t, 0, "gateway map with the nurse", func(f *controlproto.Frame) bool { return session(f) != nil })
	if s := session(first.f); s.PublicAddr.IsValid() || !s.MFAAt.Equal(mfa) || !slices.Equal(s.Groups, []string{"clinicians"}) {
		t.Fatalf("nurse's session before she connects = %+v", s)
	}
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	j, next := gwA.waitFrame(t, i+1, "gateway map with the nurse's public address", func(f *controlproto.Frame) bool {
		s := session(f)
		return s != nil && s.PublicAddr.IsValid()
	})
	if got := session(next.f).PublicAddr; got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("nurse's public address = %s, want 127.0.0.1", got)
	}

	// A disconnect keeps the last address (a control-channel blip must not
	// cut source-network flows); a new MFA time reaches the gateway.
	nurse.stop()
	nurse.runErr(t)
	waitUntil(t, "the nurse to disconnect", func() bool { return !slices.Contains(h.srv.Connected(), "dev-nurse") })
	d.MFAAt = mfa.Add(time.Hour)
	if err := h.store.UpdateDevice(h.ctx, d); err != nil {
		t.Fatal(err)
	}
	h.recomputed(t)
	_, last := gwA.waitFrame(t, j+1, "gateway map with the nurse's new MFA time", func(f *controlproto.Frame) bool {
		s := session(f)
		return s != nil && s.MFAAt.Equal(mfa.Add(time.Hour))
	})
	if got := session(last.f).PublicAddr; got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("nurse's public address after she disconnected = %s, want the last one, 127.0.0.1", got)
	}
}

// A controller stopped right after it started, before its control
// listener was up (the owner closes the socket on the way out), stops
// cleanly: Serve returns nil, not the closed socket's error. A socket
// closed under a running controller is still an error.
func TestServeStoppedBeforeListening(t *testing.T) {
	h := newHarness(t)
	closedSocket := func() net.PacketConn {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc.Close()
		return pc
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := h.srv.Serve(ctx, closedSocket()); err != nil {
		t.Fatalf("Serve after stop: %v, want nil", err)
	}
	if err := h.srv.Serve(t.Context(), closedSocket()); err == nil {
		t.Fatal("Serve on a closed socket while running returned nil")
	}
}

// A client that connects costs its own map: computed from the state the
// last change left, without a store read, and no other agent gets anything
// (issue 11: a connect storm must not recompute everyone's map per
// connection). Its first connection is a change of its own only because
// its public address is news (gateway maps carry it).
func TestReconnectCostsOwnMap(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	_, clerkTLS := h.enrollDevice(t, "dev-clerk", "clerk")
	gwA := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint})
	gwA.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	nurse.waitFrame(t, 0, "client map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeClientMap })
	clerk := h.start(t, "clerk", clerkTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	clerk.waitFrame(t, 0, "client map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeClientMap })
	h.recomputed(t)

	snaps, gwFrames, nurseFrames := h.store.snapshots.Load(), gwA.count(), nurse.count()
	for i := range 3 {
		clerk.stop()
		clerk.runErr(t)
		waitUntil(t, "clerk disconnected", func() bool { return !slices.Contains(h.srv.Connected(), "dev-clerk") })
		clerk = h.start(t, fmt.Sprint("clerk again ", i), clerkTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
		_, got := clerk.waitFrame(t, 0, "client map after reconnecting", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeClientMap })
		if ips := allowedIPs(got.f.ClientMap, "gw-lan"); !slices.Contains(ips, pharm) {
			t.Fatalf("clerk's map after reconnecting routes %v, want pharmacy %v", ips, pharm)
		}
	}
	if n := h.store.snapshots.Load() - snaps; n != 0 {
		t.Errorf("3 reconnects read %d store snapshots, want 0", n)
	}
	if gwA.count() != gwFrames || nurse.count() != nurseFrames {
		t.Errorf("3 reconnects of the clerk sent the gateway %d and the nurse %d frames, want 0", gwA.count()-gwFrames, nurse.count()-nurseFrames)
	}
}
