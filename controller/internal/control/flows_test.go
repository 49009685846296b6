package control_test

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// TestNumberedFlowEventsRecordedOnce: a capability-11 gateway's numbered
// batch is committed and acknowledged with its highest number; a resend
// overlapping it records only what is new, and a new spool starts again.
func TestNumberedFlowEventsRecordedOnce(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	gw := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint})
	gw.waitFrame(t, 0, "gateway map", func(*controlproto.Frame) bool { return true })

	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	src := netip.MustParseAddrPort("100.64.0.2:40000")
	ev := func(seq uint64, action controlproto.FlowAction) controlproto.FlowEvent {
		return controlproto.FlowEvent{Seq: seq, Time: at.Add(time.Duration(seq) * time.Second), Action: action, DeviceID: "dev-nurse", User: "nurse",
			App: "ehr", Rule: "clin-ehr", Proto: policy.ProtoTCP, Src: src, Dst: netip.MustParseAddrPort("10.20.0.10:443"),
			Session: "sess-1", PolicyVersion: 3, EndReason: controlproto.EndIdle, PacketsToApp: 5, BytesToApp: 500, PacketsToClient: 4,
			BytesToClient: 4000, Duration: 90 * time.Second}
	}
	from := 0
	send := func(spool string, seq uint64, evs ...controlproto.FlowEvent) {
		t.Helper()
		if !gw.cc.Send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{SpoolID: spool, Events: evs}}) {
			t.Fatal("Send dropped the frame")
		}
		var r received
		from, r = gw.waitFrame(t, from, "flow ack", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeFlowAck })
		from++
		if a := r.f.FlowAck; a.SpoolID != spool || a.Seq != seq {
			t.Fatalf("ack %+v, want spool %s seq %d", a, spool, seq)
		}
	}
	const spoolA = "0123456789abcdef0123456789abcdef"
	send(spoolA, 2, ev(1, controlproto.FlowAllow), ev(2, controlproto.FlowEnd))
	send(spoolA, 3, ev(1, controlproto.FlowAllow), ev(2, controlproto.FlowEnd), ev(3, controlproto.FlowAllow)) // a resend after a crash
	send(spoolA, 3, ev(2, controlproto.FlowEnd))                                                               // all old
	send(spoolA, 3)                                                                                            // a heartbeat
	const spoolB = "fedcba9876543210fedcba9876543210"
	send(spoolB, 1, ev(1, controlproto.FlowAllow)) // a new spool starts from 1 again

	got, err := h.store.ListAudit(h.ctx, store.AuditFilter{Type: "flow."})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(got)
	var seqs []string
	for _, e := range got {
		seqs = append(seqs, string(e.Type)+"#"+e.Details["seq"])
	}
	want := []string{"flow.allow#1", "flow.end#2", "flow.allow#3", "flow.allow#1"}
	if !slices.Equal(seqs, want) {
		t.Fatalf("recorded %v, want %v", seqs, want)
	}
	end := got[1]
	for k, v := range map[string]string{"end_reason": "idle", "packets_to_app": "5", "bytes_to_app": "500", "packets_to_client": "4",
		"bytes_to_client": "4000", "duration": "1m30s", "session": "sess-1", "policy_version": "3"} {
		if end.Details[k] != v {
			t.Errorf("flow.end detail %s = %q, want %q (%v)", k, end.Details[k], v, end.Details)
		}
	}
	if end.Outcome != string(audit.Ended) || end.Details["received_at"] == "" {
		t.Errorf("flow.end %+v", end)
	}
}

// TestClockSkewAndSpoolAlerts: a gateway's clock off by more than the
// threshold raises one alert per onset and one cleared when back within
// half of it; a full spool likewise. The controller's clock is injected.
func TestClockSkewAndSpoolAlerts(t *testing.T) {
	var nowNS atomic.Int64
	ctrl := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	nowNS.Store(ctrl.UnixNano())
	h := newHarness(t, func(c *control.Config) {
		c.Now = func() time.Time { return time.Unix(0, nowNS.Load()) }
		c.ClockSkewThreshold = 2 * time.Second
	})
	h.world(t)
	_, gwTLS := h.enrollGateway(t, "gw-lan", "lan")
	gw := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint})
	gw.waitFrame(t, 0, "gateway map", func(*controlproto.Frame) bool { return true })
	from := 0
	report := func(skew time.Duration, full bool) {
		t.Helper()
		st := &controlproto.SpoolStatus{Full: full, Bytes: 100, MaxBytes: 1000, Policy: "fail-closed-phi", Refused: 2}
		if !gw.cc.Send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: &controlproto.FlowEvents{
			SpoolID: "0123456789abcdef0123456789abcdef", SentAt: ctrl.Add(skew), Spool: st}}) {
			t.Fatal("Send dropped the frame")
		}
		from, _ = gw.waitFrame(t, from, "flow ack", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeFlowAck })
		from++
	}
	alerts := func() []string {
		got, err := h.store.ListAudit(h.ctx, store.AuditFilter{Type: "audit."})
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(got)
		var out []string
		for _, e := range got {
			out = append(out, string(e.Type)+":"+e.Outcome+":"+e.Details["skew"])
		}
		return out
	}
	report(time.Second, false)           // within
	report(5*time.Second, false)         // onset
	report(-4*time.Second, false)        // still off (the other way): no second alert
	report(1500*time.Millisecond, false) // within the threshold but not half: still skewed
	report(500*time.Millisecond, true)   // back; spool full
	report(0, true)                      // still full: nothing
	if tt := h.srv.Totals(); tt.ClockSkewed != 0 || tt.SpoolFull != 1 {
		t.Errorf("totals while the spool is full: %+v", tt)
	}
	report(0, false) // room again
	want := []string{"audit.clock.skew:alert:5s", "audit.clock.skew:cleared:500ms", "audit.spool.full:alert:", "audit.spool.full:cleared:"}
	if got := alerts(); !slices.Equal(got, want) {
		t.Fatalf("alerts %v, want %v", got, want)
	}
}
