package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// reportPolicy: a PHI app reached with MFA and posture, one under a
// waiver, an internal app; bob is denied the wiki.
const reportPolicy = `version: 1
posture_checks:
  disk-encrypted: {disk_encryption: true}
groups:
  nurses: {members: [alice, bob]}
segments:
  lan: {prefixes: [10.20.0.0/24], gateways: [gw-1]}
apps:
  ehr: {segment: lan, names: [ehr.h.internal], addresses: [10.20.0.10], ports: [tcp/443], classification: phi}
  pacs: {segment: lan, addresses: [10.20.0.11], ports: [tcp/443, tcp/11112], classification: phi}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
rules:
  - {name: nurses-ehr, from: [group:nurses], to: [app:ehr], when: {mfa: true, posture: [disk-encrypted]}}
  - {name: kiosk-pacs, from: [tag:kiosk], to: [app:pacs], ports: [tcp/443], waiver: "locked reading room, CAB-1"}
  - {name: nurses-wiki, from: [group:nurses], to: [app:wiki]}
deny:
  - {name: no-bob-wiki, from: [user:bob], to: [app:wiki]}
`

// reportWorld is a controller with reportPolicy applied and a day of
// audit records (3 sessions, 2 with MFA, 1 idle logoff, 2 denied flows),
// signed: the report's period is that day.
func reportWorld(t *testing.T) (h *harness, admin *adminapi.Client, from, to time.Time) {
	t.Helper()
	h = newHarness(t)
	ctx := t.Context()
	admin, err := adminapi.New(h.srv.URL, h.srv.AdminToken, h.srv.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if _, err := admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "hospital.yaml", Source: reportPolicy, Reason: "CHG-9"}); err != nil {
		t.Fatal(err)
	}
	from = h.srv.Now().Truncate(24 * time.Hour)
	rec := func(typ audit.Type, actor, outcome string, d map[string]string) {
		t.Helper()
		if err := h.srv.Record(ctx, typ, actor, outcome, "x", d); err != nil {
			t.Fatal(err)
		}
	}
	for _, mfa := range []string{"true", "true", "false"} {
		rec(audit.SessionStart, "user:alice", "success", map[string]string{"source": "192.0.2.1", "device": "dev-1", "method": "password", "mfa": mfa})
	}
	rec(audit.SessionEnd, "controller", "success", map[string]string{"device": "dev-1", "user": "alice", "reason": "idle"})
	for range 2 {
		rec(audit.FlowDeny, "gateway:gw-1", "deny", map[string]string{"proto": "tcp", "src": "100.64.0.2:5000", "dst": "10.20.0.10:22", "gateway": "gw-1"})
	}
	if _, err := h.srv.Ledger.Sign(ctx); err != nil {
		t.Fatal(err)
	}
	return h, admin, from, from.Add(24 * time.Hour)
}

