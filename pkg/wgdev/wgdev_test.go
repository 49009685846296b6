package wgdev

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/pkg/wgkey"
)

func freeUDP(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func newDev(t *testing.T) (*Device, *tuntest.ChannelTUN, wgkey.Private, int) {
	t.Helper()
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	tt := tuntest.NewChannelTUN()
	d, err := New(tt.TUN(), Options{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, tt, k, freeUDP(t)
}

// TestTunnelAndDeclarativeReconfig wires two real devices over loopback UDP
// and checks packets flow, an unchanged config is a no-op, and removing the
// peer stops the flow.
func TestTunnelAndDeclarativeReconfig(t *testing.T) {
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
	for _, c := range []struct {
		d   *Device
		cfg Config
	}{{a, cfgA}, {b, cfgB}} {
		changed, err := c.d.Reconfig(c.cfg)
		if err != nil || !changed {
			t.Fatalf("first Reconfig: changed=%v err=%v", changed, err)
		}
	}
	if changed, err := a.Reconfig(cfgA); err != nil || changed {
		t.Fatalf("same config again: changed=%v err=%v, want no change", changed, err)
	}

	ping := tuntest.Ping(addrB, addrA)
	ta.Outbound <- ping
	select {
	case got := <-tb.Inbound:
		if !bytes.Equal(got, ping) {
			t.Fatalf("packet changed in transit")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("packet did not cross the tunnel")
	}
	st, err := a.Status()
	if err != nil || len(st) != 1 || st[0].PublicKey != kb.Public() || st[0].LastHandshake.IsZero() {
		t.Fatalf("status = %+v, %v; want one peer with a handshake", st, err)
	}
	if len(st[0].AllowedIPs) != 1 || st[0].AllowedIPs[0] != netip.PrefixFrom(addrB, 32) {
		t.Fatalf("allowed IPs = %v", st[0].AllowedIPs)
	}

	cfgA.Peers = nil
	if changed, err := a.Reconfig(cfgA); err != nil || !changed {
		t.Fatalf("remove peer: changed=%v err=%v", changed, err)
	}
	if st, _ := a.Status(); len(st) != 0 {
		t.Fatalf("peer still configured after removal: %+v", st)
	}
}

func TestReconfigRejectsBadInput(t *testing.T) {
	d, _, k, _ := newDev(t)
	if _, err := d.Reconfig(Config{PrivateKey: k, Peers: []Peer{{}}}); err == nil {
		t.Fatal("peer without key accepted")
	}
	p := Peer{PublicKey: k.Public()}
	if _, err := d.Reconfig(Config{PrivateKey: k, Peers: []Peer{p, p}}); err == nil {
		t.Fatal("duplicate peer accepted")
	}
	if _, err := d.Reconfig(Config{PrivateKey: k, Peers: []Peer{{PublicKey: k.Public(), Endpoint: "no-port"}}}); err == nil {
		t.Fatal("bad endpoint accepted")
	}
}

func FuzzParseUAPIGet(f *testing.F) {
	f.Add("private_key=" + string(bytes.Repeat([]byte("ab"), 32)) + "\nlisten_port=1\npublic_key=" + string(bytes.Repeat([]byte("cd"), 32)) + "\nallowed_ip=10.0.0.0/8\nrx_bytes=5\n")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		ParseUAPIGet(s)
	})
}
