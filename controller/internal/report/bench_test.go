package report

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

var benchRecords = flag.Int("records", 100_000, "records in the period BenchmarkBuild counts")

// BenchmarkBuild: the counting part of a report (the log's verification
// is BenchmarkVerifyLog in controller/internal/ledger) over a quarter of
// records: per 10, 6 flow.end (not counted), 2 flow.deny, 1 session.start,
// 1 session.end.
func BenchmarkBuild(b *testing.B) {
	ctx := b.Context()
	st := openStore(b)
	in := input(b, strict)
	batch := make([]store.AuditEvent, 0, 1000)
	flush := func() {
		if err := st.AppendAudit(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	flow := map[string]string{"proto": "tcp", "src": "100.64.0.2:40000", "dst": "10.20.0.10:443", "gateway": "gw-1"}
	for i := range *benchRecords {
		at := in.From.Add(time.Duration(i) * (90 * 24 * time.Hour / time.Duration(*benchRecords)))
		e := store.AuditEvent{Time: at, Actor: "gateway:gw-1", Subject: "ehr", Details: flow}
		switch i % 10 {
		case 0:
			e.Type, e.Outcome, e.Actor = audit.SessionStart, "success", "user:alice"
			e.Details = map[string]string{"source": "192.0.2.1", "device": fmt.Sprint("dev-", i%500), "method": "oidc:okta", "mfa": "true"}
		case 1:
			e.Type, e.Outcome, e.Actor = audit.SessionEnd, "success", "controller"
			e.Details = map[string]string{"device": "dev-1", "user": "alice", "reason": "idle"}
		case 2, 3:
			e.Type, e.Outcome = audit.FlowDeny, "deny"
		default:
			e.Type, e.Outcome = audit.FlowEnd, string(audit.Ended)
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	for b.Loop() {
		rep, err := Build(ctx, st, in)
		if err != nil {
			b.Fatal(err)
		}
		if got := rep.Figures[0].Value; got != int64((*benchRecords+9)/10) {
			b.Fatalf("sessions_started = %d", got)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N**benchRecords), "ns/record")
}
