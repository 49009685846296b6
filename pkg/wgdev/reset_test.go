package wgdev

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestEpochChangeResetsSession plays a gateway restart: a client device (a)
// holds a session with a gateway device (b); b is replaced by a new device
// with the same key and port, which knows nothing of that session. Only
// when the peer's Epoch changes does a reset its session, exactly once,
// and the new handshake it starts lets the new gateway send to the client
// before the client sent any data.
func TestEpochChangeResetsSession(t *testing.T) {
	a, ta, ka, pa := newDev(t)
	b, tb, kb, pb := newDev(t)
	addrA, addrB := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	cfgA := func(epoch string) Config {
		return Config{PrivateKey: ka, ListenPort: pa, Peers: []Peer{{
			PublicKey: kb.Public(), Endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(pb)),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrB, 32)}, Epoch: epoch,
		}}}
	}
	cfgB := Config{PrivateKey: kb, ListenPort: pb, Peers: []Peer{{
		PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrA, 32)},
	}}}
	mustReconfig := func(d *Device, cfg Config, wantChanged bool) {
		t.Helper()
		changed, err := d.Reconfig(cfg)
		if err != nil || changed != wantChanged {
			t.Fatalf("Reconfig: changed=%v err=%v, want changed=%v", changed, err, wantChanged)
		}
	}
	mustReconfig(a, cfgA("one"), true)
	mustReconfig(b, cfgB, true)
	cross(t, ta, tb, addrA, addrB)

	for _, step := range []struct {
		epoch       string
		wantChanged bool
	}{
		{"one", false}, // unchanged map
		{"", false},    // unknown (a controller that restarted): keeps "one"
		{"one", false}, // known again, the same run
	} {
		mustReconfig(a, cfgA(step.epoch), step.wantChanged)
		if n := a.resets.Load(); n != 0 {
			t.Fatalf("after epoch %q: %d session resets, want 0", step.epoch, n)
		}
	}

	// The gateway restarts.
	b.Close()
	b2, tb2 := newDevOnly(t)
	mustReconfig(b2, cfgB, true)
	mustReconfig(a, cfgA("two"), true)
	if n := a.resets.Load(); n != 1 {
		t.Fatalf("after the epoch changed: %d session resets, want 1", n)
	}
	mustReconfig(a, cfgA("two"), false)
	mustReconfig(a, cfgA(""), false)
	if n := a.resets.Load(); n != 1 {
		t.Fatalf("after the same epoch again: %d session resets, want still 1", n)
	}
	// The responder can send only on a session the initiator confirmed:
	// this crosses because the reset handshook and sent a keepalive.
	cross(t, tb2, ta, addrB, addrA)
}

// TestFirstEpochDoesNotReset: a peer configured without an epoch that
// learns one later was not seen restarting.
func TestFirstEpochDoesNotReset(t *testing.T) {
	a, _, ka, pa := newDev(t)
	_, _, kb, pb := newDev(t)
	cfg := func(epoch string) Config {
		return Config{PrivateKey: ka, ListenPort: pa, Peers: []Peer{{
			PublicKey: kb.Public(), Endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(pb)), Epoch: epoch,
		}}}
	}
	for i, epoch := range []string{"", "one", "one"} {
		changed, err := a.Reconfig(cfg(epoch))
		if err != nil || changed != (i == 0) {
			t.Fatalf("Reconfig %d (epoch %q): changed=%v err=%v", i, epoch, changed, err)
		}
	}
	if n := a.resets.Load(); n != 0 {
		t.Fatalf("%d session resets, want 0", n)
	}
}

// newDevOnly starts a device; its key and port come with its Reconfig.
func newDevOnly(t *testing.T) (*Device, *tuntest.ChannelTUN) {
	t.Helper()
	tt := tuntest.NewChannelTUN()
	d, err := New(tt.TUN(), Options{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, tt
}

// crossWithin is how long a packet may take: one handshake retry
// (wireguard-go resends a lost initiation after RekeyTimeout, 5 s; a busy
// CI host once missed the 3 s this allowed before) but less than the 15 s
// (KeepaliveTimeout + RekeyTimeout) after which WireGuard's own timers
// would start a new session without resetSession or Handshake.
const crossWithin = 10 * time.Second

// cross sends a ping from src's TUN and waits for it on dst's.
func cross(t *testing.T, src, dst *tuntest.ChannelTUN, from, to netip.Addr) {
	t.Helper()
	ping := tuntest.Ping(to, from)
	src.Outbound <- ping
	select {
	case got := <-dst.Inbound:
		if !bytes.Equal(got, ping) {
			t.Fatal("packet changed in transit")
		}
	case <-time.After(crossWithin):
		t.Fatalf("packet %v → %v did not cross the tunnel within %v", from, to, crossWithin)
	}
}

// TestHandshakeReachesAClientFirst plays a gateway restarting without its
// controller: the new gateway device knows the client's key (saved map)
// and its last endpoint, the client knows nothing of the restart. After
// Handshake the gateway can send to the client at once, without the
// client's timers.
func TestHandshakeReachesAClientFirst(t *testing.T) {
	a, ta, ka, pa := newDev(t)
	b, tb, kb, pb := newDev(t)
	addrA, addrB := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	cfgA := Config{PrivateKey: ka, ListenPort: pa, Peers: []Peer{{
		PublicKey: kb.Public(), Endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(pb)),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrB, 32)},
	}}}
	cfgB := Config{PrivateKey: kb, ListenPort: pb, Peers: []Peer{{
		PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrA, 32)},
	}}}
	if _, err := a.Reconfig(cfgA); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reconfig(cfgB); err != nil {
		t.Fatal(err)
	}
	cross(t, ta, tb, addrA, addrB)

	b.Close()
	b2, tb2 := newDevOnly(t)
	if _, err := b2.Reconfig(cfgB); err != nil {
		t.Fatal(err)
	}
	if err := b2.Handshake(ka.Public(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(pa))); err != nil {
		t.Fatal(err)
	}
	cross(t, tb2, ta, addrB, addrA)
	cross(t, ta, tb2, addrA, addrB)

	if err := b2.Handshake(kb.Public(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1)); err == nil {
		t.Error("Handshake with a peer that is not configured succeeded")
	}
}