// TestReportHIPAAJSONMatchesAPIAndSchema: -o json writes what the API
// reports (a file, mode 0600), it validates against
// docs/hipaa-report.schema.json, and the figures are the seeded ones.
func TestReportHIPAAJSONMatchesAPIAndSchema(t *testing.T) {
	h, admin, from, to := reportWorld(t)
	out := filepath.Join(t.TempDir(), "q.json")
	r := h.run("", "report", "hipaa", "--from", from.Format(time.DateOnly), "--to", from.Format(time.DateOnly), "-o", "json", "--out", out)
	if r.code != 0 || !strings.Contains(r.stderr, "signature checked") || !strings.Contains(r.stderr, "gap: Audit records go to no SIEM") {
		t.Fatalf("report: exit %d\n%s", r.code, r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("report file mode %v, want 0600", fi.Mode().Perm())
	}
	validateReportSchema(t, b)

	var got adminapi.HIPAAReport
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want, err := admin.HIPAAReport(t.Context(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	got.Generated, want.Generated = time.Time{}, time.Time{}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Errorf("cordonctl wrote\n%s\nthe API reports\n%s", gj, wj)
	}
	fig := map[string]int64{}
	for _, f := range got.Figures {
		fig[f.ID] = f.Value
	}
	for id, n := range map[string]int64{"sessions_started": 3, "sessions_with_mfa": 2, "sessions_ended_idle": 1, "flows_denied": 2} {
		if fig[id] != n {
			t.Errorf("figure %s = %d, want %d", id, fig[id], n)
		}
	}
}

// validateReportSchema validates a report's JSON against the schema in
// docs/. The validator (santhosh-tekuri/jsonschema) is a test-only
// dependency: cordonctl itself never validates its own output.
func validateReportSchema(t *testing.T, doc []byte) {
	t.Helper()
	f, err := os.Open("../../../docs/hipaa-report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	schemaDoc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("hipaa-report.schema.json", schemaDoc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("hipaa-report.schema.json")
	if err != nil {
		t.Fatalf("compile the schema: %v", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(v); err != nil {
		t.Fatalf("the report does not validate against docs/hipaa-report.schema.json: %v", err)
	}
	// The schema must be able to fail: a report without its 164.312
	// rows does not validate.
	bad := v.(map[string]any)
	bad["technical"] = []any{}
	if sch.Validate(bad) == nil {
		t.Fatal("a report with no 164.312 rows validates: the schema checks too little")
	}
}

// TestReportHIPAACLI: html by default on stdout with every 164.312 row;
// pdf goes through the printer and needs --out; bad flags are usage
// errors.
func TestReportHIPAACLI(t *testing.T) {
	h, _, from, _ := reportWorld(t)
	day := from.Format(time.DateOnly)
	html := h.ok("report", "hipaa", "--from", day, "--to", day)
	for _, s := range []string{"164.312(a)(1)", "164.312(a)(2)(i)", "164.312(a)(2)(ii)", "164.312(a)(2)(iii)", "164.312(a)(2)(iv)",
		"164.312(b)", "164.312(c)(1)", "164.312(c)(2)", "164.312(d)", "164.312(e)(1)", "164.312(e)(2)(i)", "164.312(e)(2)(ii)"} {
		if !strings.Contains(html, `data-section="`+s+`"`) {
			t.Errorf("HTML report has no row %s", s)
		}
	}
	if strings.Contains(html, "<script") || strings.Contains(html, "http://") || strings.Contains(html, "src=") {
		t.Error("HTML report is not self-contained: it has a script or an external reference")
	}

	var printed []byte
	restore := cli.SetPDFPrinter(func(_ context.Context, html []byte) ([]byte, error) {
		printed = html
		return []byte("%PDF-1.7 test"), nil
	})
	defer restore()
	out := filepath.Join(t.TempDir(), "q.pdf")
	h.ok("report", "hipaa", "--from", day, "--to", day, "-o", "pdf", "--out", out)
	if b, err := os.ReadFile(out); err != nil || string(b) != "%PDF-1.7 test" || !bytes.Contains(printed, []byte(`data-section="164.312(d)"`)) {
		t.Errorf("pdf: file %q (%v); the printer got the HTML report: %t", b, err, bytes.Contains(printed, []byte("164.312(d)")))
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"report", "hipaa", "--to", day}, "--from and --to are required"},
		{[]string{"report", "hipaa", "--from", "last week", "--to", day}, "write a date"},
		{[]string{"report", "hipaa", "--from", day, "--to", "2020-01-01"}, "is not before"},
		{[]string{"report", "hipaa", "--from", day, "--to", day, "-o", "pdf"}, "needs --out"},
		{[]string{"report", "hipaa", "--from", day, "--to", day, "-o", "dot"}, "-o \"dot\""},
	} {
		r := h.run("", tc.args...)
		if r.code != cli.ExitUsage || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want usage error with %q", tc.args, r.code, r.stderr, tc.msg)
		}
	}
}

// TestInventoryExport: the JSON inventory holds every asset, and its
// flows are exactly what policy who-can lists for each app; the DOT map
// draws them, the deny in red.
func TestInventoryExport(t *testing.T) {
	h, _, _, _ := reportWorld(t)
	ctx := t.Context()
	h.run("correct horse battery staple\n", "user", "create", "alice", "--password-stdin")
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.AddDevice(ctx, "alice", "ward-pc-7", k.Public()); err != nil {
		t.Fatal(err)
	}
	var inv struct {
		Apps []struct {
			Name, Classification string
		}
		Segments []struct{ Name string }
		Users    []adminapi.User
		Devices  []adminapi.Device
		Flows    []json.RawMessage
	}
	if err := json.Unmarshal([]byte(h.ok("inventory", "export")), &inv); err != nil {
		t.Fatal(err)
	}
	var apps []string
	for _, a := range inv.Apps {
		apps = append(apps, a.Name+":"+a.Classification)
	}
	if !slices.Equal(apps, []string{"ehr:phi", "pacs:phi", "wiki:internal"}) || len(inv.Segments) != 1 || len(inv.Devices) != 1 || inv.Devices[0].Hostname != "ward-pc-7" {
		t.Errorf("inventory apps %v, segments %v, devices %+v", apps, inv.Segments, inv.Devices)
	}
	var whoCan []json.RawMessage
	for _, app := range []string{"ehr", "pacs", "wiki"} {
		var es []json.RawMessage
		if err := json.Unmarshal([]byte(h.ok("policy", "who-can", app, "-o", "json")), &es); err != nil {
			t.Fatal(err)
		}
		whoCan = append(whoCan, es...)
	}
	if len(inv.Flows) == 0 || len(inv.Flows) != len(whoCan) {
		t.Fatalf("inventory has %d flows, who-can lists %d", len(inv.Flows), len(whoCan))
	}
	for i := range whoCan {
		if !bytes.Equal(compactJSON(t, inv.Flows[i]), compactJSON(t, whoCan[i])) {
			t.Errorf("flow %d: inventory %s, who-can %s", i, inv.Flows[i], whoCan[i])
		}
	}

	out := filepath.Join(t.TempDir(), "map.dot")
	h.ok("inventory", "export", "-o", "dot", "--out", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dot := string(b)
	for _, s := range []string{
		"digraph cordon {",
		`"user:alice" -> "group:nurses" [label="member", style=dashed];`,
		`"group:nurses" -> "app:ehr" [label="nurses-ehr\ntcp/443\nMFA; posture disk-encrypted"];`,
		`"tag:kiosk" -> "app:pacs" [label="kiosk-pacs\ntcp/443"];`,
		`"group:nurses" -> "app:wiki" [label="nurses-wiki\ntcp/443\ndenied by no-bob-wiki", color=red, fontcolor=red];`,
		`"device:`, `-> "user:alice" [style=dotted, arrowhead=none];`,
	} {
		if !strings.Contains(dot, s) {
			t.Errorf("DOT map lacks %s\n%s", s, dot)
		}
	}
	if strings.Count(dot, "{") != strings.Count(dot, "}") {
		t.Errorf("DOT braces unbalanced:\n%s", dot)
	}
	r := h.run("", "inventory", "export", "-o", "html")
	if r.code != cli.ExitUsage {
		t.Errorf("inventory export -o html: exit %d, want usage", r.code)
	}
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
