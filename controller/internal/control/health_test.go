package control_test

import (
	"crypto/tls"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// fakeClock is a settable clock for gateway health.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// Both gateways of a segment reach a client, in the client's own order.
// A gateway whose control connection is gone past the grace period goes
// last in the order and is marked down (and 'gateway list' says dead);
// when it connects again it is first again. An old client (capability 8)
// gets the segment on the first gateway of its order only.
func TestGatewayDownOrderedLastAndBack(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC).UnixNano())
	h := newHarness(t, func(c *control.Config) { c.Now = clock.now; c.GatewayGrace = 10 * time.Second })
	h.world(t)
	_, aTLS := h.enrollGateway(t, "gw-a", "lan")
	_, bTLS := h.enrollGateway(t, "gw-b", "lan")
	_, nurseTLS := h.enrollDevice(t, "dev-nurse", "nurse")
	hello := func(ep string) controlproto.Hello {
		return controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "v-test", Endpoint: ep}
	}
	tlsOf := map[string]*tls.Config{"gw-a": aTLS, "gw-b": bTLS}
	endpoint := map[string]string{"gw-a": "127.0.0.1:51820", "gw-b": "127.0.0.1:51821"}
	gws := map[string]*runningAgent{}
	for id := range tlsOf {
		gws[id] = h.start(t, id, tlsOf[id], hello(endpoint[id]))
	}
	order := netmap.RankGateways("dev-nurse", []string{"gw-a", "gw-b"}, nil)
	pref, other := order[0], order[1]
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	lanIs := func(want []string, down bool) func(*controlproto.Frame) bool {
		return func(f *controlproto.Frame) bool {
			m := f.ClientMap
			if f.Type != controlproto.TypeClientMap || len(m.Segments) != 1 || len(m.Gateways) != 2 {
				return false
			}
			i := slices.IndexFunc(m.Gateways, func(g controlproto.ClientGateway) bool { return g.GatewayID == pref })
			return slices.Equal(m.Segments[0].Gateways, want) && m.Gateways[i].Down == down
		}
	}
	next, _ := nurse.waitFrame(t, 0, "client map with both gateways, "+pref+" first", lanIs(order, false))
	if st := h.srv.GatewayStatus(pref); st.State != control.GatewayUp || st.Version != "v-test" {
		t.Fatalf("%s status %+v, want up, version v-test", pref, st)
	}
	// The load a gateway reports shows while it is up; none before.
	if st := h.srv.GatewayStatus(pref); st.Load != nil {
		t.Fatalf("%s load %+v before it reported any", pref, st.Load)
	}
	gws[pref].cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: &controlproto.Activity{
		Load: &controlproto.GatewayLoad{Peers: 3, Flows: 7}}})
	waitUntil(t, pref+" load reported", func() bool {
		l := h.srv.GatewayStatus(pref).Load
		return l != nil && *l == controlproto.GatewayLoad{Peers: 3, Flows: 7}
	})

	// The preferred gateway goes away: within the grace period nothing
	// changes; past it, it is ordered last.
	gws[pref].stop()
	waitUntil(t, pref+" disconnected", func() bool { return h.srv.GatewayStatus(pref).State == control.GatewayDisconnected })
	clock.advance(9 * time.Second)
	h.recomputed(t)
	if st := h.srv.GatewayStatus(pref); st.State != control.GatewayDisconnected {
		t.Fatalf("within the grace period %s is %s, want disconnected", pref, st.State)
	}
	clock.advance(2 * time.Second)
	next, _ = nurse.waitFrame(t, next, "client map with "+pref+" last and down", lanIs([]string{other, pref}, true))
	if st := h.srv.GatewayStatus(pref); st.State != control.GatewayDead || st.Version != "v-test" || st.LastSeen.IsZero() {
		t.Fatalf("%s status %+v, want dead with its version and last seen", pref, st)
	}
	if st := h.srv.GatewayStatus(pref); st.Load != nil {
		t.Errorf("%s is dead and still shows load %+v", pref, st.Load)
	}

	// An old client gets lan on the live gateway only.
	_, oldTLS := h.enrollDevice(t, "dev-old", "nurse")
	old, err := dialRaw(t, h, oldTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.writeFrame(&controlproto.Frame{Type: controlproto.TypeHello, Hello: &controlproto.Hello{Kind: controlproto.KindClient, CapabilityVersion: 8}}); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(old)
	if err != nil {
		t.Fatal(err)
	}
	if m := f.ClientMap; f.Type != controlproto.TypeClientMap || m.Segments != nil || len(m.Gateways) != 1 || m.Gateways[0].GatewayID != other || m.Gateways[0].Down ||
		!slices.Contains(m.Gateways[0].AllowedIPs, ehrAddr) {
		t.Fatalf("capability-8 client map %s: want lan (ehr) on %s alone", summary(f), other)
	}

	// It comes back: first again.
	h.start(t, pref+" again", tlsOf[pref], hello(endpoint[pref]))
	nurse.waitFrame(t, next, "client map with "+pref+" first again", lanIs(order, false))
	if st := h.srv.GatewayStatus(pref); st.State != control.GatewayUp {
		t.Fatalf("%s back: status %+v, want up", pref, st)
	}
}
