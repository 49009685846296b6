package flow

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

// The test network: clients in the overlay, apps in segment 10.20.0.0/24.
//
//	alice 100.64.0.7 ---+                 +--- ehr  10.20.0.5:443 (tcp), ping
//	alice6 fd7a::7  ----+-- [gateway] ----+--- dns  10.20.0.53:53 (udp)
//	mallory 100.64.0.99 (not a peer)      +--- lab  10.20.0.6 (nobody's app)
//	                                      +--- ehr6 fd00:20::5:443
var (
	alice    = netip.MustParseAddr("100.64.0.7")
	alice6   = netip.MustParseAddr("fd7a:115c:a1e0::7")
	mallory  = netip.MustParseAddr("100.64.0.99")
	ehr      = netip.MustParseAddr("10.20.0.5")
	lab      = netip.MustParseAddr("10.20.0.6")
	dnsHost  = netip.MustParseAddr("10.20.0.53")
	ehr6     = netip.MustParseAddr("fd00:20::5")
	aliceP   = netip.AddrPortFrom(alice, 40000)
	alice6P  = netip.AddrPortFrom(alice6, 40000)
	ehrP     = netip.AddrPortFrom(ehr, 443)
	ehr6P    = netip.AddrPortFrom(ehr6, 443)
	dnsP     = netip.AddrPortFrom(dnsHost, 53)
	allRules = []policy.Rule{
		{ID: "r-ehr", App: "ehr", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.5/32")}, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
		{ID: "r-ehr6", App: "ehr", Dst: []netip.Prefix{netip.MustParsePrefix("fd00:20::5/128")}, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
		{ID: "r-dns", App: "dns", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.53/32")}, Proto: policy.ProtoUDP, Ports: []policy.PortRange{{First: 53, Last: 53}}},
		{ID: "r-ping", App: "ehr", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.5/32")}, Proto: policy.ProtoICMP},
	}
)

// compile builds a policy in which alice has the named rules and alice6
// has r-ehr6.
func compile(t testing.TB, aliceRules ...policy.RuleID) *policy.Compiled {
	t.Helper()
	c, err := policy.Compile(allRules, []policy.Peer{
		{DeviceID: "dev-alice", User: "alice@hospital.example", Addr: alice, Rules: aliceRules},
		{DeviceID: "dev-alice6", User: "alice@hospital.example", Addr: alice6, Rules: []policy.RuleID{"r-ehr6"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fullPolicy(t testing.TB) *policy.Compiled {
	return compile(t, "r-ehr", "r-dns", "r-ping")
}

// clock is a settable clock whose readings keep a monotonic component.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

// harness runs an Authorizer around a tuntest.ChannelTUN. A goroutine reads
// the Authorizer (as wireguard-go would) into toClient.
type harness struct {
	t        *testing.T
	ct       *tuntest.ChannelTUN
	a        *Authorizer
	events   chan controlproto.FlowEvent
	toClient chan []byte
	clock    *clock
	// ends are the end records event and noEvent passed over (the older
	// tests look at decisions; end records have their own tests).
	ends []controlproto.FlowEvent
}

const testOffset = 16 // wireguard-go's offset

func newHarness(t *testing.T, pol *policy.Compiled, opts ...func(*Config)) *harness {
	t.Helper()
	h := &harness{
		t:        t,
		ct:       tuntest.NewChannelTUN(),
		events:   make(chan controlproto.FlowEvent, 256),
		toClient: make(chan []byte, 64),
		clock:    newClock(),
	}
	cfg := Config{
		Policy:          pol,
		Events:          h.events,
		Logger:          slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Now:             h.clock.Now,
		JanitorInterval: time.Hour, // tests call sweep themselves
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := New(h.ct.TUN(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs, sizes := [][]byte{make([]byte, 2048)}, make([]int, 1)
		for {
			n, err := a.Read(bufs, sizes, testOffset)
			if err != nil {
				return
			}
			for i := range n {
				h.toClient <- bytes.Clone(bufs[i][testOffset : testOffset+sizes[i]])
			}
		}
	}()
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		<-done
	})
	return h
}

// fromClient writes pkts as one batch, as wireguard-go would, and returns
// the packets that reached the app side.
func (h *harness) fromClient(pkts ...[]byte) [][]byte {
	h.t.Helper()
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, testOffset), p...)
	}
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := h.a.Write(bufs, testOffset)
		res <- result{n, err}
	}()
	var got [][]byte
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p := <-h.ct.Inbound:
			got = append(got, p)
		case r := <-res:
			if r.err != nil || r.n != len(pkts) {
				h.t.Fatalf("Write = %d, %v; want %d, nil", r.n, r.err, len(pkts))
			}
			return got
		case <-timeout:
			h.t.Fatal("Write did not return")
		}
	}
}

// passes checks that the client packet p reaches the app unchanged.
func (h *harness) passes(p []byte) {
	h.t.Helper()
	got := h.fromClient(p)
	if len(got) != 1 || !bytes.Equal(got[0], p) {
		h.t.Fatalf("client packet did not pass: got %d packets", len(got))
	}
}

// blocked checks that the client packet p does not reach the app.
func (h *harness) blocked(p []byte) {
	h.t.Helper()
	if got := h.fromClient(p); len(got) != 0 {
		h.t.Fatalf("client packet passed, want dropped")
	}
}

// fromApp hands p to the device as if the app sent it toward a client.
func (h *harness) fromApp(p []byte) {
	h.t.Helper()
	select {
	case h.ct.Outbound <- p:
	case <-time.After(5 * time.Second):
		h.t.Fatal("device read did not take the packet")
	}
}

// returns checks that the app packet p reaches the client.
func (h *harness) returns(p []byte) {
	h.t.Helper()
	h.fromApp(p)
	got := h.nextToClient()
	if !bytes.Equal(got, p) {
		h.t.Fatalf("client got a different packet:\n got %x\nwant %x", got, p)
	}
}

// returnDropped checks that the app packet p is dropped.
func (h *harness) returnDropped(p []byte) {
	h.t.Helper()
	before := h.a.Stats()
	h.fromApp(p)
	h.waitStats(func(s Stats) bool {
		return s.ReturnDropped+s.PacketsReturned+s.Malformed+s.FragmentsDropped >
			before.ReturnDropped+before.PacketsReturned+before.Malformed+before.FragmentsDropped
	})
	if s := h.a.Stats(); s.PacketsReturned != before.PacketsReturned {
		h.t.Fatalf("app packet passed, want dropped")
	}
	h.noneToClient()
}

func (h *harness) nextToClient() []byte {
	h.t.Helper()
	select {
	case p := <-h.toClient:
		return p
	case <-time.After(5 * time.Second):
		h.t.Fatal("nothing reached the client")
		return nil
	}
}

func (h *harness) noneToClient() {
	h.t.Helper()
	select {
	case p := <-h.toClient:
		h.t.Fatalf("unexpected packet toward the client: %x", p)
	default:
	}
}

// waitStats polls the counters until cond holds.
func (h *harness) waitStats(cond func(Stats) bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(h.a.Stats()) {
		if time.Now().After(deadline) {
			h.t.Fatalf("counters never reached the expected state: %+v", h.a.Stats())
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// advance moves the clock on and lets the Authorizer see it, as the
// janitor's tick would.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	h.a.tick()
}

// sweep expires idle flows, as the janitor would.
func (h *harness) sweep() { h.a.sweep(h.a.clock.Load()) }

func (h *harness) event() controlproto.FlowEvent {
	h.t.Helper()
	for {
		select {
		case ev := <-h.events:
			if ev.Action == controlproto.FlowEnd {
				h.ends = append(h.ends, ev)
				continue
			}
			return ev
		default:
			h.t.Fatal("no flow event")
			return controlproto.FlowEvent{}
		}
	}
}

func (h *harness) noEvent() {
	h.t.Helper()
	for {
		select {
		case ev := <-h.events:
			if ev.Action == controlproto.FlowEnd {
				h.ends = append(h.ends, ev)
				continue
			}
			h.t.Fatalf("unexpected flow event %+v", ev)
		default:
			return
		}
	}
}

// end returns the next end record, whatever decisions come before it.
func (h *harness) end() controlproto.FlowEvent {
	h.t.Helper()
	for len(h.ends) == 0 {
		select {
		case ev := <-h.events:
			if ev.Action == controlproto.FlowEnd {
				h.ends = append(h.ends, ev)
			}
		default:
			h.t.Fatal("no flow end record")
		}
	}
	ev := h.ends[0]
	h.ends = h.ends[1:]
	return ev
}

// nopDev is a device that accepts every write and reads what is sent on in.
// It does not allocate, for allocation tests and benchmarks.
type nopDev struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once
	events chan tun.Event
	batch  int
}

func newNopDev(batch int) *nopDev {
	return &nopDev{in: make(chan []byte), closed: make(chan struct{}), events: make(chan tun.Event), batch: batch}
}

func (d *nopDev) File() *os.File { return nil }
func (d *nopDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	select {
	case p := <-d.in:
		sizes[0] = copy(bufs[0][off:], p)
		return 1, nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}
func (d *nopDev) Write(bufs [][]byte, off int) (int, error) { return len(bufs), nil }
func (d *nopDev) MTU() (int, error)                         { return 1420, nil }
func (d *nopDev) Name() (string, error)                     { return "nop", nil }
func (d *nopDev) Events() <-chan tun.Event                  { return d.events }
func (d *nopDev) BatchSize() int                            { return d.batch }
func (d *nopDev) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

// tcp builds a TCP segment; syn, synack, ack and so on name the flags.
func tcp(src, dst netip.AddrPort, flags packet.TCPFlags, seq, ack uint32, payload string) []byte {
	return packettest.TCP(src, dst, flags, seq, ack, []byte(payload))
}

const (
	syn    = packet.TCPSyn
	synack = packet.TCPSyn | packet.TCPAck
	ack    = packet.TCPAck
	psh    = packet.TCPAck | packet.TCPPsh
	fin    = packet.TCPFin | packet.TCPAck
	rst    = packet.TCPRst
)
