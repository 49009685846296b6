package wgdev

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/pkg/wgkey"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// TestStreamEndpoint: a peer's endpoint may be a stream (tls://IP:port);
// it reaches the device as written, Status still reads, and switching
// back to UDP is an ordinary change.
func TestStreamEndpoint(t *testing.T) {
	tt := tuntest.NewChannelTUN()
	d, err := New(tt.TUN(), Options{Name: "test", Bind: wgstream.NewBind(nil, wgstream.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	k, _ := wgkey.NewPrivate()
	pk, _ := wgkey.NewPrivate()
	cfg := func(ep string) Config {
		return Config{PrivateKey: k, Peers: []Peer{{PublicKey: pk.Public(), Endpoint: ep,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}}}}
	}
	for _, step := range []struct{ endpoint, status string }{
		{"tls://127.0.0.1:443", "127.0.0.1:443"},
		{"127.0.0.1:51820", "127.0.0.1:51820"},
		{"tls://127.0.0.1:8443", "127.0.0.1:8443"},
	} {
		changed, err := d.Reconfig(cfg(step.endpoint))
		if err != nil || !changed {
			t.Fatalf("Reconfig(%s): changed=%v err=%v", step.endpoint, changed, err)
		}
		ps, err := d.Status()
		if err != nil {
			t.Fatalf("Status after %s: %v", step.endpoint, err)
		}
		if len(ps) != 1 || ps[0].Endpoint != step.status {
			t.Fatalf("after %s: status %+v, want endpoint %s", step.endpoint, ps, step.status)
		}
	}
	if _, err := d.Reconfig(cfg("tls://gw.example:443")); err == nil {
		t.Fatal("a stream endpoint with a host name was accepted (the client resolves it first)")
	}
	d.Rehandshake(pk.Public()) // a configured peer: no panic, a handshake queued
}
