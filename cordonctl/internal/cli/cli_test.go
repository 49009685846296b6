package cli_test

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

type harness struct {
	t       *testing.T
	srv     *apitest.Server
	env     map[string]string
	caFile  string
	tokFile string
}

func newHarness(t *testing.T) *harness { return newHarnessWith(t, apitest.Options{}) }

func newHarnessWith(t *testing.T, opts apitest.Options) *harness {
	srv := apitest.New(t, opts)
	dir := t.TempDir()
	h := &harness{t: t, srv: srv, caFile: filepath.Join(dir, "ca.pem"), tokFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(h.caFile, srv.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.tokFile, []byte(srv.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.env = map[string]string{
		"XDG_CONFIG_HOME": filepath.Join(dir, "config"),
		cli.EnvController: srv.URL,
		cli.EnvToken:      srv.AdminToken,
		cli.EnvCACert:     h.caFile,
	}
	return h
}

type result struct {
	code           int
	stdout, stderr string
}

func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(h.t.Context(), args, cli.IO{
		In: strings.NewReader(stdin), Out: &out, Err: &errb,
		Getenv: func(k string) string { return h.env[k] },
		Now:    h.srv.Now, // cordonctl labels what the server sent against the server's clock
	})
	return result{code, out.String(), errb.String()}
}

// ok runs a command that must succeed.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	r := h.run("", args...)
	if r.code != 0 {
		h.t.Fatalf("cordonctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must exit with code and print msgs on stderr.
func (h *harness) fails(code int, msgs []string, args ...string) {
	h.t.Helper()
	r := h.run("", args...)
	if r.code != code {
		h.t.Fatalf("cordonctl %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "cordonctl: ") {
		h.t.Errorf("stderr %q does not start with cordonctl:", r.stderr)
	}
	for _, m := range msgs {
		if !strings.Contains(r.stderr, m) {
			h.t.Errorf("cordonctl %s: stderr %q does not mention %q", strings.Join(args, " "), r.stderr, m)
		}
	}
}

func TestFlow(t *testing.T) {
	h := newHarness(t)

	out := h.ok("segment", "create", "clinical", "--cidr", "10.20.0.0/24", "--cidr", "fd00:20::/64")
	if !strings.Contains(out, "clinical") || !strings.Contains(out, "10.20.0.0/24,fd00:20::/64") || !strings.HasPrefix(out, "NAME") {
		t.Errorf("segment create output:\n%s", out)
	}
	r := h.run("", "app", "create", "ehr", "--segment", "clinical", "--dns-name", "ehr.hospital.internal",
		"--address", "10.20.0.5", "--port", "443", "--port", "8000-8099")
	out = r.stdout
	// The test controller has no --dns-zone: the name is in no zone.
	if r.code != 0 || !strings.Contains(r.stderr, "warning: DNS name ehr.hospital.internal is in none of the controller's internal DNS zones") {
		t.Errorf("app create: exit %d, stderr %q: want the DNS zone warning", r.code, r.stderr)
	}
	if !strings.Contains(out, "ehr.hospital.internal") || !strings.Contains(out, "10.20.0.5/32") || !strings.Contains(out, "443,8000-8099") || !strings.Contains(out, "phi") {
		t.Errorf("app create output:\n%s", out)
	}

	r = h.run("correct horse battery staple\n", "user", "create", "nurse", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "TOTP secret: ") || !strings.Contains(r.stdout, "otpauth://totp/Cordon:nurse") || !strings.Contains(r.stdout, "only this once") {
		t.Fatalf("user create: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("another long password\n"), 0o600)
	var created adminapi.CreateUserResponse
	if err := json.Unmarshal([]byte(h.ok("user", "create", "doctor", "--password-file", pwFile, "-o", "json")), &created); err != nil || created.TOTPSecret == "" {
		t.Fatalf("user create json: %v %+v", err, created)
	}
	h.fails(2, []string{"--password-file", "no such file"}, "user", "create", "x", "--password-file", pwFile+"-missing")
	h.fails(2, []string{"--password-stdin"}, "user", "create", "x")
	if r := h.run("short\n", "user", "create", "x", "--password-stdin"); r.code != 2 || !strings.Contains(r.stderr, "at least 12") || strings.Contains(r.stderr, "short\n") {
		t.Errorf("short password: %d %q", r.code, r.stderr)
	}

	h.ok("group", "create", "nurses")
	out = h.ok("group", "add-member", "nurses", "nurse")
	if !strings.Contains(out, "nurse") {
		t.Errorf("add-member output:\n%s", out)
	}
	out = h.ok("rule", "create", "nurses-ehr", "--group", "nurses", "--app", "ehr")
	if !strings.Contains(out, "nurses-ehr") {
		t.Errorf("rule create output:\n%s", out)
	}

	// JSON output is the API's JSON.
	var apps []adminapi.App
	if err := json.Unmarshal([]byte(h.ok("app", "list", "-o", "json")), &apps); err != nil || len(apps) != 1 || apps[0].DNSName != "ehr.hospital.internal" {
		t.Fatalf("app list json: %v %+v", err, apps)
	}
	var seg adminapi.Segment
	if err := json.Unmarshal([]byte(h.ok("segment", "show", "clinical", "-o", "json")), &seg); err != nil || len(seg.CIDRs) != 2 {
		t.Fatalf("segment show json: %v %+v", err, seg)
	}
	var grp adminapi.Group
	if err := json.Unmarshal([]byte(h.ok("group", "show", "nurses", "-o", "json")), &grp); err != nil || len(grp.Members) != 1 {
		t.Fatalf("group show json: %v %+v", err, grp)
	}
	for _, cmd := range [][]string{{"user", "list"}, {"rule", "list"}, {"gateway", "list"}, {"gateway", "token", "list"}, {"device", "list"}, {"audit", "list"}} {
		var v []json.RawMessage
		if err := json.Unmarshal([]byte(h.ok(append(cmd, "-o", "json")...)), &v); err != nil {
			t.Errorf("%v -o json: %v", cmd, err)
		}
	}
	out = h.ok("audit", "list", "--type", "admin.", "--limit", "50")
	for _, want := range []string{"admin.segment.create", "admin.rule.create", "admin:root", "user=nurse"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %q:\n%s", want, out)
		}
	}

	// Errors and exit codes.
	h.fails(3, []string{`segment "radiology" not found`}, "segment", "show", "radiology")
	h.fails(3, []string{"not found"}, "app", "delete", "pacs")
	h.fails(2, []string{"cidrs", "did you mean 10.30.0.0/24"}, "segment", "create", "imaging", "--cidr", "10.30.0.1/24")
	h.fails(2, []string{"cidrs", "not a CIDR"}, "segment", "create", "imaging", "--cidr", "banana")
	h.fails(4, []string{"already exists"}, "segment", "create", "clinical", "--cidr", "10.9.0.0/24")
	h.fails(4, []string{"still used"}, "app", "delete", "ehr")
	h.fails(2, []string{"needs NAME"}, "segment", "show")
	h.fails(2, []string{"unknown flag"}, "segment", "list", "--bogus")
	h.fails(2, []string{"table or json"}, "segment", "list", "-o", "yaml")
	h.fails(2, []string{`required flag(s) "cidr"`}, "segment", "create", "x")

	// Deletes in dependency order.
	h.ok("rule", "delete", "nurses-ehr")
	h.ok("group", "remove-member", "nurses", "nurse")
	h.ok("group", "delete", "nurses")
	if out := h.ok("app", "delete", "ehr"); !strings.Contains(out, "Deleted app ehr") {
		t.Errorf("delete output %q", out)
	}
	if out := h.ok("segment", "delete", "clinical", "-o", "json"); out != "" {
		t.Errorf("json delete printed %q", out)
	}
	if out := h.ok("segment", "list"); strings.Contains(out, "clinical") {
		t.Errorf("segment still listed:\n%s", out)
	}
}

func TestGatewayToken(t *testing.T) {
	h := newHarness(t)
	h.ok("segment", "create", "clinical", "--cidr", "10.20.0.0/24")
	r := h.run("", "gateway", "token", "create", "--segment", "clinical", "--name", "gw-east", "--ttl", "2h")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(r.stdout, "cordon-enroll-") || !strings.Contains(r.stderr, "shown only once") {
		t.Fatalf("token create: %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	var full adminapi.CreateGatewayTokenResponse
	if err := json.Unmarshal([]byte(h.ok("gateway", "token", "create", "--segment", "clinical", "-o", "json")), &full); err != nil || full.Token == "" || full.ID == "" {
		t.Fatalf("json token: %v %+v", err, full)
	}
	var named adminapi.CreateGatewayTokenResponse
	if err := json.Unmarshal([]byte(h.ok("gateway", "token", "create", "--segment", "clinical", "--name", "gw-west", "--ttl", "2h", "-o", "json")), &named); err != nil || named.ID == "" {
		t.Fatalf("json token: %v %+v", err, named)
	}
	out := h.ok("gateway", "token", "list")
	if strings.Contains(out, "cordon-enroll-") || cell(out, full.ID, "STATE") != "valid" || cell(out, named.ID, "STATE") != "valid" {
		t.Errorf("token list:\n%s", out)
	}
	// The state is judged on the controller's clock (the test server's), not
	// on the machine's: past the default TTL (1h) only the 2h token is valid.
	h.srv.Advance(90 * time.Minute)
	out = h.ok("gateway", "token", "list")
	if cell(out, full.ID, "STATE") != "expired" || cell(out, named.ID, "STATE") != "valid" {
		t.Errorf("token list 90 minutes later:\n%s", out)
	}
	h.fails(2, []string{"at most 7d"}, "gateway", "token", "create", "--segment", "clinical", "--ttl", "30d")
	h.fails(3, []string{"radiology"}, "gateway", "token", "create", "--segment", "radiology")
	h.fails(3, []string{"not found"}, "gateway", "delete", "gw-0000000000")
	h.fails(3, []string{"not found"}, "device", "delete", "dev-0000000000")
	h.fails(3, []string{"not found", "gateway list"}, "gateway", "drain", "gw-east")
	h.fails(3, []string{"not found"}, "gateway", "undrain", "gw-east")
}

func TestSettings(t *testing.T) {
	h := newHarness(t)

	delete(h.env, cli.EnvToken)
	h.fails(2, []string{"--token-file", "CORDON_TOKEN", "cordonctl login"}, "segment", "list")
	delete(h.env, cli.EnvController)
	h.fails(2, []string{"--controller", "CORDON_CONTROLLER"}, "segment", "list")
	h.env[cli.EnvController] = h.srv.URL
	delete(h.env, cli.EnvCACert)
	h.fails(2, []string{"--ca-cert", "CORDON_CA_CERT"}, "segment", "list", "--token-file", h.tokFile)

	// Flags work without any environment.
	h.ok("segment", "list", "--controller", h.srv.URL, "--token-file", h.tokFile, "--ca-cert", h.caFile)
	h.fails(2, []string{"not both"}, "segment", "list", "--token", "x", "--token-file", h.tokFile, "--ca-cert", h.caFile)

	// Wrong token: 5.
	h.fails(5, []string{"admin token"}, "segment", "list", "--token", "cordon-admin-nope", "--ca-cert", h.caFile)

	// login saves the settings (0600); later commands need nothing.
	delete(h.env, cli.EnvController)
	out := h.ok("login", "--controller", h.srv.URL, "--token-file", h.tokFile, "--ca-cert", h.caFile)
	if !strings.Contains(out, "admin:root") {
		t.Errorf("login output %q", out)
	}
	path := filepath.Join(h.env["XDG_CONFIG_HOME"], "cordon", "cordonctl.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v", fi.Mode().Perm())
	}
	h.ok("segment", "list")
	// Flags override the saved file.
	h.fails(5, nil, "segment", "list", "--token", "cordon-admin-nope")
	// A wrong token is not saved.
	h.fails(5, nil, "login", "--token", "cordon-admin-nope")
	h.ok("segment", "list")
	// A config file others can read is refused.
	os.Chmod(path, 0o644)
	h.fails(1, []string{"chmod 600"}, "segment", "list")
	os.Chmod(path, 0o600)

	// Unreachable: 6.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h.fails(6, []string{"unreachable"}, "segment", "list", "--controller", "https://"+addr)
	// Wrong CA: not trusted, 1.
	other := apitest.New(t, apitest.Options{})
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherCA, other.CAPEM, 0o644)
	h.fails(1, []string{"--ca-cert"}, "segment", "list", "--ca-cert", otherCA)
	h.fails(2, []string{"https://"}, "segment", "list", "--controller", "http://"+addr)
}

// cell returns the cell in column col of the table row whose first cell is
// key ("" if there is no such row or column). Columns are found by the
// header's offsets, as tabwriter aligns them.
func cell(table, key, col string) string {
	lines := strings.Split(table, "\n")
	header := " " + lines[0] + " "
	start := strings.Index(header, " "+col+" ")
	if start < 0 {
		return ""
	}
	end := -1 // the next column's offset in the row; -1: the last column
	if next := strings.IndexFunc(header[start+len(col)+1:], func(r rune) bool { return r != ' ' }); next >= 0 {
		end = start + len(col) + 1 + next - 1
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) == 0 || f[0] != key || len(l) < start {
			continue
		}
		if end < 0 || end > len(l) {
			return strings.TrimSpace(l[start:])
		}
		return strings.TrimSpace(l[start:end])
	}
	return ""
}

// --version answers without a controller, and a flag after a positional
// argument counts as much as one before it (cobra parses them
// interspersed, unlike the flag package the daemons use).
func TestVersionAndFlagsAfterArguments(t *testing.T) {
	h := newHarness(t)
	if out := h.ok("--version"); !strings.HasPrefix(out, "cordonctl version ") {
		t.Errorf("--version printed %q", out)
	}
	h.ok("segment", "create", "icu", "--cidr", "10.30.0.0/24")
	if out := h.ok("segment", "list", "-o", "json"); !strings.Contains(out, "10.30.0.0/24") {
		t.Errorf("--cidr after the segment's name was ignored: %s", out)
	}
	h.fails(2, []string{"unknown flag: --no-such-flag"}, "segment", "delete", "icu", "--no-such-flag")
}
