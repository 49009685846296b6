package control_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
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
