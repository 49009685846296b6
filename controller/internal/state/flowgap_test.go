package state_test

import (
	"context"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Records a gateway skipped (a hole in its spool's numbers) are not in the
// trail, and the trail says which, in the transaction of the records after
// the hole; resends and a new spool's first numbers are no hole.
func TestFlowBatchGapIsRecorded(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.s.CreateSegment(ctx, admin, seg("icu")); err != nil {
		t.Fatal(err)
	}
	enrollGateway(t, f.st, "icu", "gw-1")
	flow := func(seqs ...uint64) state.FlowBatch {
		b := state.FlowBatch{GatewayID: "gw-1", SpoolID: "sp-1", Seqs: seqs}
		for range seqs {
			b.Events = append(b.Events, store.AuditEvent{Type: audit.FlowEnd, Outcome: string(audit.Success), Subject: "dev-1"})
		}
		return b
	}
	gaps := func() []store.AuditEvent {
		var out []store.AuditEvent
		for _, e := range f.audit(t) {
			if e.Type == audit.AuditFlowGap {
				out = append(out, e)
			}
		}
		return out
	}
	for _, b := range []state.FlowBatch{flow(5, 6), flow(5, 6, 7), flow(8)} {
		if _, err := f.s.RecordFlowBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if g := gaps(); len(g) != 0 {
		t.Fatalf("gap records without a hole (new spool from 5, a resend, the next number): %+v", g)
	}
	acked, err := f.s.RecordFlowBatch(ctx, flow(11, 12, 15))
	if err != nil {
		t.Fatal(err)
	}
	if acked != 15 {
		t.Fatalf("acked %d, want 15", acked)
	}
	g := gaps()
	if len(g) != 2 {
		t.Fatalf("want 2 gap records (9-10 and 13-14), got %+v", g)
	}
	want := []map[string]string{{"from": "9", "to": "10", "missing": "2"}, {"from": "13", "to": "14", "missing": "2"}}
	for _, w := range want {
		found := false
		for _, e := range g {
			if e.Subject == "gw-1" && e.Outcome == string(audit.Raised) && e.Actor == "gateway:gw-1" &&
				e.Details["spool"] == "sp-1" && e.Details["from"] == w["from"] && e.Details["to"] == w["to"] && e.Details["missing"] == w["missing"] {
				found = true
			}
		}
		if !found {
			t.Errorf("no gap record %v in %+v", w, g)
		}
	}
}
