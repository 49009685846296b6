package ledger_test

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
)

// go test -run XXX -bench VerifyLog ./controller/internal/ledger -args -records=10000000
var benchRecords = flag.Int("records", 100_000, "records in the log BenchmarkVerifyLog builds")

// benchLedger is a ledger configured as cfg over a new store.
func benchLedger(b *testing.B, cfg ledger.Config) (*sqlite.Store, *state.State, *ledger.Ledger) {
	dir := b.TempDir()
	st, err := sqlite.Open(b.Context(), filepath.Join(dir, "cordon.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	key, err := ledger.LoadKey(dir)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Store, cfg.State, cfg.Key = st, state.New(state.Config{Store: st}), key
	return st, cfg.State, ledger.New(cfg)
}

func flowBatch(n int) []store.AuditEvent {
	batch := make([]store.AuditEvent, n)
	for i := range batch {
		batch[i] = store.AuditEvent{Type: audit.FlowAllow, Actor: "gateway:gw-1", Outcome: "allow", Subject: "ehr",
			Details: map[string]string{"proto": "tcp", "src": fmt.Sprintf("100.64.0.%d:%d", i%250, 40000+i), "dst": "10.20.0.10:443", "gateway": "gw-1", "user": "nurse", "device": "dev-3f2a9c01d2"}}
	}
	return batch
}

// BenchmarkAppendWithCheckpoints appends batches of 100 flow records, the
// way gateways' reports arrive (one transaction each, through the state
// owner), while the ledger signs a checkpoint every 100 ms (20 times as
// often as the controller does). ns/op is per batch; records/s is the
// sustained rate with checkpointing.
func BenchmarkAppendWithCheckpoints(b *testing.B) {
	ctx := b.Context()
	var signed atomic.Int64
	_, owner, l := benchLedger(b, ledger.Config{Interval: 100 * time.Millisecond, Publish: func(ledger.Signed) { signed.Add(1) }})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { l.Run(rctx); close(done) }()
	batch := flowBatch(100)
	origin := state.Origin{Actor: "gateway:gw-1"}
	for b.Loop() {
		if err := owner.Record(ctx, origin, batch...); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := b.Elapsed()
	stop()
	<-done
	b.ReportMetric(float64(b.N*len(batch))/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*len(batch)), "ns/record")
	b.ReportMetric(float64(signed.Load()), "checkpoints")
	if rep, err := l.Verify(ctx); err != nil || !rep.OK() {
		b.Fatalf("log after the benchmark: %v %+v", err, rep)
	}
}

// BenchmarkVerifyLog is the controller's verification of a stored log of
// -records records (built first, in batches of 1,000, with checkpoints every
// 100,000): every record re-encoded and hashed, every checkpoint checked.
func BenchmarkVerifyLog(b *testing.B) {
	ctx := b.Context()
	st, _, l := benchLedger(b, ledger.Config{})
	batch := flowBatch(1000)
	start := time.Now()
	for n := 0; n < *benchRecords; n += len(batch) {
		if err := st.AppendAudit(ctx, batch[:min(len(batch), *benchRecords-n)]...); err != nil {
			b.Fatal(err)
		}
		if (n+len(batch))%100_000 == 0 {
			if _, err := l.Sign(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := l.Sign(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a log of %d records in %v", *benchRecords, time.Since(start))
	for b.Loop() {
		rep, err := l.Verify(ctx)
		if err != nil || !rep.OK() || rep.Records != int64(*benchRecords) {
			b.Fatalf("verify: %v %+v", err, rep)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N**benchRecords), "ns/record")
}
