package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
)

// TestBackupRestore is the recovery drill of docs/operations.md: a backup
// taken while the controller runs and admins change things, the
// controller killed (SIGKILL) and its data dir wiped, the backup restored
// into a fresh dir and the controller started on the same address. The
// gateway and the nurse's client reconnect by themselves and the nurse
// reaches ehr through the restored controller. Measured (reported in
// docs/benchmarks.md, bounded here only by the 5-minute goal): from the
// start of the restore to the nurse's first successful request after both
// agents are back on the control channel.
//
//	[ctl ns] cordon-controller ──kill -9──> rm -r data ──> restore ──> cordon-controller (same :8443)
//	                 ^ QUIC, reconnecting by themselves ^
//	[gw ns] cordon-gateway                  [cl1 ns] cordon up (nurse) ──> ehr
func TestBackupRestore(t *testing.T) {
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 20*time.Second)

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(w.dir, "backup-identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backupFile := filepath.Join(w.dir, "controller-backup.age")

	w.mustCtl("", "segment", "create", "before-backup", "--cidr", "10.95.0.0/24")
	// The backup, online, while an admin creates segments.
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg      sync.WaitGroup
		changes int
		ctlErr  error
	)
	wg.Go(func() {
		for ; ctx.Err() == nil; changes++ {
			if _, errOut, code := w.cordonctl("", "segment", "create", fmt.Sprintf("during-%d", changes), "--cidr", "10.97.0.0/24"); code != 0 {
				ctlErr = fmt.Errorf("cordonctl segment create during the backup: exit %d: %s", code, errOut)
				return
			}
		}
	})
	out, errOut, code := run(t.Context(), "", nil, bin("cordon-controller"), "backup", "--data-dir", w.ctlDataDir, "--out", backupFile, "--recipient", id.Recipient().String())
	cancel()
	wg.Wait()
	if code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	t.Logf("backup (while %d segments were created): %s", changes, strings.TrimSpace(out))
	if fi, err := os.Stat(backupFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	backupRecords := auditRecords(t, out)

	// The log grows past the backup and the gateway holds a checkpoint
	// of it: the restore is a roll back for the gateway.
	w.mustCtl("", "segment", "create", "after-backup", "--cidr", "10.96.0.0/24")
	waitFor(t, 30*time.Second, "the gateway to hold a checkpoint past the backup", func() error {
		c, err := w.heldCheckpoint()
		if err != nil {
			return err
		}
		if c.Size <= backupRecords {
			return fmt.Errorf("gateway holds size %d, backup has %d records", c.Size, backupRecords)
		}
		return nil
	})

	// The machine is lost.
	w.controller.cmd.Process.Kill()
	<-w.controller.done
	if err := os.RemoveAll(w.ctlDataDir); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, errOut, code = run(t.Context(), "", nil, bin("cordon-controller"), "restore", "--in", backupFile, "--data-dir", w.ctlDataDir, "--identity", idFile)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	restored := time.Since(start)
	t.Logf("restore: %s", strings.TrimSpace(out))
	w.startController("controller-restored")
	serving := time.Since(start)

	// Both agents back on the control channel by themselves...
	waitFor(t, 2*time.Minute, "the gateway and the nurse to reconnect to the restored controller", func() error {
		w.checkAlive()
		st, err := w.nurse.status()
		if err != nil {
			return err
		}
		if !st.ControlConnected {
			return fmt.Errorf("the nurse's client is not connected to the controller")
		}
		var gws []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		}
		w.ctlJSON(&gws, "gateway", "list")
		for _, g := range gws {
			if g.State != "up" {
				return fmt.Errorf("gateway %s is %q", g.Name, g.State)
			}
		}
		return nil
	})
	reconnected := time.Since(start)
	// ...and the nurse served.
	d, err := firstReach(t.Context(), w.nurse, ehr, start)
	if err != nil {
		t.Fatalf("the nurse did not reach ehr after the restore: %v", err)
	}
	total := max(d, reconnected)
	t.Logf("recovery: restore command %v, controller serving %v, agents reconnected %v, nurse reaches ehr %v after the restore started",
		restored.Round(time.Millisecond), serving.Round(time.Millisecond), reconnected.Round(time.Millisecond), total.Round(time.Millisecond))
	if total > 5*time.Minute {
		t.Errorf("recovery took %v, the goal is 5 minutes", total)
	}

	// What was committed before the backup is there; the audit log
	// verifies; the gateway, holding a checkpoint of the lost records,
	// reports the roll back.
	segs := w.mustCtl("", "segment", "list")
	if !strings.Contains(segs, "before-backup") || strings.Contains(segs, "after-backup") {
		t.Errorf("segments after the restore, want before-backup and not after-backup:\n%s", segs)
	}
	if out := w.mustCtl("", "audit", "verify"); !strings.Contains(out, "log verified") {
		t.Fatalf("audit verify after the restore: %s", out)
	}
	waitFor(t, 30*time.Second, "the gateway's roll back alert in the audit trail", func() error {
		out := w.mustCtl("", "audit", "list", "--type", "audit.log.inconsistent")
		if !strings.Contains(out, "gateway:") || !strings.Contains(out, "truncated or rolled back") {
			return fmt.Errorf("audit list:\n%s", out)
		}
		return nil
	})

	// The operator acknowledges the roll back on the gateway (stopped):
	// the held checkpoint is kept aside, and the restarted gateway pins
	// the restored log and goes on serving.
	held, err := w.heldCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	w.gateway.stop()
	out = mustRun(t, bin("cordon-gateway"), "ack-audit-rollback", "--state-dir", filepath.Join(w.dir, "gateway"))
	if !strings.Contains(out, fmt.Sprintf("%d records", held.Size)) || !strings.Contains(out, ".acknowledged-") {
		t.Fatalf("ack-audit-rollback said:\n%s", out)
	}
	w.gateway = w.runGateway("gateway-acknowledged")
	w.mustCtl("", "segment", "create", "after-restore", "--cidr", "10.94.0.0/24")
	waitFor(t, 30*time.Second, "the gateway to pin the restored log", func() error {
		w.checkAlive()
		c, err := w.heldCheckpoint()
		if err != nil {
			return err
		}
		if c.Root == held.Root {
			return fmt.Errorf("the gateway still holds the checkpoint from before the restore")
		}
		return nil
	})
	if strings.Contains(w.gateway.logs(), "AUDIT LOG CHECKPOINT REFUSED") {
		t.Errorf("the acknowledged gateway refused the restored log:\n%s", tail(w.gateway.logs(), 20))
	}
	w.waitReach(w.nurse, ehr, 30*time.Second)
}

// auditRecords reads N from the backup's "audit log N records".
func auditRecords(t *testing.T, out string) int64 {
	t.Helper()
	_, rest, ok := strings.Cut(out, "audit log ")
	var n int64
	if !ok {
		t.Fatalf("backup output %q names no audit log size", out)
	}
	if _, err := fmt.Sscanf(rest, "%d records", &n); err != nil {
		t.Fatalf("backup output %q: %v", out, err)
	}
	return n
}
