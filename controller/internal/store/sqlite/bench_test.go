package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

func BenchmarkCreateDevice(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "cordon.db"))
	ctx := b.Context()
	if err := s.CreateUser(ctx, store.User{Name: "nurse"}); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := s.CreateDevice(ctx, store.Device{ID: fmt.Sprintf("d%08d", i), User: "nurse", Hostname: "ward3-pc"}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAppendAudit appends batches of 100 events; ns/op is per batch.
func BenchmarkAppendAudit(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "cordon.db"))
	ctx := b.Context()
	batch := make([]store.AuditEvent, 100)
	for i := range batch {
		batch[i] = store.AuditEvent{
			Time: time.Now(), Type: "flow.allow", Actor: "gateway:gw-1", Outcome: "allow",
			Subject: "ehr:443", Details: map[string]string{"src": "100.64.0.7", "dst": "10.20.0.10", "proto": "tcp"},
		}
	}
	for b.Loop() {
		if err := s.AppendAudit(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
}
