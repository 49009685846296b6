package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
)

func TestPolicyWorkflowOnController(t *testing.T) {
	h := newHarness(t)
	hospital := filepath.Join(policyTestdata, "hospital.yaml")
	src, err := os.ReadFile(hospital)
	if err != nil {
		t.Fatal(err)
	}
	narrower := filepath.Join(t.TempDir(), "narrower.yaml")
	if err := os.WriteFile(narrower, []byte(strings.Replace(string(src), "members: [alice, bob]", "members: [alice]", 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	if out := h.ok("policy", "history"); !strings.Contains(out, "no policy applied yet") {
		t.Fatalf("history before any apply:\n%s", out)
	}
	out := h.ok("policy", "plan", hospital)
	if !strings.Contains(out, "valid, 14/14 tests passed") || !strings.Contains(out, "no policy applied yet") || !strings.Contains(out, "gain") {
		t.Fatalf("plan:\n%s", out)
	}
	h.fails(cli.ExitUsage, []string{"--reason is required"}, "policy", "apply", hospital)
	if out := h.ok("policy", "apply", hospital, "--reason", "CHG-1 initial"); !strings.Contains(out, "applied version 1") {
		t.Fatalf("apply:\n%s", out)
	}
	out = h.ok("policy", "plan", narrower)
	if !strings.Contains(out, "active version 1") || !strings.Contains(out, "lose    user:bob") {
		t.Fatalf("plan of the narrower policy:\n%s", out)
	}
	h.ok("policy", "apply", narrower, "--reason", "CHG-2 bob moved to billing")
	if out := h.ok("policy", "diff", "1", "2"); !strings.Contains(out, "lose    user:bob") {
		t.Fatalf("diff 1 2:\n%s", out)
	}
	if out := h.ok("policy", "show", "1"); out != string(src) {
		t.Fatalf("show 1 is not the applied text:\n%s", out)
	}
	if out := h.ok("policy", "rollback", "1", "--reason", "CHG-3 undo"); !strings.Contains(out, "version 3") {
		t.Fatalf("rollback:\n%s", out)
	}
	out = h.ok("policy", "history")
	if !strings.Contains(out, "3 (active)") || !strings.Contains(out, "rollback to 1: CHG-3 undo") || !strings.Contains(out, "CHG-2 bob moved to billing") {
		t.Fatalf("history:\n%s", out)
	}
	h.fails(cli.ExitNotFound, []string{"policy version 9 not found"}, "policy", "show", "9")

	// Refused: a syntax error (with its position) and a failing test. Nothing changes.
	errsDir := filepath.Join(policyTestdata, "errors")
	h.fails(cli.ExitUsage, []string{"syntax.yaml:4:5: YAML syntax error"}, "policy", "plan", filepath.Join(errsDir, "syntax.yaml"))
	h.fails(cli.ExitUsage, []string{"syntax.yaml:4:5: YAML syntax error"}, "policy", "apply", filepath.Join(errsDir, "syntax.yaml"), "--reason", "x")
	h.fails(cli.ExitUsage, []string{"test(s) failed"}, "policy", "apply", filepath.Join(errsDir, "failing-test.yaml"), "--reason", "x")
	if out := h.ok("policy", "history"); strings.Contains(out, "4") && strings.Contains(out, "4 (active)") {
		t.Fatalf("a refused policy was stored:\n%s", out)
	}
}
