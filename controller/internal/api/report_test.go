package api_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
)

// polHIPAA: two PHI apps, one rule with MFA (step-up) and posture, one
// under a written waiver; an internal app with no conditions.
const polHIPAA = `version: 1
posture_checks:
  disk-encrypted: {disk_encryption: true}
groups:
  nurses: {members: [alice, bob]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: phi}
  pacs: {segment: lan, addresses: [10.20.0.11], ports: [tcp/443], classification: phi}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
rules:
  - {name: nurses-ehr, from: [group:nurses], to: [app:ehr], when: {mfa_max_age: 12h, posture: [disk-encrypted]}}
  - {name: kiosk-pacs, from: [tag:kiosk], to: [app:pacs], waiver: "locked reading room, CAB-1"}
  - {name: nurses-wiki, from: [group:nurses], to: [app:wiki]}
`

// seedPeriod records, at the server's clock, what happened in a period:
// the figures they must give are returned by ID.
func seedPeriod(t *testing.T, e *env) map[string]int64 {
	t.Helper()
	ctx := t.Context()
	rec := func(typ audit.Type, actor, outcome, subject string, d map[string]string) {
		t.Helper()
		if err := e.Record(ctx, typ, actor, outcome, subject, d); err != nil {
			t.Fatal(err)
		}
	}
	start := func(user, mfa string) {
		rec(audit.SessionStart, "user:"+user, "success", "ses-"+user, map[string]string{"source": "192.0.2.1", "device": "dev-1", "method": "password", "mfa": mfa})
	}
	end := func(reason string) {
		rec(audit.SessionEnd, "controller", "success", "ses-x", map[string]string{"device": "dev-1", "user": "alice", "reason": reason})
	}
	deny := func() {
		rec(audit.FlowDeny, "gateway:gw-1", "deny", "ehr", map[string]string{"proto": "tcp", "src": "100.64.0.2:5000", "dst": "10.20.0.10:22", "gateway": "gw-1"})
	}
	start("alice", "true")
	start("bob", "false")
	start("alice", "true")
	end("idle")
	end("idle")
	end("absolute")
	end("admin")
	deny()
	deny()
	deny()
	rec(audit.AdminDeviceRevoke, "admin:root", "success", "dev-2", nil)
	rec(audit.AdminDeviceQuarantine, "admin:root", "success", "dev-3", map[string]string{"user": "bob", "reason": "EDR"})
	rec(audit.AuthLogin, "user:bob", "failure", "bob", map[string]string{"source": "192.0.2.1", "reason": "bad password"})
	return map[string]int64{"sessions_started": 3, "sessions_with_mfa": 2, "sessions_ended_idle": 2, "sessions_ended_absolute": 1,
		"sessions_ended_admin": 1, "flows_denied": 3, "devices_revoked": 1, "devices_quarantined": 1, "devices_released": 0, "signins_failed": 1}
}

