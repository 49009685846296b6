package cli_test

import (
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// TestAuditSearch: filters, relative times, cursor paging and the three
// output formats.
func TestAuditSearch(t *testing.T) {
	h := newHarness(t)
	for _, u := range []string{"nurse", "doctor"} {
		h.run("correct horse battery staple\n", "user", "create", u, "--password-stdin")
	}
	// A flow record whose user name was chosen to attack a spreadsheet
	// (records of gateways' reports arrive through the state owner; the
	// test writes it directly).
	if err := h.srv.Record(t.Context(), audit.FlowDeny, "gateway:gw-1", "deny", "ehr", map[string]string{"user": "=cmd|calc", "device": "dev-9", "proto": "tcp", "src": "100.64.0.9:4000", "dst": "10.20.0.5:443", "gateway": "gw-1"}); err != nil {
		t.Fatal(err)
	}
	h.ok("segment", "create", "radiology", "--cidr", "10.20.0.0/24")
	h.srv.Advance(2 * time.Hour)
	h.ok("segment", "create", "lab", "--cidr", "10.30.0.0/24")

	out := h.ok("audit", "search", "--user", "nurse")
	if !strings.Contains(out, "admin.user.create") || strings.Count(out, "\n") != 2 {
		t.Errorf("search --user nurse:\n%s", out)
	}
	out = h.ok("audit", "search", "--type", "admin.segment.", "--since", "1h")
	if !strings.Contains(out, "lab") || strings.Contains(out, "radiology") {
		t.Errorf("search --since 1h:\n%s", out)
	}

	// Paging: --limit prints a cursor; --cursor goes on with no repeat.
	r := h.run("", "audit", "search", "--type", "admin.", "--limit", "2")
	m := regexp.MustCompile(`--cursor (\S+)`).FindStringSubmatch(r.stderr)
	if r.code != 0 || m == nil || strings.Count(r.stdout, "\n") != 3 {
		t.Fatalf("first page: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	rest := h.run("", "audit", "search", "--type", "admin.", "--cursor", m[1], "-o", "json")
	var page adminapi.AuditSearchPage
	if err := json.Unmarshal([]byte(rest.stdout), &page); err != nil || rest.code != 0 {
		t.Fatalf("json page: %v %d\n%s", err, rest.code, rest.stdout)
	}
	all := h.run("", "audit", "search", "--type", "admin.", "--all", "-o", "json")
	var whole adminapi.AuditSearchPage
	if err := json.Unmarshal([]byte(all.stdout), &whole); err != nil {
		t.Fatal(err)
	}
	if len(whole.Events) != 4 || len(page.Events) != len(whole.Events)-2 || page.Events[0].Seq != whole.Events[2].Seq || whole.NextCursor != "" {
		t.Errorf("pages: %d after the first 2, %d in all", len(page.Events), len(whole.Events))
	}
	// A cursor is bound to its filters.
	if r := h.run("", "audit", "search", "--type", "auth.", "--cursor", m[1]); r.code == 0 || !strings.Contains(r.stderr, "invalid search cursor") {
		t.Errorf("cursor of another search: %d %s", r.code, r.stderr)
	}

	// CSV: a header, one row a record, formulas defused.
	rows, err := csv.NewReader(strings.NewReader(h.ok("audit", "search", "--type", "admin.user.create", "-o", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0][0] != "seq" || rows[0][6] != "user" || rows[1][6] != "doctor" || rows[2][6] != "nurse" {
		t.Fatalf("csv: %q", rows)
	}
	rows, err = csv.NewReader(strings.NewReader(h.ok("audit", "search", "--device", "dev-9", "--app", "ehr", "--outcome", "deny", "-o", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1][6] != "'=cmd|calc" || rows[1][7] != "dev-9" || rows[1][8] != "ehr" || !strings.Contains(rows[1][10], `"proto":"tcp"`) {
		t.Errorf("csv of a flow: %q", rows)
	}
	h.fails(2, []string{"use table or json"}, "audit", "list", "-o", "csv")
	h.fails(2, []string{"--since", "neither an RFC 3339 time"}, "audit", "search", "--since", "yesterday")
}

// TestAuditArchiveTwoAdmins: archive writes the bundle and a request; the
// requester cannot approve it, a second admin can; verify then reports
// the archived range with the root the bundle reaches.
func TestAuditArchiveTwoAdmins(t *testing.T) {
	h := newHarness(t)
	for _, s := range []string{"radiology", "cardiology", "lab", "pharmacy"} {
		h.ok("segment", "create", s, "--cidr", "10.20.0.0/24")
	}
	second := strings.TrimSpace(h.ok("token", "create", "--name", "second", "--role", "owner", "--ttl", "1d"))
	h.sign()
	bundle := filepath.Join(t.TempDir(), "archive.jsonl")
	out := h.ok("audit", "archive", "--to", "3", "--reason", "CHG-1 cold storage", "-f", bundle)
	m := regexp.MustCompile(`cordonctl audit approve (ar-[0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "bundle written") {
		t.Fatalf("archive:\n%s", out)
	}
	if r := h.run("", "audit", "approve", m[1]); r.code == 0 || !strings.Contains(r.stderr, "another admin must approve") {
		t.Fatalf("approval by the requester: %d %s", r.code, r.stderr)
	}
	h.env[cli.EnvToken] = second
	out = h.ok("audit", "approve", m[1])
	root := regexp.MustCompile(`root at seq 3: (\S+);`).FindStringSubmatch(out)
	if root == nil {
		t.Fatalf("approve:\n%s", out)
	}
	if r := h.run("", "audit", "approve", m[1]); r.code == 0 || !strings.Contains(r.stderr, "approved already") {
		t.Errorf("second approval: %d %s", r.code, r.stderr)
	}
	h.sign()
	out = h.ok("audit", "verify")
	if !strings.Contains(out, "log verified") || !strings.Contains(out, "archived: records 1 to 3") || !strings.Contains(out, root[1]) {
		t.Errorf("verify after archive:\n%s", out)
	}
	out = h.ok("audit", "verify", "--bundle", bundle)
	if !strings.Contains(out, "the log's root at seq 3 is "+root[1]) {
		t.Errorf("bundle of the archived range:\n%s\nwant root %s", out, root[1])
	}
	if out := h.ok("audit", "search", "--all"); strings.Contains(out, "radiology") {
		t.Errorf("archived record still found:\n%s", out)
	}
	if out := h.ok("audit", "archives"); !strings.Contains(out, "CHG-1 cold storage") || !strings.Contains(out, "retention: 6 years") {
		t.Errorf("archives:\n%s", out)
	}
	h.ok("audit", "export", "-f", filepath.Join(t.TempDir(), "rest.jsonl")) // from the first record not archived
}
