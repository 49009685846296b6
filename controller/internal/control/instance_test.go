package control_test

import (
	"slices"
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// A gateway's run (Hello.Instance) reaches its clients' maps, after the new
// run has its own map; a disconnect, a reconnect of the same run, or a
// hello without an instance (an older gateway) changes nothing for them.
func TestGatewayInstanceReachesClients(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	gw, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	gwHello := func(inst controlproto.InstanceID) controlproto.Hello {
		return controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint, Instance: inst}
	}
	instance := func(f *controlproto.Frame) (controlproto.InstanceID, bool) {
		if f.Type != controlproto.TypeClientMap {
			return "", false
		}
		for _, g := range f.ClientMap.Gateways {
			if g.GatewayID == gw.ID {
				return g.Instance, true
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

	run1 := h.start(t, "gateway run 1", gwTLS, gwHello("run-1"))
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	i, _ := nurse.waitFrame(t, 0, "client map with instance run-1", func(f *controlproto.Frame) bool {
		inst, ok := instance(f)
		return ok && inst == "run-1"
	})

	// The gateway goes away, then the same run reconnects (a control
	// blip): the nurse gets nothing.
	disconnect(run1)
	h.recomputed(t)
	blip := h.start(t, "gateway run 1 again", gwTLS, gwHello("run-1"))
	blip.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	h.recomputed(t)
	if n := nurse.count(); n != i+1 {
		t.Fatalf("a gateway disconnect and reconnect of the same run sent the nurse %d frames, want 0", n-(i+1))
	}
	disconnect(blip)

	// A new run: the nurse's map carries it, after the gateway's map.
	run2 := h.start(t, "gateway run 2", gwTLS, gwHello("run-2"))
	_, g := run2.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	j, c := nurse.waitFrame(t, i+1, "client map with instance run-2", func(f *controlproto.Frame) bool {
		inst, ok := instance(f)
		return ok && inst == "run-2"
	})
	if c.at.Before(g.at) {
		t.Errorf("the nurse learned of the new run %v before the gateway got its map", g.at.Sub(c.at))
	}
	disconnect(run2)

	// A gateway without an instance (before capability 5), or with an
	// invalid one, leaves the last known one.
	for _, inst := range []controlproto.InstanceID{"", "bad instance"} {
		old := h.start(t, "gateway without instance", gwTLS, gwHello(inst))
		old.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
		h.recomputed(t)
		if n := nurse.count(); n != j+1 {
			t.Fatalf("a hello with instance %q sent the nurse %d frames, want 0", inst, n-(j+1))
		}
		disconnect(old)
	}
}
