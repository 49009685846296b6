package flow_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/pkg/netstack/netstacktest"
	"github.com/cordonhq/cordon/pkg/policy"
)

// BenchmarkTunnelThroughput moves bulk TCP data through the userspace data
// plane (client netstack → wireguard-go → [flow authorizer] → gateway
// netstack → a loopback server), with and without the authorizer, so one
// run shows what per-flow authorization costs in throughput.
func BenchmarkTunnelThroughput(b *testing.B) {
	for _, withAuthz := range []bool{false, true} {
		name := "plain"
		if withAuthz {
			name = "authorized"
		}
		b.Run(name, func(b *testing.B) { benchThroughput(b, withAuthz) })
	}
}

func benchThroughput(b *testing.B, withAuthz bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	cfg := netstacktest.PairConfig{}
	if withAuthz {
		pol, err := policy.Compile(
			[]policy.Rule{{ID: "bench", App: "sink", Dst: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: port, Last: port}}}},
			[]policy.Peer{{DeviceID: "dev", User: "u", Addr: netstacktest.ClientAddr, Rules: []policy.RuleID{"bench"}}},
		)
		if err != nil {
			b.Fatal(err)
		}
		cfg.WrapGateway = func(d tun.Device) tun.Device {
			a, err := flow.New(d, flow.Config{Policy: pol})
			if err != nil {
				b.Fatal(err)
			}
			return a
		}
	}
	pair := netstacktest.NewPair(b, cfg)
	c, err := pair.Client.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
