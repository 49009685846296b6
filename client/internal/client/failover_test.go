package client

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cordonhq/cordon/client/internal/flowtrack"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
)

// observe is one synchronous probe round at now: a probe sent to each
// gateway in results, answered at once where true; it returns check's
// verdict and the gateways revived.
func observe(f *failover, results map[string]bool, now time.Time) (died, revived []string) {
	for id, ok := range results {
		f.sent(id, now)
		if ok && f.answered(id, now) {
			revived = append(revived, id)
		}
	}
	return f.check(now), revived
}

func twoGatewayMap(order ...string) *controlproto.ClientMap {
	return &controlproto.ClientMap{
		Gateways: []controlproto.ClientGateway{
			{GatewayID: "gw-a", OverlayAddr: netip.MustParseAddr("100.64.0.1")},
			{GatewayID: "gw-b", OverlayAddr: netip.MustParseAddr("100.64.0.2")},
		},
		Segments: []controlproto.ClientSegment{{Name: "lan", Gateways: order}},
	}
}

// The state machine, on an injected clock: a gateway that stops answering
// is dead after DeadAfter of probing and its segment moves to the next of
// the order; the segment stays there while the device is busy, even once
// the first answers again, and goes back when it has been idle.
func TestFailoverMovesAndReturnsWhenIdle(t *testing.T) {
	act := &activityTUN{}
	f := newFailover(act)
	m := twoGatewayMap("gw-a", "gw-b")
	t0 := time.Unix(1_800_000_000, 0)
	busy := func(at time.Time) { act.at.Store(at.UnixNano()) }
	pick := func(at time.Time) string { return f.pick(m, m.Segments[0], at) }

	busy(t0)
	if got := pick(t0); got != "gw-a" {
		t.Fatalf("first pick %s, want gw-a (first of the order)", got)
	}
	observe(f, map[string]bool{"gw-a": true, "gw-b": true}, t0)
	// gw-a stops answering.
	at := t0
	for i := 1; ; i++ {
		at = t0.Add(time.Duration(i) * ProbeEvery)
		busy(at)
		died, _ := observe(f, map[string]bool{"gw-a": false, "gw-b": true}, at)
		if len(died) > 0 {
			if died[0] != "gw-a" || at.Sub(t0) < DeadAfter || at.Sub(t0) > DeadAfter+ProbeEvery {
				t.Fatalf("died %v after %v, want gw-a after %v", died, at.Sub(t0), DeadAfter)
			}
			break
		}
		if f.wantsMove(m, at) {
			t.Fatalf("moves after %v without an answer, before DeadAfter", at.Sub(t0))
		}
	}
	if !f.wantsMove(m, at) || pick(at) != "gw-b" {
		t.Fatal("segment did not move to gw-b when gw-a died")
	}
	// gw-a answers again while the device is busy: stay on gw-b.
	at = at.Add(ProbeEvery)
	busy(at)
	if _, revived := observe(f, map[string]bool{"gw-a": true, "gw-b": true}, at); len(revived) != 1 {
		t.Fatalf("revived %v, want gw-a", revived)
	}
	if f.wantsMove(m, at) || pick(at) != "gw-b" {
		t.Fatal("moved back while busy: that cuts open connections")
	}
	// Idle past ReturnAfter: back to the first of the order.
	at = at.Add(ReturnAfter + time.Second)
	if !f.wantsMove(m, at) || pick(at) != "gw-a" {
		t.Fatal("did not go back to gw-a once idle")
	}
}

