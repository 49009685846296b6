package flow

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

// passCounted sends pkts from the client (passing) and returns their bytes.
func (h *harness) passCounted(pkts ...[]byte) (n uint64) {
	h.t.Helper()
	for _, p := range pkts {
		h.passes(p)
		n += uint64(len(p))
	}
	return n
}

func (h *harness) returnCounted(pkts ...[]byte) (n uint64) {
	h.t.Helper()
	for _, p := range pkts {
		h.returns(p)
		n += uint64(len(p))
	}
	return n
}

func checkEnd(t *testing.T, ev controlproto.FlowEvent, reason string, pktsApp, bytesApp, pktsClient, bytesClient uint64, dur time.Duration) {
	t.Helper()
	if ev.Action != controlproto.FlowEnd || ev.EndReason != reason || ev.App == "" || ev.DeviceID != "dev-alice" || ev.Rule == "" ||
		ev.PacketsToApp != pktsApp || ev.BytesToApp != bytesApp || ev.PacketsToClient != pktsClient || ev.BytesToClient != bytesClient ||
		ev.Duration != dur {
		t.Fatalf("end record %+v\nwant reason %s, to app %d packets %d bytes, to client %d packets %d bytes, duration %v",
			ev, reason, pktsApp, bytesApp, pktsClient, bytesClient, dur)
	}
}

// TestFlowEndRecords: every way a flow leaves the table gives one end
// record with the flow's counters each way, its duration on the
// authorizer's clock and the reason.
func TestFlowEndRecords(t *testing.T) {
	t.Run("reset", func(t *testing.T) {
		h := newHarness(t, fullPolicy(t))
		up := h.passCounted(tcp(aliceP, ehrP, syn, 1000, 0, ""))
		down := h.returnCounted(tcp(ehrP, aliceP, synack, 5000, 1001, ""))
		up += h.passCounted(tcp(aliceP, ehrP, psh, 1001, 5001, "hello"))
		h.advance(3 * time.Second)
		down += h.returnCounted(tcp(ehrP, aliceP, psh, 5001, 1006, "world!"))
		up += h.passCounted(tcp(aliceP, ehrP, rst, 1006, 0, ""))
		checkEnd(t, h.end(), controlproto.EndClosed, 3, up, 2, down, 3*time.Second)
		if s := h.a.Stats(); s.FlowsEnded != 1 || s.FlowsOpen != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("fin both ways, then the linger", func(t *testing.T) {
		h := newHarness(t, fullPolicy(t))
		up := h.passCounted(tcp(aliceP, ehrP, syn, 1000, 0, ""))
		down := h.returnCounted(tcp(ehrP, aliceP, synack, 5000, 1001, ""))
		up += h.passCounted(tcp(aliceP, ehrP, fin, 1001, 5001, ""))
		down += h.returnCounted(tcp(ehrP, aliceP, fin, 5001, 1002, ""))
		up += h.passCounted(tcp(aliceP, ehrP, ack, 1002, 5002, ""))
		h.event() // the allow
		h.noEvent()
		h.advance(11 * time.Second)
		h.sweep()
		checkEnd(t, h.end(), controlproto.EndClosed, 3, up, 2, down, 11*time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		h := newHarness(t, fullPolicy(t))
		q := packettest.UDP(aliceP, dnsP, []byte("query"))
		up := h.passCounted(q, q)
		down := h.returnCounted(packettest.UDP(dnsP, aliceP, []byte("answer")))
		h.advance(61 * time.Second)
		h.sweep()
		checkEnd(t, h.end(), controlproto.EndIdle, 2, up, 1, down, 61*time.Second)
	})
	t.Run("cut by policy", func(t *testing.T) {
		h := newHarness(t, fullPolicy(t))
		q := packettest.UDP(aliceP, dnsP, []byte("query"))
		up := h.passCounted(q)
		h.a.SetPolicy(compile(t, "r-ehr"))
		ev := h.end()
		checkEnd(t, ev, controlproto.EndCut, 1, up, 0, 0, 0)
		if ev.Reason != policy.ReasonNoRule.String() {
			t.Fatalf("cut end reason detail %q", ev.Reason)
		}
	})
	t.Run("session end", func(t *testing.T) {
		h := newHarness(t, fullPolicy(t))
		q := packettest.UDP(aliceP, dnsP, []byte("query"))
		up := h.passCounted(q)
		h.a.SetPolicy(fullPolicyWithout(t, "dev-alice"))
		checkEnd(t, h.end(), controlproto.EndSessionEnd, 1, up, 0, 0, 0)
	})
}

// TestRecordsCarrySessionAndPolicyVersion: decisions and ends name the
// session and the policy version in force.
func TestRecordsCarrySessionAndPolicyVersion(t *testing.T) {
	h := newHarness(t, nil)
	h.a.SetPolicyVersion(conditional(t, nil, &policy.Session{ID: "sess-42"}), 7)
	h.passes(tcp(aliceP, ehrP, syn, 1000, 0, ""))
	ev := h.event()
	if ev.Action != controlproto.FlowAllow || ev.Session != "sess-42" || ev.PolicyVersion != 7 {
		t.Fatalf("allow %+v", ev)
	}
	h.passes(tcp(aliceP, ehrP, rst, 1001, 0, ""))
	if ev := h.end(); ev.Session != "sess-42" || ev.PolicyVersion != 7 {
		t.Fatalf("end %+v", ev)
	}
	h.blocked(tcp(aliceP, dnsP, syn, 1, 0, ""))
	if ev := h.event(); ev.Action != controlproto.FlowDeny || ev.PolicyVersion != 7 {
		t.Fatalf("deny %+v", ev)
	}
}

// TestAdmitRefusesNewFlowsOnly: while Admit says no (the audit spool is
// full), new flows to the apps it names are denied and recorded as such;
// open flows go on.
func TestAdmitRefusesNewFlowsOnly(t *testing.T) {
	var full bool
	h := newHarness(t, fullPolicy(t), func(c *Config) {
		c.Admit = func(app string) bool { return !full || app != "ehr" }
	})
	establish(h, aliceP, ehrP)
	full = true
	h.passes(tcp(aliceP, ehrP, psh, 1011, 5021, "more")) // open: passes
	other := netip.AddrPortFrom(alice, 40001)
	h.blocked(tcp(other, ehrP, syn, 1, 0, ""))
	ev := h.event()
	if ev.Action != controlproto.FlowDeny || ev.Reason != ReasonAuditSpoolFull || ev.App != "ehr" {
		t.Fatalf("refusal %+v", ev)
	}
	h.passes(packettest.UDP(aliceP, dnsP, []byte("q"))) // dns is not refused here
	if ev := h.event(); ev.Action != controlproto.FlowAllow {
		t.Fatalf("dns %+v", ev)
	}
	if s := h.a.Stats(); s.FlowsRefused != 1 {
		t.Fatalf("FlowsRefused %d", s.FlowsRefused)
	}
	full = false
	h.passes(tcp(other, ehrP, syn, 1, 0, ""))
}
