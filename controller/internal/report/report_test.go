package report

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// strict: every rule reaching PHI requires step-up MFA and posture.
const strict = `version: 1
posture_checks:
  disk-encrypted: {disk_encryption: true}
groups:
  nurses: {members: [alice]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: phi}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
rules:
  - {name: nurses-ehr, from: [group:nurses], to: [app:ehr], when: {mfa_max_age: 8h, posture: [disk-encrypted]}}
  - {name: nurses-wiki, from: [group:nurses], to: [app:wiki]}
`

var t0 = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

func openStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func input(t testing.TB, src string) Input {
	t.Helper()
	pol, err := policyfile.Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	limits := session.DefaultLimits()
	limits.Idle = map[session.Classification]time.Duration{"phi": 10 * time.Minute}
	return Input{From: t0, To: t0.AddDate(0, 3, 0), Now: t0.AddDate(0, 3, 1), Policy: pol,
		Version: &store.PolicyVersion{Version: 4, File: "p.yaml", SHA256: "ab"}, Limits: limits, RetentionYears: 6}
}

// signedLog is a verified log whose checkpoint covers size records.
func signedLog(t *testing.T, size int64) (string, *ledger.Report) {
	t.Helper()
	k, err := auditlog.NewKey(make([]byte, auditlog.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	cp := auditlog.Checkpoint{Origin: "test", Size: size, Time: t0.AddDate(0, 3, 0)}
	return k.VerifierKey(), &ledger.Report{Records: size, Latest: &ledger.Signed{Checkpoint: cp, Note: []byte("note")}}
}

func stages(rep adminapi.HIPAAReport) map[string]string {
	m := map[string]string{}
	for _, p := range rep.ZTMM {
		m[p.Pillar] = p.Stage
	}
	return m
}

func gapIDs(rep adminapi.HIPAAReport) []string {
	var ids []string
	for _, g := range rep.Gaps {
		ids = append(ids, g.ID)
	}
	return ids
}

func rowOf(rep adminapi.HIPAAReport, section string) adminapi.Safeguard {
	for _, r := range append(rep.Technical, rep.Administrative...) {
		if r.Section == section {
			return r
		}
	}
	return adminapi.Safeguard{}
}

// TestStrictConfigurationReachesHigherStages: with step-up MFA and
// posture on every PHI rule, an IdP, a SIEM sink, a shorter PHI idle
// limit and a verified log, the pillars the configuration decides reach
// their highest stage, and no configuration gap is reported; the
// features not built still are.
func TestStrictConfigurationReachesHigherStages(t *testing.T) {
	st := openStore(t)
	in := input(t, strict)
	in.IdPs, in.SIEMSinks = []string{"okta"}, []string{"splunk"}
	in.LogKey, in.Log = signedLog(t, 0)
	rep, err := Build(t.Context(), st, in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Identity": "Optimal", "Devices": "Optimal", "Networks": "Advanced", "Applications": "Advanced",
		"Data": "Advanced", "Visibility and Analytics": "Advanced", "Automation and Orchestration": "Advanced", "Governance": "Advanced"}
	if got := stages(rep); !maps.Equal(got, want) {
		t.Errorf("stages %v\nwant %v", got, want)
	}
	ids := gapIDs(rep)
	for _, id := range []string{"phi-without-mfa", "phi-without-posture", "no-siem", "no-policy-file", "no-verifiable-log", "log-not-verified"} {
		if slices.Contains(ids, id) {
			t.Errorf("gap %s reported for a strict configuration (gaps %v)", id, ids)
		}
	}
	for _, id := range ids {
		if strings.HasPrefix(id, "not-built-") {
			t.Errorf("gap %s: every feature of the report is built now", id)
		}
	}
	if r := rowOf(rep, secEmergency); r.Status != adminapi.StatusMet || !slices.Contains(r.Figures, "breakglass_uses") {
		t.Errorf("break-glass row %+v: want met, with its figures", r)
	}
	if s := rowOf(rep, secPersonAuth).Status; s != adminapi.StatusMet {
		t.Errorf("164.312(d) is %s with MFA and posture on every PHI rule", s)
	}
	if l := rep.Settings.IdleLimits; len(l) != 2 || l[1] != (adminapi.ReportIdleLimit{Classification: "phi", Seconds: 600}) {
		t.Errorf("idle limits %+v, want the default and phi 10 min", l)
	}
}

// TestLogProblemsAreGaps: no verifiable log, or one that fails, fails the
// audit and integrity rows; the period must be a period.
func TestLogProblemsAreGaps(t *testing.T) {
	st := openStore(t)
	in := input(t, strict)
	rep, err := Build(t.Context(), st, in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(gapIDs(rep), "no-verifiable-log") || rowOf(rep, secAudit).Status != adminapi.StatusGap || rep.AuditLog.Verified {
		t.Errorf("no log: gaps %v, audit row %+v", gapIDs(rep), rowOf(rep, secAudit))
	}

	in.LogKey, in.Log = signedLog(t, 0)
	in.Log.Problems = []string{"record 7: leaf hash differs"}
	if rep, err = Build(t.Context(), st, in); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(gapIDs(rep), "log-not-verified") || rowOf(rep, secIntegrity).Status != adminapi.StatusGap {
		t.Errorf("failed log: gaps %v, integrity row %+v", gapIDs(rep), rowOf(rep, secIntegrity))
	}

	in.To = in.From
	if _, err := Build(t.Context(), st, in); err == nil {
		t.Error("an empty period was accepted")
	}
}

// TestPlannedFigureCountsOnceBuilt: a figure of the table is a gap only
// while its event type is unknown; the table's known types are counted.
func TestPlannedFigureCountsOnceBuilt(t *testing.T) {
	for _, f := range figures {
		_, known := audit.Lookup(f.Type)
		if f.Feature == "" && !known {
			t.Errorf("figure %s counts %s, which the audit schema does not know, and names no feature", f.ID, f.Type)
		}
		if f.built() != known {
			t.Errorf("figure %s: built() = %v, schema knows it: %v", f.ID, f.built(), known)
		}
		if len(f.Sections) == 0 {
			t.Errorf("figure %s evidences no section", f.ID)
		}
	}
}

// TestArchivedPeriodIsAGap: a period that starts before the first record
// an archive left is reported as partly uncounted; one that starts after
// it is not.
func TestArchivedPeriodIsAGap(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	for i := range 10 {
		e := store.AuditEvent{Time: t0.Add(time.Duration(i+1) * time.Hour), Type: audit.FlowDeny, Actor: "gateway:gw-1", Outcome: "deny", Subject: "ehr",
			Details: map[string]string{"proto": "tcp", "src": "100.64.0.2:1", "dst": "10.20.0.10:22", "gateway": "gw-1"}}
		if err := st.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	arch := store.AuditArchive{FromSeq: 1, ToSeq: 5, Root: "r", BundleSHA256: "b", Reason: "test", RequestedBy: "token:x", At: t0.AddDate(0, 1, 0)}
	if err := st.ArchiveAudit(ctx, arch); err != nil {
		t.Fatal(err)
	}
	in := input(t, strict)
	in.LogKey, in.Log = signedLog(t, 10)
	in.Log.Archived = []store.AuditArchive{arch}
	rep, err := Build(ctx, st, in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(gapIDs(rep), "period-archived") {
		t.Errorf("period from before the archive: gaps %v", gapIDs(rep))
	}
	for _, f := range rep.Figures {
		if f.ID == "flows_denied" && f.Value != 5 {
			t.Errorf("flows_denied = %d, want the 5 records kept", f.Value)
		}
	}
	in.From = t0.Add(6 * time.Hour) // the first kept record is at 6 h
	if rep, err = Build(ctx, st, in); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(gapIDs(rep), "period-archived") {
		t.Errorf("period from the first kept record on: gap period-archived reported")
	}
}