// The controller's "down" counts like dead; if every gateway is dead the
// first not dead, else the first of the order, is used.
func TestFailoverControllerDownAndAllDead(t *testing.T) {
	f := newFailover(nil)
	m := twoGatewayMap("gw-a", "gw-b")
	m.Gateways[0].Down = true
	now := time.Unix(1_800_000_000, 0)
	if got := f.pick(m, m.Segments[0], now); got != "gw-b" {
		t.Fatalf("gw-a down: picked %s, want gw-b", got)
	}
	for i := range minUnanswered {
		observe(f, map[string]bool{"gw-a": false, "gw-b": false}, now.Add(time.Duration(i)*DeadAfter/2))
	}
	if got := f.pick(m, m.Segments[0], now.Add(DeadAfter)); got != "gw-a" {
		t.Fatalf("all dead: picked %s, want gw-a (first of the order)", got)
	}
	f.prune(&controlproto.ClientMap{})
	if len(f.Current()) != 0 || len(f.health) != 0 {
		t.Fatal("prune kept segments or gateways no longer in the map")
	}
}

func TestAppPacket(t *testing.T) {
	v4 := func(dst [4]byte) []byte {
		b := make([]byte, 20)
		b[0] = 0x45
		copy(b[16:], dst[:])
		return b
	}
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{v4([4]byte{10, 20, 0, 10}), true},
		{v4([4]byte{100, 64, 0, 1}), false},    // a gateway's overlay address
		{v4([4]byte{100, 127, 255, 1}), false}, // still 100.64.0.0/10
		{v4([4]byte{100, 128, 0, 1}), true},
		{append([]byte{0x60}, make([]byte, 39)...), true},
		{[]byte{0x45}, false},
		{nil, false},
	} {
		if got := appPacket(c.b); got != c.want {
			t.Errorf("appPacket(% x) = %v, want %v", c.b, got, c.want)
		}
	}
}

// probe gets an answer from a real DNS server that refuses the name, and
// none from an address where nothing listens.
func TestProbe(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeRefused)
		w.WriteMsg(r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	port := pc.LocalAddr().(*net.UDPAddr).Port
	d := portDialer{port: port}
	if err := probe(context.Background(), d, netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatalf("no answer from a live server: %v", err)
	}
	if probe(context.Background(), portDialer{port: port + 1}, netip.MustParseAddr("127.0.0.1")) == nil {
		t.Fatal("an answer from where nothing listens")
	}
}

// portDialer dials the test server's port instead of 53.
type portDialer struct{ port int }

func (p portDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(address)
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort(host, strconv.Itoa(p.port)))
}

// Silence counts only while probing: after an idle pause, a gateway is not
// dead at its first unanswered probe, only DeadAfter later; a spare probed
// once a second is dead only at its third unanswered probe; an answer to a
// probe still in flight keeps a gateway alive.
func TestFailoverPauseRestartsTheCount(t *testing.T) {
	f := newFailover(nil)
	t0 := time.Unix(1_800_000_000, 0)
	observe(f, map[string]bool{"gw-a": true}, t0)
	f.pause()
	later := t0.Add(time.Hour)
	if died, _ := observe(f, map[string]bool{"gw-a": false}, later); len(died) != 0 {
		t.Fatalf("dead at the first probe after a pause: %v", died)
	}
	if died, _ := observe(f, map[string]bool{"gw-a": false}, later.Add(DeadAfter-ProbeEvery)); len(died) != 0 {
		t.Fatalf("dead before DeadAfter: %v", died)
	}
	if died, _ := observe(f, map[string]bool{"gw-a": false}, later.Add(DeadAfter)); len(died) != 1 {
		t.Fatal("not dead DeadAfter after probes resumed")
	}
	// A spare: probed every SpareProbeEvery.
	observe(f, map[string]bool{"gw-b": true}, t0)
	for i := 1; i < minUnanswered; i++ {
		if died, _ := observe(f, map[string]bool{"gw-b": false}, t0.Add(time.Duration(i)*SpareProbeEvery)); len(died) != 0 {
			t.Fatalf("a spare dead after %d unanswered probes", i)
		}
	}
	if died, _ := observe(f, map[string]bool{"gw-b": false}, t0.Add(minUnanswered*SpareProbeEvery)); len(died) != 1 {
		t.Fatal("a spare silent for three probes is not dead")
	}
	// Probes out, the answer to the first arrives late: alive.
	f.sent("gw-c", t0)
	f.sent("gw-c", t0.Add(ProbeEvery))
	f.sent("gw-c", t0.Add(2*ProbeEvery))
	f.answered("gw-c", t0.Add(2*ProbeEvery+time.Millisecond))
	f.sent("gw-c", t0.Add(3*ProbeEvery))
	if died := f.check(t0.Add(DeadAfter)); len(died) != 0 {
		t.Fatalf("dead although it answered %v ago: %v", DeadAfter-2*ProbeEvery, died)
	}
	if f.inUse("gw-a") {
		t.Fatal("gw-a in use without a segment")
	}
}

