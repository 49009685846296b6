package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hipaaReport is the part of cordonctl report hipaa -o json this test reads.
type hipaaReport struct {
	Figures []struct {
		ID    string `json:"id"`
		Value int64  `json:"value"`
	} `json:"figures"`
	Technical []struct {
		Section string `json:"section"`
		Status  string `json:"status"`
	} `json:"technical"`
	Gaps []struct {
		ID string `json:"id"`
	} `json:"gaps"`
	AuditLog struct {
		Verified       bool   `json:"verified"`
		Checkpoint     string `json:"checkpoint"`
		CheckpointSize int64  `json:"checkpoint_size"`
		Covered        bool   `json:"covered"`
	} `json:"audit_log"`
}

// TestHIPAAReport: a world in which the nurse signs in, reaches ehr, is
// denied ehr's admin port and is logged off for idleness; an auditor's
// token then builds the report of the day, whose figures count exactly
// those records (as the audit search finds them under the report's
// checkpoint), whose checkpoint verifies with 'audit verify
// --checkpoint', and whose HTML has every 164.312 row.
func TestHIPAAReport(t *testing.T) {
	t.Parallel()
	const idle = 4 * time.Second
	w := newWorld(t, withControllerArgs("--session-idle", idle.String()))
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	w.unreachable(w.nurse, w.svcs["ehr-admin"])
	w.waitAudit("flow.deny nurse → ehr:8080", func(e auditEvent) bool {
		return e.Type == "flow.deny" && e.Details["dst"] == ehrAdminAddr
	})
	w.waitAudit("session.end (idle) of the nurse", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Details["reason"] == "idle" && e.Details["user"] == "nurse"
	})

	auditorTok := strings.TrimSpace(w.mustCtl("", "token", "create", "--name", "auditor", "--role", "auditor", "--ttl", "1h"))
	tokFile := filepath.Join(w.dir, "auditor-token")
	if err := os.WriteFile(tokFile, []byte(auditorTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	day := time.Now().UTC().Format(time.DateOnly)
	reportFile := filepath.Join(w.dir, "report.json")
	var rep hipaaReport
	// Wait for a checkpoint that covers the day so far (signed within
	// seconds), so the figures count every record of the world.
	if _, err := poll(15*time.Second, 500*time.Millisecond, func() error {
		out, errOut, code := w.cordonctl("", "--token-file", tokFile, "report", "hipaa", "--from", day, "--to", day, "-o", "json", "--out", reportFile)
		if code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errOut)
		}
		b, err := os.ReadFile(reportFile)
		if err != nil {
			return err
		}
		rep = hipaaReport{}
		if err := json.Unmarshal(b, &rep); err != nil {
			return err
		}
		if !rep.AuditLog.Covered {
			return errors.New("the checkpoint does not cover the period yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("report hipaa as an auditor: %v", err)
	}
	if !rep.AuditLog.Verified || len(rep.Technical) != 12 {
		t.Fatalf("report: log verified %v, %d 164.312 rows", rep.AuditLog.Verified, len(rep.Technical))
	}

	// The figures against the trail, counted independently.
	count := func(typ string, match func(auditEvent) bool) int64 {
		var n int64
		for _, e := range w.audit("--type", typ, "--limit", "1000") {
			if e.Seq <= rep.AuditLog.CheckpointSize && match(e) {
				n++
			}
		}
		return n
	}
	every := func(auditEvent) bool { return true }
	want := map[string]int64{
		"sessions_started":    count("session.start", every),
		"sessions_with_mfa":   count("session.start", func(e auditEvent) bool { return e.Details["mfa"] == "true" }),
		"sessions_ended_idle": count("session.end", func(e auditEvent) bool { return e.Details["reason"] == "idle" }),
		"flows_denied":        count("flow.deny", every),
	}
	got := map[string]int64{}
	for _, f := range rep.Figures {
		got[f.ID] = f.Value
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("figure %s = %d, the audit trail has %d", id, got[id], n)
		}
	}
	if got["sessions_started"] < 2 || got["sessions_with_mfa"] < 2 || got["sessions_ended_idle"] < 1 || got["flows_denied"] < 1 {
		t.Errorf("figures %v: want the world's two sign-ins with TOTP, the idle logoff and the denied flow", got)
	}
	t.Logf("report figures: %v (checkpoint of %d records)", got, rep.AuditLog.CheckpointSize)

	// The report is verifiable: its checkpoint is one the log extends.
	cpFile := filepath.Join(w.dir, "report-checkpoint.txt")
	if err := os.WriteFile(cpFile, []byte(rep.AuditLog.Checkpoint), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := w.mustCtl("", "audit", "verify", "--checkpoint", cpFile); !strings.Contains(out, "extends the earlier checkpoint") {
		t.Errorf("audit verify --checkpoint of the report's checkpoint:\n%s", out)
	}

	html, errOut, code := w.cordonctl("", "--token-file", tokFile, "report", "hipaa", "--from", day, "--to", day)
	if code != 0 {
		t.Fatalf("report hipaa -o html: exit %d: %s", code, errOut)
	}
	for _, r := range rep.Technical {
		if !strings.Contains(html, `data-section="`+r.Section+`"`) {
			t.Errorf("the HTML report has no row %s", r.Section)
		}
	}
}
