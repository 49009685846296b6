package control_test

import (
	"slices"
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// TestGatewayTCPEndpointReachesClients: a gateway's hello names its TCP
// endpoint (capability 13) and the clients' maps carry it; a hello
// without one (the gateway restarted without --tcp-listen) or with an
// invalid one withdraws it.
func TestGatewayTCPEndpointReachesClients(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	gw, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	hello := func(tcp string) controlproto.Hello {
		return controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint, Instance: "run-1", TCPEndpoint: tcp}
	}
	tcpOf := func(f *controlproto.Frame) (string, bool) {
		if f.Type != controlproto.TypeClientMap {
			return "", false
		}
		for _, g := range f.ClientMap.Gateways {
			if g.GatewayID == gw.ID {
				return g.TCPEndpoint, true
			}
		}
		return "", false
	}
	disconnect := func(a *runningAgent) {
		t.Helper()
		a.stop()
		a.runErr(t)
		waitUntil(t, a.name+" to disconnect", func() bool { return !slices.Contains(h.srv.Connected(), gw.ID) })
	}

	g1 := h.start(t, "gateway with a TCP endpoint", gwTLS, hello("gw.example:443"))
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	i, _ := nurse.waitFrame(t, 0, "client map with the TCP endpoint", func(f *controlproto.Frame) bool {
		ep, ok := tcpOf(f)
		return ok && ep == "gw.example:443"
	})
	disconnect(g1)
	for _, bad := range []string{"", "no port"} {
		g := h.start(t, "gateway without a TCP endpoint", gwTLS, hello(bad))
		i, _ = nurse.waitFrame(t, i+1, "client map without the TCP endpoint", func(f *controlproto.Frame) bool {
			ep, ok := tcpOf(f)
			return ok && ep == ""
		})
		disconnect(g)
		g = h.start(t, "gateway with its TCP endpoint again", gwTLS, hello("gw.example:443"))
		i, _ = nurse.waitFrame(t, i+1, "client map with the TCP endpoint again", func(f *controlproto.Frame) bool {
			ep, ok := tcpOf(f)
			return ok && ep == "gw.example:443"
		})
		disconnect(g)
	}
}
