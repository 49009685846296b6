package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyExportAndOnlineReview: an admin who built the directory one
// command at a time exports it as a policy file, reviews access against
// the controller without a file, and applies the export unchanged; both
// views answer the same.
func TestPolicyExportAndOnlineReview(t *testing.T) {
	h := newHarness(t)
	h.ok("segment", "create", "clinical", "--cidr", "10.20.0.0/24")
	h.ok("app", "create", "ehr", "--segment", "clinical", "--dns-name", "ehr.h.internal", "--address", "10.20.0.10", "--port", "443")
	h.ok("app", "create", "wiki", "--segment", "clinical", "--dns-name", "wiki.h.internal", "--address", "10.20.0.20", "--port", "80", "--class", "internal")
	if r := h.run("correct horse battery staple\n", "user", "create", "nurse", "--password-stdin"); r.code != 0 {
		t.Fatalf("user create: %d %s", r.code, r.stderr)
	}
	h.ok("group", "create", "nurses")
	h.ok("group", "add-member", "nurses", "nurse")
	h.ok("rule", "create", "nurses-ehr", "--group", "nurses", "--app", "ehr")

	// Online review of the directory, no file.
	r := h.run("", "policy", "who-can", "ehr")
	if r.code != 0 || !strings.Contains(r.stdout, "user:nurse") || !strings.Contains(r.stdout, "nurses-ehr") || !strings.Contains(r.stderr, "the directory") {
		t.Fatalf("who-can ehr (online): %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := h.ok("policy", "access", "nurse"); !strings.Contains(out, "ehr") || strings.Contains(out, "wiki") {
		t.Fatalf("access nurse (online):\n%s", out)
	}
	if out := h.ok("policy", "explain", "--user", "nurse", "--app", "ehr", "--port", "tcp/443"); !strings.HasPrefix(out, "ALLOW") {
		t.Fatalf("explain nurse ehr (online):\n%s", out)
	}
	if out := h.ok("policy", "explain", "--user", "nurse", "--app", "wiki", "--port", "tcp/80"); !strings.HasPrefix(out, "DENY") {
		t.Fatalf("explain nurse wiki (online):\n%s", out)
	}

	// Export to a file; the offline commands give the same answers.
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if out := h.ok("policy", "export", "-f", file); !strings.Contains(out, "wrote "+file) {
		t.Fatalf("export:\n%s", out)
	}
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o644 {
		t.Errorf("export mode %v, want 0644", st.Mode().Perm())
	}
	if stdout := h.ok("policy", "export"); stdout != string(src) {
		t.Fatalf("export to stdout differs from the file:\n%s", stdout)
	}
	if out := h.ok("policy", "validate", file); !strings.Contains(out, "valid: 1 groups, 1 segments, 2 apps, 1 rules") {
		t.Fatalf("validate export:\n%s", out)
	}
	online := h.ok("policy", "who-can", "ehr")
	if offline := h.ok("policy", "who-can", file, "ehr"); offline != online {
		t.Fatalf("who-can differs\nonline:\n%s\noffline:\n%s", online, offline)
	}
	if offline := h.ok("policy", "who-can", "--file", file, "ehr"); offline != online {
		t.Fatalf("who-can --file differs:\n%s", offline)
	}
	h.fails(2, []string{"either as FILE or as --file"}, "policy", "who-can", "--file", file, file, "ehr")

	if out := h.ok("policy", "plan", file); !strings.Contains(out, "against the directory") || !strings.Contains(out, "no change in who can reach what") {
		t.Fatalf("plan of the export:\n%s", out)
	}
	// A narrower file shows who loses what the directory grants.
	narrower := filepath.Join(t.TempDir(), "narrower.yaml")
	if err := os.WriteFile(narrower, []byte(strings.Replace(string(src), "members: [nurse]", "members: []", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("policy", "plan", narrower); !strings.Contains(out, "lose") || !strings.Contains(out, "user:nurse") {
		t.Fatalf("plan of a narrower file:\n%s", out)
	}

	// Applying the export changes nothing anyone can reach; afterwards the
	// export is the active version, as applied.
	if out := h.ok("policy", "apply", file, "--reason", "CHG-9 move to a file"); !strings.Contains(out, "applied version 1") {
		t.Fatalf("apply export:\n%s", out)
	}
	if stdout := h.ok("policy", "export"); stdout != string(src) {
		t.Fatalf("export after apply is not the applied text:\n%s", stdout)
	}
	r = h.run("", "policy", "who-can", "ehr")
	if r.code != 0 || r.stdout != online || !strings.Contains(r.stderr, "policy version 1") {
		t.Fatalf("who-can after apply: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	h.fails(4, []string{"policy version 1 is active"}, "rule", "create", "x", "--group", "nurses", "--app", "wiki")
}
