package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
)

const policyTestdata = "../../../pkg/policy/policyfile/testdata"

// runOffline runs cordonctl with no controller configured: the policy
// file commands must not need one.
func runOffline(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(t.Context(), args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb,
		Getenv: func(k string) string {
			if k == "XDG_CONFIG_HOME" {
				return t.TempDir()
			}
			return ""
		}})
	return code, out.String(), errb.String()
}

func TestPolicyValidateOffline(t *testing.T) {
	hospital := filepath.Join(policyTestdata, "hospital.yaml")
	code, out, errs := runOffline(t, "policy", "validate", hospital)
	if code != 0 || !strings.Contains(out, "14/14 tests passed") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}

	// A syntax error is refused with its line and column, exit 2.
	code, _, errs = runOffline(t, "policy", "validate", filepath.Join(policyTestdata, "errors", "syntax.yaml"))
	if code != cli.ExitUsage || !strings.Contains(errs, "syntax.yaml:4:5: YAML syntax error") {
		t.Fatalf("syntax: code %d\n%s", code, errs)
	}
	// A failing test refuses the policy.
	code, _, errs = runOffline(t, "policy", "validate", filepath.Join(policyTestdata, "errors", "failing-test.yaml"))
	if code != cli.ExitUsage || !strings.Contains(errs, "test(s) failed; the policy is refused") {
		t.Fatalf("failing test: code %d\n%s", code, errs)
	}
	// A missing file is a usage error.
	if code, _, _ = runOffline(t, "policy", "validate", filepath.Join(t.TempDir(), "nope.yaml")); code != cli.ExitUsage {
		t.Fatalf("missing file: %d", code)
	}
}

func TestPolicyExplainWhoCanAccess(t *testing.T) {
	hospital := filepath.Join(policyTestdata, "hospital.yaml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "alice", "--app", "ehr", "--port", "tcp/443", "--posture", "disk-encrypted,screen-lock", "--mfa-age", "1h"},
			`ALLOW by rule "clinicians-ehr"`},
		{[]string{"--user", "alice", "--app", "ehr", "--port", "tcp/443", "--posture", "disk-encrypted", "--mfa-age", "1h"},
			"does not pass posture check(s) screen-lock"},
		{[]string{"--user", "mallory", "--tag", "reading-room", "--app", "pacs", "--port", "tcp/443"},
			`DENY by deny rule "contractors-never-phi"`},
		{[]string{"--user", "zed", "--idp", "groups=Physicians", "--app", "ehr", "--port", "tcp/443", "--posture", "disk-encrypted,screen-lock", "--mfa-age", "13h"},
			"MFA was 13h0m0s ago; the rule allows at most 12h0m0s"},
		{[]string{"--user", "frank", "--app", "billing", "--port", "tcp/443", "--at", "2026-03-07T10:00:00-05:00"},
			"is outside Mon,Tue,Wed,Thu,Fri 07:00-19:00 America/New_York"},
		{[]string{"--user", "alice", "--app", "billing", "--port", "tcp/443"}, "no rule grants it"},
	} {
		code, out, errs := runOffline(t, append([]string{"policy", "explain", hospital}, tc.args...)...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: code %d, want %q\n%s%s", tc.args, code, tc.want, out, errs)
		}
	}

	code, out, _ := runOffline(t, "policy", "who-can", hospital, "pacs")
	if code != 0 || !strings.Contains(out, "user:dave") || !strings.Contains(out, "tag:reading-room") || strings.Contains(out, "user:alice ") {
		t.Fatalf("who-can pacs: %d\n%s", code, out)
	}
	code, out, _ = runOffline(t, "policy", "who-can", hospital, "ehr")
	if code != 0 || !strings.Contains(out, "idp:groups=Physicians") {
		t.Fatalf("who-can ehr: %d\n%s", code, out)
	}
	code, out, _ = runOffline(t, "policy", "access", hospital, "mallory", "-o", "json")
	if code != 0 || strings.Contains(out, `"app": "ehr"`) || !strings.Contains(out, `"app": "billing"`) {
		t.Fatalf("access mallory: %d\n%s", code, out)
	}
	code, out, _ = runOffline(t, "policy", "access", hospital, "mallory", "--tag", "reading-room")
	if code != 0 || !strings.Contains(out, "contractors-never-phi") {
		t.Fatalf("access mallory on a kiosk must show the deny: %d\n%s", code, out)
	}
}

func TestPolicyValidateStdin(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(policyTestdata, "hospital.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := cli.Main(t.Context(), []string{"policy", "validate", "-"}, cli.IO{In: bytes.NewReader(src), Out: &out, Err: &errb})
	if code != 0 {
		t.Fatalf("%d %s", code, errb.String())
	}
}

func TestPolicyDiffOffline(t *testing.T) {
	hospital := filepath.Join(policyTestdata, "hospital.yaml")
	src, err := os.ReadFile(hospital)
	if err != nil {
		t.Fatal(err)
	}
	narrower := filepath.Join(t.TempDir(), "narrower.yaml")
	if err := os.WriteFile(narrower, []byte(strings.Replace(string(src), "members: [alice, bob]", "members: [alice]", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runOffline(t, "policy", "diff", hospital, narrower)
	if code != 0 || !strings.Contains(out, "lose    user:bob") || !strings.Contains(out, "ehr") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}
	code, out, _ = runOffline(t, "policy", "diff", hospital, hospital)
	if code != 0 || !strings.Contains(out, "no change") {
		t.Fatalf("same file: %d %s", code, out)
	}
}
