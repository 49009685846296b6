package controlclient

import (
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

func gwMap(rev uint64, peers ...string) *controlproto.GatewayMap {
	m := &controlproto.GatewayMap{Revision: rev, GatewayID: "gw-1", OverlayAddr: netip.MustParseAddr("100.64.0.1")}
	for _, p := range peers {
		m.Peers = append(m.Peers, controlproto.GatewayPeer{Peer: policy.Peer{DeviceID: p, Rules: []policy.RuleID{"r"}}})
	}
	return m
}

func delta(t *testing.T, from, to *controlproto.GatewayMap) *controlproto.Frame {
	t.Helper()
	d, err := controlproto.DiffGatewayMap(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return &controlproto.Frame{Type: controlproto.TypeGatewayDelta, GatewayDelta: d}
}

// agentSim records what the agent was handed and can refuse maps.
type agentSim struct {
	got    []*controlproto.GatewayMap
	refuse bool
}

func (a *agentSim) apply(f *controlproto.Frame) error {
	if f.Type != controlproto.TypeGatewayMap {
		return errors.New("agent was handed a " + f.Type)
	}
	if a.refuse {
		return errors.New("policy does not compile")
	}
	a.got = append(a.got, f.GatewayMap)
	return nil
}

func TestMapStateDeltas(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	var s mapState
	var a agentSim
	m1, m3, m4 := gwMap(1, "a", "b"), gwMap(3, "a", "c"), gwMap(4, "c")

	// A delta before any map: a gap, the agent is not bothered.
	if ack := s.handle(delta(t, m1, m3), a.apply, log); !ack.Resync || ack.Revision != 3 || len(a.got) != 0 {
		t.Fatalf("delta before a map: ack %+v, agent got %d maps", ack, len(a.got))
	}
	if ack := s.handle(&controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: m1}, a.apply, log); *ack != (controlproto.Ack{Revision: 1}) {
		t.Fatalf("whole map: ack %+v", ack)
	}
	// Revisions may skip (the controller coalesces): 1 → 3.
	if ack := s.handle(delta(t, m1, m3), a.apply, log); *ack != (controlproto.Ack{Revision: 3}) {
		t.Fatalf("delta 1→3: ack %+v", ack)
	}
	if got := a.got[len(a.got)-1]; !reflect.DeepEqual(got, m3) {
		t.Fatalf("agent got %+v, want %+v", got, m3)
	}
	// A delta from a revision the agent does not hold: resync.
	if ack := s.handle(delta(t, m1, m4), a.apply, log); !ack.Resync || ack.Revision != 4 || ack.Error == "" {
		t.Fatalf("gap: ack %+v", ack)
	}
	// The agent refuses the map a delta makes: an error ack, no resync,
	// and the next delta still applies to the map it kept.
	a.refuse = true
	if ack := s.handle(delta(t, m3, m4), a.apply, log); ack.Resync || ack.Error == "" || ack.Revision != 4 {
		t.Fatalf("refused: ack %+v", ack)
	}
	a.refuse = false
	m5 := gwMap(5, "c", "d")
	if ack := s.handle(delta(t, m3, m5), a.apply, log); *ack != (controlproto.Ack{Revision: 5}) {
		t.Fatalf("after a refused map, delta from the kept one: ack %+v", ack)
	}
	if got := a.got[len(a.got)-1]; !reflect.DeepEqual(got, m5) {
		t.Fatalf("agent got %+v, want %+v", got, m5)
	}
	// A delta that does not fit (removes a peer the map lacks): resync,
	// and the kept map is untouched.
	bad := &controlproto.Frame{Type: controlproto.TypeGatewayDelta, GatewayDelta: &controlproto.GatewayMapDelta{From: 5, To: 6,
		Peers: controlproto.ListDelta[controlproto.GatewayPeer, string]{Remove: []string{"zz"}}}}
	if ack := s.handle(bad, a.apply, log); !ack.Resync {
		t.Fatalf("bad delta: ack %+v", ack)
	}
	if !reflect.DeepEqual(s.Gateway, m5) {
		t.Fatalf("kept map changed: %+v", s.Gateway)
	}
	// Other frames pass through without an ack.
	if ack := s.handle(&controlproto.Frame{Type: controlproto.TypeError, Error: "x"}, func(*controlproto.Frame) error { return nil }, log); ack != nil {
		t.Fatalf("non-map frame acked: %+v", ack)
	}
}