// Drain (capability 14): a segment on a draining gateway stays there while
// a connection into it is open, moves at the first quiet moment, and moves
// anyway DrainMoveBy after the drain was seen. A connection into another
// segment does not hold it back.
func TestFailoverLeavesDrainingGatewayWhenQuiet(t *testing.T) {
	act := &activityTUN{flows: flowtrack.New()}
	f := newFailover(act)
	m := twoGatewayMap("gw-a", "gw-b")
	m.Segments[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}
	t0 := time.Unix(1_800_000_000, 0)
	act.at.Store(t0.UnixNano())
	if got := f.pick(m, m.Segments[0], t0); got != "gw-a" {
		t.Fatalf("first pick %s, want gw-a", got)
	}
	// A connection to ehr is open, and one elsewhere.
	ehr := netip.MustParseAddrPort("10.20.0.10:443")
	host := netip.MustParseAddrPort("100.64.0.9:40000")
	act.flows.Out(packettest.TCP(host, ehr, packet.TCPSyn, 1, 0, nil), t0)
	act.flows.Out(packettest.TCP(host, netip.MustParseAddrPort("10.99.0.1:22"), packet.TCPSyn, 1, 0, nil), t0)

	drained := twoGatewayMap("gw-b", "gw-a") // the controller's order with gw-a draining
	drained.Segments[0].AllowedIPs = m.Segments[0].AllowedIPs
	drained.Gateways[0].Draining = true
	at := t0.Add(time.Second)
	if f.wantsMove(drained, at) || f.pick(drained, drained.Segments[0], at) != "gw-a" {
		t.Fatal("moved off the draining gateway with a connection into the segment open: that cuts it")
	}
	// The connection closes both ways: quiet, so it moves.
	act.flows.Out(packettest.TCP(host, ehr, packet.TCPFin|packet.TCPAck, 2, 1, nil), at)
	act.flows.In(packettest.TCP(ehr, host, packet.TCPFin|packet.TCPAck, 1, 3, nil), at)
	if !f.wantsMove(drained, at) || f.pick(drained, drained.Segments[0], at) != "gw-b" {
		t.Fatal("did not leave the draining gateway at a quiet moment")
	}

	// Never quiet: it moves DrainMoveBy after it saw the drain.
	f2 := newFailover(act)
	f2.pick(m, m.Segments[0], t0)
	act.flows.Out(packettest.TCP(netip.MustParseAddrPort("100.64.0.9:40001"), ehr, packet.TCPSyn, 1, 0, nil), t0)
	if f2.pick(drained, drained.Segments[0], t0) != "gw-a" {
		t.Fatal("moved with a connection open")
	}
	if f2.pick(drained, drained.Segments[0], t0.Add(DrainMoveBy-time.Second)) != "gw-a" {
		t.Fatal("moved before DrainMoveBy with a connection open")
	}
	if f2.pick(drained, drained.Segments[0], t0.Add(DrainMoveBy)) != "gw-b" {
		t.Fatal("still on the draining gateway DrainMoveBy after the drain")
	}
	// Undrained, gw-a is first again; it answers, but the segment returns
	// only once it has for ReturnAfter (it let its peers go meanwhile).
	act.flows.Forget(m.Segments[0].AllowedIPs)
	back := t0.Add(DrainMoveBy + time.Second)
	act.at.Store(back.UnixNano()) // busy
	observe(f2, map[string]bool{"gw-a": true, "gw-b": true}, back)
	if f2.pick(m, m.Segments[0], back) != "gw-b" {
		t.Fatal("went back to the undrained gateway at once")
	}
	act.at.Store(back.Add(ReturnAfter).UnixNano())
	observe(f2, map[string]bool{"gw-a": true, "gw-b": true}, back.Add(ReturnAfter))
	if f2.pick(m, m.Segments[0], back.Add(ReturnAfter)) != "gw-a" {
		t.Fatal("did not go back to the undrained gateway after ReturnAfter, quiet")
	}
}

