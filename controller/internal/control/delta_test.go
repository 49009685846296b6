package control_test

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// An agent of capability 6 gets its whole map on connect and deltas after
// that; what it rebuilds from them is what the change made.
func TestDeltasAfterFirstMap(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	h.enrollDevice(t, "dev-clerk", "clerk")

	gw := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: "127.0.0.1:51820"})
	gw.waitFrame(t, 0, "gateway map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	nurse.waitFrame(t, 0, "client map", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeClientMap && len(f.ClientMap.Gateways) == 1
	})
	sent := func(id string) (maps, deltas uint64) {
		st := h.srv.Sent()[id]
		return st.Maps, st.Deltas
	}
	// The agent may read a frame before the writer counts it.
	waitUntil(t, "whole maps on connect counted", func() bool {
		g, _ := sent("gw-lan")
		c, _ := sent("dev-nurse")
		return g > 0 && c > 0
	})
	gwMaps, _ := sent("gw-lan")
	nurseMaps, _ := sent("dev-nurse")

	gwNext, nurseNext := gw.count(), nurse.count()
	if err := h.store.RemoveMember(h.ctx, "clinicians", "nurse"); err != nil {
		t.Fatal(err)
	}
	h.srv.Changed(store.Change{All: true})
	_, g := gw.waitFrame(t, gwNext, "gateway map without the nurse's clin-ehr", func(f *controlproto.Frame) bool {
		rules, ok := peerRules(f.GatewayMap, "dev-nurse")
		return ok && slices.Equal(rules, []policy.RuleID{"bill-billing"})
	})
	_, c := nurse.waitFrame(t, nurseNext, "client map without ehr", func(f *controlproto.Frame) bool {
		return len(f.ClientMap.Gateways) == 1 && !slices.Contains(allowedIPs(f.ClientMap, "gw-lan"), ehrAddr)
	})
	// Who must NOT gain anything: the clerk's peer is untouched.
	if rules, _ := peerRules(g.f.GatewayMap, "dev-clerk"); !slices.Equal(rules, []policy.RuleID{"pharm-pharmacy"}) {
		t.Errorf("clerk's rules after the delta: %v", rules)
	}
	if !slices.Equal(allowedIPs(c.f.ClientMap, "gw-lan"), []netip.Prefix{billing, host(g.f.GatewayMap.OverlayAddr)}) {
		t.Errorf("nurse's AllowedIPs after the delta: %v", allowedIPs(c.f.ClientMap, "gw-lan"))
	}
	waitUntil(t, "the change sent as deltas", func() bool {
		gm, gd := sent("gw-lan")
		cm, cd := sent("dev-nurse")
		return gm == gwMaps && gd >= 1 && cm == nurseMaps && cd >= 1
	})
}

// readMap reads the next frame; a delta comes back as the whole map it
// makes of the last map read, as controlclient hands its agent.
func (r *rawAgent) readMap() (*controlproto.Frame, error) {
	f, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	switch {
	case f.GatewayDelta != nil && r.gatewayMap != nil:
		m, err := controlproto.ApplyGatewayDelta(r.gatewayMap, f.GatewayDelta)
		if err != nil {
			return nil, err
		}
		f = &controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: m}
	case f.ClientDelta != nil && r.clientMap != nil:
		m, err := controlproto.ApplyClientDelta(r.clientMap, f.ClientDelta)
		if err != nil {
			return nil, err
		}
		f = &controlproto.Frame{Type: controlproto.TypeClientMap, ClientMap: m}
	}
	if f.GatewayMap != nil {
		r.gatewayMap = f.GatewayMap
	}
	if f.ClientMap != nil {
		r.clientMap = f.ClientMap
	}
	return f, nil
}

