package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/auditlog"
)

// heldCheckpoint is the audit log checkpoint the gateway holds (its
// witness file), or an error while it holds none.
func (w *world) heldCheckpoint() (auditlog.Checkpoint, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, "gateway", "audit-checkpoint"))
	if err != nil {
		return auditlog.Checkpoint{}, err
	}
	text, _, _ := strings.Cut(string(b), "\n\n")
	return auditlog.ParseCheckpointBody(text + "\n")
}

// TestAuditLogRollbackCaughtByGateway: the controller's database is
// replaced by an older backup (a log that is consistent in itself, so the
// controller's own verify passes) and then grows into a fork. The gateway,
// which holds a checkpoint of the longer log, refuses the controller's
// checkpoints and alerts, the controller records the gateway's alert, and
// cordonctl audit verify against the gateway's checkpoint fails.
//
//	controller ──(QUIC: checkpoints + proofs)──> gateway: audit-checkpoint
func TestAuditLogRollbackCaughtByGateway(t *testing.T) {
	w := newWorld(t)
	dbFiles := []string{"cordon.db", "cordon.db-wal", "cordon.db-shm"}
	gwCheckpoint := filepath.Join(w.dir, "gateway", "audit-checkpoint")

	// A backup, taken with the controller stopped.
	w.controller.stop()
	backup := filepath.Join(w.dir, "backup")
	os.MkdirAll(backup, 0o700)
	for _, f := range dbFiles {
		if b, err := os.ReadFile(filepath.Join(w.ctlDataDir, f)); err == nil {
			os.WriteFile(filepath.Join(backup, f), b, 0o600)
		}
	}
	w.startController("controller-2")
	out := w.mustCtl("", "audit", "verify")
	backupSize := verifiedRecords(t, out)

	// The log grows, and the gateway sees it grow past the backup.
	for i := range 3 {
		w.mustCtl("", "segment", "create", fmt.Sprintf("later-%d", i), "--cidr", "10.99.0.0/24")
	}
	var held auditlog.Checkpoint
	waitFor(t, 30*time.Second, "the gateway to hold a checkpoint past the backup", func() error {
		c, err := w.heldCheckpoint()
		if err != nil {
			return err
		}
		if c.Size <= backupSize+2 {
			return fmt.Errorf("gateway holds size %d, backup has %d records", c.Size, backupSize)
		}
		held = c
		return nil
	})
	w.mustCtl("", "audit", "verify", "--checkpoint", gwCheckpoint)

	// Roll back: the backup replaces the database.
	w.controller.stop()
	for _, f := range dbFiles {
		os.Remove(filepath.Join(w.ctlDataDir, f))
		if b, err := os.ReadFile(filepath.Join(backup, f)); err == nil {
			os.WriteFile(filepath.Join(w.ctlDataDir, f), b, 0o600)
		}
	}
	w.startController("controller-rolled-back")
	// The restored log is consistent in itself...
	if out := w.mustCtl("", "audit", "verify"); !strings.Contains(out, "log verified") {
		t.Fatalf("restored backup: %s", out)
	}
	// ...but not with what the gateway holds.
	_, errOut, code := w.cordonctl("", "audit", "verify", "--checkpoint", gwCheckpoint)
	if code != 7 || !strings.Contains(errOut, "does not extend the earlier checkpoint") {
		t.Fatalf("verify against the gateway's checkpoint: exit %d: %s", code, errOut)
	}
	waitFor(t, 30*time.Second, "the gateway's alert in the audit trail", func() error {
		out := w.mustCtl("", "audit", "list", "--type", "audit.log.inconsistent")
		if !strings.Contains(out, "gateway:") || !strings.Contains(out, "truncated or rolled back") {
			return fmt.Errorf("audit list:\n%s", out)
		}
		return nil
	})
	// The forged log grows past what the gateway holds: still refused.
	for i := range int(held.Size-backupSize) + 2 {
		w.mustCtl("", "segment", "create", fmt.Sprintf("forged-%d", i), "--cidr", "10.98.0.0/24")
	}
	waitFor(t, 30*time.Second, "the gateway to refuse the forked log", func() error {
		if !strings.Contains(w.gateway.logs(), "forked or rewritten") {
			return fmt.Errorf("gateway log does not say it refused a forked log")
		}
		return nil
	})
	if c, err := w.heldCheckpoint(); err != nil || c != held {
		t.Fatalf("the gateway's checkpoint changed: %+v, %v (held %+v)", c, err, held)
	}
}

// verifiedRecords reads N from cordonctl's "log verified: N records".
func verifiedRecords(t *testing.T, out string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscanf(out, "log verified: %d records", &n); err != nil {
		t.Fatalf("audit verify output %q: %v", out, err)
	}
	return n
}