// TestHIPAAReportAPI: the report's figures equal what the seeded audit
// log holds in the period and under the checkpoint, not before it nor
// after; every 164.312 row is there with its requirement; settings come
// from the live policy; features not built are gaps; an auditor may run
// it, helpdesk may not; bad periods are refused.
func TestHIPAAReportAPI(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "hipaa.yaml", Source: polHIPAA, Reason: "CHG-7"}))

	seedPeriod(t, e) // before the period: not counted
	e.Advance(24 * time.Hour)
	from := e.Now()
	want := seedPeriod(t, e)
	if _, err := e.Ledger.Sign(ctx); err != nil {
		t.Fatal(err)
	}
	// After the checkpoint: in the period, but no checkpoint covers it.
	e.Record(ctx, audit.FlowDeny, "gateway:gw-1", "deny", "ehr", map[string]string{"proto": "tcp", "src": "100.64.0.2:5000", "dst": "10.20.0.10:22", "gateway": "gw-1"})
	e.Advance(time.Hour)
	to := e.Now()

	tok, _ := tokenFor(t, e.Store, auth.RoleAuditor, time.Hour, e.Now())
	auditor, err := adminapi.New(e.URL, tok, e.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auditor.Close)
	rep, err := auditor.HIPAAReport(ctx, from, to)
	if err != nil {
		t.Fatalf("auditor runs the report: %v", err)
	}

	got := map[string]int64{}
	for _, f := range rep.Figures {
		got[f.ID] = f.Value
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("figure %s = %d, want %d (all: %v)", id, got[id], n, got)
		}
	}

	wantRows := map[string]string{
		"164.312(a)(1)": "required", "164.312(a)(2)(i)": "required", "164.312(a)(2)(ii)": "required",
		"164.312(a)(2)(iii)": "addressable", "164.312(a)(2)(iv)": "addressable", "164.312(b)": "required",
		"164.312(c)(1)": "required", "164.312(c)(2)": "addressable", "164.312(d)": "required",
		"164.312(e)(1)": "required", "164.312(e)(2)(i)": "addressable", "164.312(e)(2)(ii)": "addressable",
	}
	if len(rep.Technical) != len(wantRows) {
		t.Errorf("%d 164.312 rows, want %d", len(rep.Technical), len(wantRows))
	}
	rows := map[string]adminapi.Safeguard{}
	for _, r := range rep.Technical {
		rows[r.Section] = r
		if wantRows[r.Section] != r.Requirement {
			t.Errorf("%s is %q, want %q", r.Section, r.Requirement, wantRows[r.Section])
		}
		if r.Mechanism == "" {
			t.Errorf("%s names no mechanism", r.Section)
		}
	}
	if r := rows["164.312(a)(2)(ii)"]; r.Status != adminapi.StatusMet || !slices.Equal(r.Figures, []string{"breakglass_uses", "breakglass_reviews_closed"}) {
		t.Errorf("emergency access row = %+v: want met, with the break-glass figures", r)
	}
	if r := rows["164.312(a)(2)(iii)"]; !slices.Equal(r.Figures, []string{"sessions_ended_idle", "sessions_ended_absolute"}) ||
		!strings.Contains(strings.Join(r.Settings, ";"), "default 15 min") {
		t.Errorf("automatic logoff row = %+v: want its figures and the idle limit", r)
	}

	gapIDs := map[string]bool{}
	for _, g := range rep.Gaps {
		gapIDs[g.ID] = true
	}
	for id := range gapIDs {
		if strings.HasPrefix(id, "not-built-") {
			t.Errorf("gap %s: every feature of the report is built now", id)
		}
	}
	for _, id := range []string{
		"period-not-covered", "phi-without-mfa", "phi-without-posture", "no-siem", "at-rest-outside"} {
		if !gapIDs[id] {
			t.Errorf("gap %s missing; gaps: %v", id, gapIDs)
		}
	}
	if gapIDs["no-policy-file"] {
		t.Error("gap no-policy-file although a policy file is applied")
	}

	s := rep.Settings
	if s.PolicyVersion != 1 || s.PolicyFile != "hipaa.yaml" || len(s.AccessRules) != 2 || s.AuditRetentionYears != 6 || s.AbsoluteSeconds != 12*3600 {
		t.Errorf("settings = %+v", s)
	}
	if s.Inventory.Apps != 3 || s.Inventory.PHIApps != 2 {
		t.Errorf("inventory = %+v, want 3 apps, 2 phi", s.Inventory)
	}
	for _, r := range s.AccessRules {
		if r.Rule == "nurses-ehr" && (!r.MFA || r.MFAMaxAgeSec != 12*3600 || !slices.Equal(r.Posture, []string{"disk-encrypted"})) ||
			r.Rule == "kiosk-pacs" && (r.MFA || r.Waiver == "") {
			t.Errorf("access rule %+v", r)
		}
	}

	al := rep.AuditLog
	if !al.Verified || al.Checkpoint == "" || al.Covered || al.PeriodLastSeq != al.CheckpointSize+1 {
		t.Errorf("audit log = %+v: want verified, a checkpoint one record short of the period", al)
	}
	if cp, err := auditlog.OpenCheckpoint([]byte(al.Checkpoint), al.Key); err != nil || cp.Size != al.CheckpointSize {
		t.Errorf("the report's checkpoint does not open with its key: %v (%+v)", err, cp)
	}

	stages := map[string]string{}
	for _, p := range rep.ZTMM {
		stages[p.Pillar] = p.Stage
		if len(p.Why) == 0 {
			t.Errorf("ZTMM %s: no reason given", p.Pillar)
		}
	}
	for pillar, stage := range map[string]string{"Identity": "Initial", "Devices": "Initial", "Networks": "Advanced",
		"Applications": "Advanced", "Data": "Initial", "Visibility and Analytics": "Initial",
		"Automation and Orchestration": "Advanced", "Governance": "Advanced"} {
		if stages[pillar] != stage {
			t.Errorf("ZTMM %s = %q, want %q", pillar, stages[pillar], stage)
		}
	}

	htok, _ := tokenFor(t, e.Store, auth.RoleHelpdesk, time.Hour, e.Now())
	helpdesk, err := adminapi.New(e.URL, htok, e.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(helpdesk.Close)
	_, err = helpdesk.HIPAAReport(ctx, from, to)
	wantCode(t, err, 403, adminapi.CodeForbidden, "audit.read")

	for _, tc := range []struct {
		path, msg string
	}{
		{"/v1/reports/hipaa?to=2026-12-01T00:00:00Z", `"from" is required`},
		{"/v1/reports/hipaa?from=yesterday&to=2026-12-01T00:00:00Z", "not an RFC 3339 time"},
		{"/v1/reports/hipaa?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", "must be before"},
		{"/v1/reports/hipaa?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "longer than 400 days"},
	} {
		var out adminapi.HIPAAReport
		wantCode(t, e.admin.Do(ctx, "GET", tc.path, nil, &out), 400, adminapi.CodeInvalid, tc.msg)
	}
}