// next reads the next frame within waitTimeout.
func (r *rawAgent) next(t *testing.T) *controlproto.Frame {
	t.Helper()
	r.stream.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := controlproto.ReadFrame(r.stream)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

func (r *rawAgent) ack(t *testing.T, a controlproto.Ack) {
	t.Helper()
	if err := r.writeFrame(&controlproto.Frame{Type: controlproto.TypeAck, Ack: &a}); err != nil {
		t.Fatal(err)
	}
}

func rawGateway(t *testing.T, h *harness, capability int) *rawAgent {
	t.Helper()
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	r, err := dialRaw(t, h, gwTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.writeFrame(&controlproto.Frame{Type: controlproto.TypeHello, Hello: &controlproto.Hello{
		Kind: controlproto.KindGateway, CapabilityVersion: capability, Endpoint: "127.0.0.1:9"}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// toggle changes the gateway's map: the nurse leaves or rejoins clinicians.
func toggle(t *testing.T, h *harness, in *bool) {
	t.Helper()
	var err error
	if *in {
		err = h.store.RemoveMember(h.ctx, "clinicians", "nurse")
	} else {
		err = h.store.AddMember(h.ctx, "clinicians", "nurse")
	}
	if err != nil {
		t.Fatal(err)
	}
	*in = !*in
	h.srv.Changed(store.Change{All: true})
}

// A delta the agent cannot apply (it reports a revision gap) is followed
// at once by the whole map; after an agent's error the next map goes whole.
func TestDeltaGapGetsWholeMap(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	h.enrollDevice(t, "dev-nurse", "nurse")
	h.enrollDevice(t, "dev-clerk", "clerk")
	r := rawGateway(t, h, controlproto.CapabilityVersion)

	first := r.next(t)
	if first.Type != controlproto.TypeGatewayMap {
		t.Fatalf("first frame %s, want the whole map", first.Type)
	}
	r.ack(t, controlproto.Ack{Revision: first.GatewayMap.Revision})
	in := true
	toggle(t, h, &in)
	d := r.next(t)
	if d.Type != controlproto.TypeGatewayDelta || d.GatewayDelta.From != first.GatewayMap.Revision {
		t.Fatalf("after a change: %s, want a delta from revision %d", summary(d), first.GatewayMap.Revision)
	}
	want, err := controlproto.ApplyGatewayDelta(first.GatewayMap, d.GatewayDelta)
	if err != nil {
		t.Fatal(err)
	}
	// Pretend we missed a map: resync.
	r.ack(t, controlproto.Ack{Revision: d.GatewayDelta.To, Error: "revision gap", Resync: true})
	whole := r.next(t)
	if whole.Type != controlproto.TypeGatewayMap {
		t.Fatalf("after a resync ack: %s, want the whole map", summary(whole))
	}
	if !reflect.DeepEqual(roundTrip(t, whole.GatewayMap), roundTrip(t, want)) {
		t.Fatalf("whole map after resync differs from what the delta made:\n%s\n%s", summary(whole), summary(&controlproto.Frame{GatewayMap: want}))
	}
	r.ack(t, controlproto.Ack{Revision: whole.GatewayMap.Revision})

	// Deltas again, from the whole map.
	toggle(t, h, &in)
	d = r.next(t)
	if d.Type != controlproto.TypeGatewayDelta || d.GatewayDelta.From != whole.GatewayMap.Revision {
		t.Fatalf("after the resync: %s, want a delta from %d", summary(d), whole.GatewayMap.Revision)
	}
	// The agent refuses it (its policy does not compile, say): no resend
	// of the same map, but the next change goes whole.
	r.ack(t, controlproto.Ack{Revision: d.GatewayDelta.To, Error: "policy does not compile"})
	toggle(t, h, &in)
	if f := r.next(t); f.Type != controlproto.TypeGatewayMap || f.GatewayMap.Revision != d.GatewayDelta.To+1 {
		t.Fatalf("after an error ack: %s, want the whole map of revision %d (and nothing resent before it)", summary(f), d.GatewayDelta.To+1)
	}
}

// Agents below capability 6 keep getting whole maps.
func TestOldAgentGetsWholeMaps(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	h.enrollDevice(t, "dev-nurse", "nurse")
	h.enrollDevice(t, "dev-clerk", "clerk")
	r := rawGateway(t, h, 5)
	in := true
	for i := range 3 {
		f := r.next(t)
		if f.Type != controlproto.TypeGatewayMap {
			t.Fatalf("frame %d to a capability-5 gateway: %s, want a whole map", i, f.Type)
		}
		r.ack(t, controlproto.Ack{Revision: f.GatewayMap.Revision})
		toggle(t, h, &in)
	}
	if st := h.srv.Sent()["gw-lan"]; st.Deltas != 0 || st.Maps < 3 {
		t.Errorf("sent %+v, want whole maps only", st)
	}
}

// A hello with an unsupported capability version is refused with a
// message that says what to do.
func TestUnsupportedCapabilityMessage(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	r := rawGateway(t, h, 0)
	appErr := r.closedWith(t)
	if appErr.ErrorCode != codeProtocol || !strings.Contains(appErr.ErrorMessage, "upgrade the agent") {
		t.Fatalf("closed with %v, want a protocol error saying to upgrade", appErr)
	}
}

func roundTrip(t *testing.T, m *controlproto.GatewayMap) *controlproto.GatewayMap {
	t.Helper()
	b, err := controlproto.EncodeFrame(&controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: m})
	if err != nil {
		t.Fatal(err)
	}
	f, err := controlproto.DecodeFrame(b[4:])
	if err != nil {
		t.Fatal(err)
	}
	f.GatewayMap.Revision = 0
	return f.GatewayMap
}
