package wgstream

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// blockableBind is the standard UDP bind with a switch that drops every
// packet it would send: a network that blocks UDP.
type blockableBind struct {
	conn.Bind
	blocked *atomic.Bool
}

func (b blockableBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.blocked.Load() {
		return nil
	}
	return b.Bind.Send(bufs, ep)
}

// TestPathWatch follows a client through a UDP-blocked network and back,
// with two real wireguard-go devices on loopback: while UDP is blocked
// the initiations it sends are counted and nothing is received over UDP;
// over the stream the ping crosses; once UDP works again, a probe copied
// to UDP makes the gateway answer over UDP.
func TestPathWatch(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	var blocked atomic.Bool
	blocked.Store(true)
	gwBind := NewBind(blockableBind{conn.NewDefaultBind(), &blocked}, Options{})
	var accept sync.WaitGroup
	t.Cleanup(func() { ln.Close(); accept.Wait() })
	accept.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if err := c.(*tls.Conn).HandshakeContext(context.Background()); err != nil {
				c.Close()
				continue
			}
			gwBind.AddStream(c)
		}
	})
	cliBind := NewBind(blockableBind{conn.NewDefaultBind(), &blocked}, Options{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		d := tls.Dialer{Config: cliTLS}
		return d.DialContext(ctx, "tcp", addr)
	}})
	ck, _ := wgtypes.GeneratePrivateKey()
	gk, _ := wgtypes.GeneratePrivateKey()
	log := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	ctun, gtun := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	cdev := device.NewDevice(ctun.TUN(), cliBind, log)
	t.Cleanup(cdev.Close)
	gdev := device.NewDevice(gtun.TUN(), gwBind, log)
	t.Cleanup(gdev.Close)
	cAddr, gAddr := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1")
	gwPort := freeUDPPort(t)
	udpEP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), gwPort)
	if err := gdev.IpcSet(uapiConf(gk, ck.PublicKey(), "", cAddr.String()+"/32")); err != nil {
		t.Fatal(err)
	}
	if err := gdev.IpcSet("listen_port=" + strconv.Itoa(int(gwPort)) + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := cdev.IpcSet(uapiConf(ck, gk.PublicKey(), udpEP.String(), gAddr.String()+"/32")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*device.Device{cdev, gdev} {
		if err := d.Up(); err != nil {
			t.Fatal(err)
		}
	}
	stream := Scheme + ln.Addr().String()
	st, err := cliBind.Watch(udpEP, stream)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := cliBind.Watch(udpEP, stream); again != st {
		t.Fatal("watching the same endpoint again gave new counters")
	}

	// UDP blocked: the initiation is counted, nothing comes back.
	ctun.Outbound <- tuntest.Ping(gAddr, cAddr)
	waitFor(t, "an initiation sent over UDP", func() bool { return st.Initiations.Load() > 0 })
	if n := st.Received.Load(); n != 0 {
		t.Fatalf("received %d packets over blocked UDP", n)
	}

	// Over the stream.
	if err := cdev.IpcSet("public_key=" + hexKey(gk.PublicKey()) + "\nupdate_only=true\nendpoint=" + stream + "\n"); err != nil {
		t.Fatal(err)
	}
	cdev.LookupPeer(device.NoisePublicKey(gk.PublicKey())).ExpireCurrentKeypairs()
	crossTUN(t, ctun, gtun, cAddr, gAddr)
	crossTUN(t, gtun, ctun, gAddr, cAddr)
	if n := st.Received.Load(); n != 0 {
		t.Fatalf("received %d packets over blocked UDP", n)
	}

	// UDP works again: a probe makes the gateway answer over UDP.
	blocked.Store(false)
	waitFor(t, "an answer over UDP after a probe", func() bool {
		st.ProbeNext()
		ctun.Outbound <- tuntest.Ping(gAddr, cAddr)
		<-gtun.Inbound
		gtun.Outbound <- tuntest.Ping(cAddr, gAddr)
		<-ctun.Inbound
		return st.Received.Load() > 0
	})
	if st.Probes.Load() == 0 {
		t.Fatalf("no probe counted (received %d over UDP)", st.Received.Load())
	}
	cliBind.CloseStream(stream)
	if n := cliBind.Streams(); n != 0 {
		t.Fatalf("%d streams open after CloseStream, want 0", n)
	}
	cliBind.Unwatch(udpEP)
	if w := cliBind.watch.Load(); len(w.byUDP) != 0 || len(w.byStream) != 0 {
		t.Fatalf("still watching after Unwatch: %+v", w)
	}
}

func hexKey(k wgtypes.Key) string { return hex.EncodeToString(k[:]) }

func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func crossTUN(t *testing.T, src, dst *tuntest.ChannelTUN, from, to netip.Addr) {
	t.Helper()
	src.Outbound <- tuntest.Ping(to, from)
	select {
	case <-dst.Inbound:
	case <-time.After(10 * time.Second):
		t.Fatalf("ping %v → %v did not cross within 10 s", from, to)
	}
}

// TestIdleStreamClosed: a connection that sends nothing is closed after
// the idle timeout and frees its slot.
func TestIdleStreamClosed(t *testing.T) {
	b := NewBind(conn.NewDefaultBind(), Options{IdleTimeout: 50 * time.Millisecond})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c1, c2 := net.Pipe()
	defer c2.Close()
	if err := b.AddStream(c1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle stream closed", func() bool { return b.Streams() == 0 })
	if got := b.Drops.Load(); got != 0 {
		t.Fatalf("an idle stream counted %d framing drops, want 0", got)
	}
}

// TestEndpointReadsAsUDPAddr: UAPI readers (wgctrl, wg show) parse a
// peer's endpoint as a UDP address; a stream endpoint must not break them.
func TestEndpointReadsAsUDPAddr(t *testing.T) {
	b := NewBind(conn.NewDefaultBind(), Options{})
	ep, err := b.ParseEndpoint("tls://192.0.2.1:443")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := net.ResolveUDPAddr("udp", ep.DstToString()); err != nil {
		t.Fatalf("DstToString %q: %v", ep.DstToString(), err)
	}
	if k := ep.(*Endpoint).Key(); k != "tls://192.0.2.1:443" {
		t.Fatalf("Key %q", k)
	}
}