// A gateway that joins ahead of the current one in the order takes the
// segment at a quiet moment once it answered probes; one that came back
// from the dead only after answering for ReturnAfter.
func TestFailoverJoinsGatewayAheadWhenQuietAndSteady(t *testing.T) {
	act := &activityTUN{flows: flowtrack.New()}
	f := newFailover(act)
	one := twoGatewayMap("gw-b")
	one.Gateways = one.Gateways[1:]
	t0 := time.Unix(1_800_000_000, 0)
	act.at.Store(t0.UnixNano())
	if got := f.pick(one, one.Segments[0], t0); got != "gw-b" {
		t.Fatalf("first pick %s", got)
	}
	both := twoGatewayMap("gw-a", "gw-b") // gw-a joined, first for this device
	if f.wantsMove(both, t0) {
		t.Fatal("moved to a joining gateway that never answered a probe")
	}
	// Its first probes go unanswered (its WireGuard session is new): dead
	// before it ever answered, which is no flapping.
	for i := range minUnanswered + 1 {
		observe(f, map[string]bool{"gw-a": false, "gw-b": true}, t0.Add(time.Duration(i)*DeadAfter/2))
	}
	if !f.dead("gw-a") {
		t.Fatal("gw-a not dead after its probes went unanswered")
	}
	observe(f, map[string]bool{"gw-a": true, "gw-b": true}, t0)
	if f.wantsMove(both, t0.Add(JoinAfter/2)) {
		t.Fatal("moved to a gateway that answered for less than JoinAfter")
	}
	if f.wantsMove(both, t0.Add(JoinAfter)) {
		t.Fatal("moved to a gateway whose last answer is older than two spare probe rounds")
	}
	observe(f, map[string]bool{"gw-a": true, "gw-b": true}, t0.Add(JoinAfter))
	t0 = t0.Add(JoinAfter)
	if !f.wantsMove(both, t0) || f.pick(both, both.Segments[0], t0) != "gw-a" {
		t.Fatal("did not move to the joined gateway at a quiet moment")
	}
	// gw-a dies and comes back: the segment returns only after ReturnAfter.
	for i := range minUnanswered {
		observe(f, map[string]bool{"gw-a": false, "gw-b": true}, t0.Add(time.Duration(i)*DeadAfter/2))
	}
	at := t0.Add(2 * DeadAfter)
	observe(f, map[string]bool{"gw-a": false, "gw-b": true}, at)
	if !f.dead("gw-a") || f.pick(both, both.Segments[0], at) != "gw-b" {
		t.Fatal("did not fail over to gw-b when gw-a died")
	}
	at = at.Add(time.Second)
	act.at.Store(at.UnixNano())
	observe(f, map[string]bool{"gw-a": true, "gw-b": true}, at)
	if f.pick(both, both.Segments[0], at.Add(ReturnAfter-time.Second)) != "gw-b" {
		t.Fatal("went back to a gateway that answered again for less than ReturnAfter")
	}
	act.at.Store(at.Add(ReturnAfter).UnixNano())
	observe(f, map[string]bool{"gw-a": true, "gw-b": true}, at.Add(ReturnAfter))
	if f.pick(both, both.Segments[0], at.Add(ReturnAfter)) != "gw-a" {
		t.Fatal("did not go back to gw-a, steady for ReturnAfter, at a quiet moment")
	}
}
