// Package netstacktest wires a client and a forwarding gateway netstack
// together through two real wireguard-go devices joined in memory
// (conn/bindtest), with no root and no sockets, for tests of anything that
// dials through the userspace data plane. It also carries a goroutine leak
// check.
package netstacktest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/netstack"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Overlay addresses the pair uses.
var (
	ClientAddr  = netip.MustParseAddr("100.64.0.2")
	ClientAddr6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
	GatewayAddr = netip.MustParseAddr("100.64.0.1")
)

// PairConfig tunes a Pair. The zero value gives loopback-enabled stacks and a
// gateway that dials with an ordinary net.Dialer.
type PairConfig struct {
	// Forward configures the gateway. Nil means &netstack.ForwardConfig{}.
	Forward *netstack.ForwardConfig
	// NoLoopback leaves netstack.Config.AllowLoopback off on both ends.
	NoLoopback bool
	// WrapGateway, if set, wraps the gateway stack before wireguard-go sees
	// it (the gateway's flow authorizer, in its tests and benchmarks).
	WrapGateway func(tun.Device) tun.Device
}

// Pair is a client stack and a forwarding gateway stack, each under its own
// wireguard-go device, the two devices peered through bindtest.
type Pair struct {
	Client, Gateway *netstack.Stack
}

// NewPair builds and starts a Pair; tb.Cleanup closes it.
func NewPair(tb testing.TB, cfg PairConfig) *Pair {
	tb.Helper()
	fwd := cfg.Forward
	if fwd == nil {
		fwd = &netstack.ForwardConfig{}
	}
	client, err := netstack.New(netstack.Config{
		Addrs:         []netip.Addr{ClientAddr, ClientAddr6},
		AllowLoopback: !cfg.NoLoopback,
	})
	if err != nil {
		tb.Fatalf("client stack: %v", err)
	}
	tb.Cleanup(func() { client.Close() })
	gateway, err := netstack.New(netstack.Config{
		Addrs:         []netip.Addr{GatewayAddr},
		AllowLoopback: !cfg.NoLoopback,
		Forward:       fwd,
	})
	if err != nil {
		tb.Fatalf("gateway stack: %v", err)
	}
	tb.Cleanup(func() { gateway.Close() })

	ck, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	gk, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	binds := bindtest.NewChannelBinds()
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}

	// bindtest endpoints are named by port: device 0 sends to 1, device 1 to 2.
	cdev := device.NewDevice(client, binds[0], logger)
	tb.Cleanup(cdev.Close)
	var gtun tun.Device = gateway
	if cfg.WrapGateway != nil {
		gtun = cfg.WrapGateway(gateway)
	}
	gdev := device.NewDevice(gtun, binds[1], logger)
	tb.Cleanup(gdev.Close)

	// The client routes everything to the gateway, as a full-tunnel
	// userspace client would for its entitled prefixes; the gateway accepts
	// only the client's overlay addresses from it.
	cconf := uapi(ck, gk.PublicKey(), "127.0.0.1:1", "0.0.0.0/0", "::/0")
	gconf := uapi(gk, ck.PublicKey(), "127.0.0.1:2", ClientAddr.String()+"/32", ClientAddr6.String()+"/128")
	for _, d := range []struct {
		dev  *device.Device
		conf string
	}{{cdev, cconf}, {gdev, gconf}} {
		if err := d.dev.IpcSet(d.conf); err != nil {
			tb.Fatalf("configure device: %v", err)
		}
		if err := d.dev.Up(); err != nil {
			tb.Fatalf("device up: %v", err)
		}
	}
	return &Pair{Client: client, Gateway: gateway}
}

func uapi(priv, peer wgtypes.Key, endpoint string, allowed ...string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=0\nreplace_peers=true\n", hex.EncodeToString(priv[:]))
	fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", hex.EncodeToString(peer[:]), endpoint)
	for _, a := range allowed {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	return b.String()
}

// LeakCheck fails tb if, after tb's other cleanups ran, more goroutines are
// alive than when LeakCheck was called. Call it first in a test so its
// cleanup runs last.
func LeakCheck(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		if tb.Failed() {
			return
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if runtime.NumGoroutine() <= before {
				return
			}
			<-tick.C
		}
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		tb.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), b.String())
	})
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	tb.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out: "+msg, args...)
		}
		<-tick.C
	}
}
