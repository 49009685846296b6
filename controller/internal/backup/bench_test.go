package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// BenchmarkBackupRestore backs up and restores a controller whose audit
// log holds auditRecords records (a busy hospital's weeks of flow
// records): the restore includes the whole log's verification.
// go test -run X -bench BackupRestore -benchtime 1x ./controller/internal/backup/
func BenchmarkBackupRestore(b *testing.B) {
	const auditRecords = 200_000
	ctx := context.Background()
	c := newController(b)
	batch := make([]store.AuditEvent, 1000)
	for i := 0; i < auditRecords; i += len(batch) {
		for j := range batch {
			batch[j] = store.AuditEvent{Type: audit.FlowAllow, Actor: "gateway:gw-1", Outcome: "allow", Subject: fmt.Sprint("device-", i+j),
				Details: map[string]string{"dst": "10.20.0.10:80", "proto": "tcp", "user": "nurse"}}
		}
		if err := c.owner.Record(ctx, state.Origin{Actor: "gateway:gw-1"}, batch...); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := c.led.Sign(ctx); err != nil {
		b.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		var out bytes.Buffer
		start := time.Now()
		if _, err := Create(ctx, Options{DataDir: c.dir, Recipients: []age.Recipient{id.Recipient()}}, &out); err != nil {
			b.Fatal(err)
		}
		size := out.Len()
		backupTook := time.Since(start)
		start = time.Now()
		to := filepath.Join(b.TempDir(), fmt.Sprint(i))
		res, err := Restore(ctx, RestoreOptions{DataDir: to, Identities: []age.Identity{id}}, &out)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "restore-s")
		b.ReportMetric(backupTook.Seconds(), "backup-s")
		b.ReportMetric(float64(size)/(1<<20), "MiB")
		b.ReportMetric(float64(res.Audit.Records), "records")
		os.RemoveAll(to)
	}
}
