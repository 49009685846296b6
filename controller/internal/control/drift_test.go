package control_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// The server patches into its snapshot only what changes name. A store
// write that published nothing (a defect) is found by the drift check,
// which recomputes the maps it reaches and counts it.
func TestDriftCheckRepairsUnpublishedWrite(t *testing.T) {
	h := newHarness(t, func(c *control.Config) { c.DriftCheck = 50 * time.Millisecond })
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	h.start(t, "gateway", gwTLS, helloOf(ca.KindGateway))
	_, tc := h.enrollDevice(t, "dev-nurse", "nurse")
	nurse := h.start(t, "nurse", tc, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	i, _ := nurse.waitFrame(t, 0, "first map", func(f *controlproto.Frame) bool { return f.ClientMap != nil })
	// The harness enrolls by writing the store directly, unpublished, so a
	// check may already have repaired that (the device, not her groups).
	before := h.srv.Drifts()
	// The nurse joins the pharmacists in the store alone.
	if err := h.store.AddMember(h.ctx, "pharmacists", "nurse"); err != nil {
		t.Fatal(err)
	}
	nurse.waitFrame(t, i+1, "pharmacy routed after the drift check", func(f *controlproto.Frame) bool {
		return f.ClientMap != nil && slices.Contains(allowedIPs(f.ClientMap, "gw-lan"), pharm)
	})
	if got := h.srv.Drifts(); got <= before {
		t.Errorf("drifts = %d after an unpublished write was repaired, want more than the %d before it", got, before)
	}
}

// Every write here is published right after it commits, as the state
// owner does: the drift check, running every millisecond beside them, must
// never count one (it may read the store between a commit and its
// publish, or while the recompute holds the change it took).
func TestDriftCheckNoFalsePositives(t *testing.T) {
	h := newHarness(t, func(c *control.Config) { c.DriftCheck = time.Millisecond })
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	h.start(t, "gateway", gwTLS, helloOf(ca.KindGateway))
	_, tc := h.enrollDevice(t, "dev-nurse", "nurse")
	nurse := h.start(t, "nurse", tc, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	nurse.waitFrame(t, 0, "first map", func(f *controlproto.Frame) bool { return f.ClientMap != nil })
	// The harness enrolled by writing the store alone: let a check repair
	// that, then count from a quiet state.
	time.Sleep(50 * time.Millisecond)
	h.recomputed(t)
	before := h.srv.Drifts()
	for i := range 200 {
		var err error
		if i%2 == 0 {
			err = h.store.AddMember(h.ctx, "pharmacists", "nurse")
		} else {
			err = h.store.RemoveMember(h.ctx, "pharmacists", "nurse")
		}
		if err != nil {
			t.Fatal(err)
		}
		h.srv.Changed(store.Change{Users: []string{"nurse"}, Groups: []string{"pharmacists"}})
	}
	h.recomputed(t)
	time.Sleep(20 * time.Millisecond) // checks running after the last change
	if got := h.srv.Drifts(); got != before {
		t.Errorf("drift check counted %d drifts while every write was published", got-before)
	}
}
