package policyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

var update = flag.Bool("update", false, "rewrite golden files")

func hospital(t testing.TB) *Policy {
	t.Helper()
	src, err := os.ReadFile("testdata/hospital.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pol, res, err := Validate("hospital.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) == 0 {
		t.Fatal("no tests ran")
	}
	return pol
}

func TestHospitalExampleValidates(t *testing.T) {
	pol := hospital(t)
	if got := len(pol.Tests); got < 10 {
		t.Fatalf("%d tests", got)
	}
}

// Each file under testdata/errors is refused with exactly the messages in
// its .golden file (run with -update to rewrite them after a deliberate
// change, and read the diff).
func TestErrorsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = Validate(filepath.Base(f), src)
			if err == nil {
				t.Fatal("accepted")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				if strings.HasPrefix(line, filepath.Base(f)+":") && !strings.Contains(line, ";") && !strings.Contains(line, "expected") {
					t.Errorf("message says what is wrong but not what would be right: %s", line)
				}
			}
		})
	}
}

func TestSyntaxErrorHasLineAndColumn(t *testing.T) {
	_, err := Parse("p.yaml", []byte("version: 1\ngroups:\n  a:\n    members: [x\n"))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Pos.Line == 0 || list[0].Pos.Col == 0 {
		t.Fatalf("err = %v", err)
	}
}

func TestRejectsAliasesAndHugeFiles(t *testing.T) {
	if _, err := Parse("p.yaml", []byte("version: 1\ngroups:\n  a: &x {members: [u]}\n  b: *x\n")); err == nil || !strings.Contains(err.Error(), "aliases") {
		t.Fatalf("alias: %v", err)
	}
	big := make([]byte, MaxFileSize+1)
	if _, err := Parse("p.yaml", big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("big: %v", err)
	}
}

func TestParseWindow(t *testing.T) {
	w, err := ParseWindow("Mon-Fri 06:00-20:00 America/New_York")
	if err != nil || w.Days != 0b0111110 || w.Start != 360 || w.End != 1200 {
		t.Fatalf("%+v %v", w, err)
	}
	w, err = ParseWindow("Fri-Mon 22:00-06:00 Europe/Berlin")
	if err != nil || w.Days != 0b1100011 {
		t.Fatalf("%+v %v", w, err)
	}
	for _, bad := range []string{"Mon 06:00-06:00 UTC", "Mon 6-7 UTC", "Mon 06:00-07:00 Nowhere/Land", "Funday 06:00-07:00 UTC", "Mon 06:00-07:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Overnight window: Friday 23:00 and Saturday 05:00 New York are in it.
	w, _ = ParseWindow("Fri 22:00-06:00 America/New_York")
	ny, _ := time.LoadLocation("America/New_York")
	for at, want := range map[time.Time]bool{
		time.Date(2026, 3, 6, 23, 0, 0, 0, ny): true,
		time.Date(2026, 3, 7, 5, 0, 0, 0, ny):  true,
		time.Date(2026, 3, 7, 23, 0, 0, 0, ny): false,
		time.Date(2026, 3, 6, 21, 0, 0, 0, ny): false,
	} {
		if got, _ := w.Contains(at); got != want {
			t.Errorf("%v: %v", at, got)
		}
	}
}

// Regression guard for the worked example: who must NOT reach what.
func TestHospitalWhoMustNot(t *testing.T) {
	pol := hospital(t)
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	full := policy.Session{MFAAt: at.Add(-time.Minute), Posture: []string{"disk-encrypted", "os-current", "screen-lock"}}
	for _, tc := range []struct {
		user, app string
		tags      []string
		port      uint16
	}{
		{"mallory", "ehr", nil, 443},
		{"mallory", "pacs", []string{"reading-room"}, 443},
		{"frank", "ehr", nil, 443},
		{"alice", "billing", nil, 443},
		{"alice", "pacs", nil, 11112},
		{"erin", "pharmacy", nil, 8443},
		{"alice", "ehr", nil, 22},
	} {
		r := pol.Evaluate(Request{User: tc.user, Tags: tc.tags, Session: full, At: at, App: tc.app, Proto: policy.ProtoTCP, Port: tc.port})
		if r.Verdict != policy.Deny {
			t.Errorf("%s on %v reaches %s:%d: %s", tc.user, tc.tags, tc.app, tc.port, Explain(r))
		}
	}
}

func TestCompileIsDeterministic(t *testing.T) {
	pol := hospital(t)
	a, b := pol.WireRules(""), pol.WireRules("")
	if len(a) == 0 || len(a) != len(b) {
		t.Fatal(len(a), len(b))
	}
	for i := range a {
		if a[i].ID != b[i].ID || i > 0 && a[i-1].ID >= a[i].ID {
			t.Fatalf("order differs at %d", i)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	more, _ := filepath.Glob("testdata/errors/*.yaml")
	for _, p := range append(files, more...) {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("version: 1\n"))
	f.Add([]byte(postureSrc))
	f.Fuzz(func(t *testing.T, src []byte) {
		tm := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("hang on %q", src)) })
		defer tm.Stop()
		pol, err := Parse("f.yaml", src)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is not an ErrorList: %v", err)
			}
			for _, e := range list {
				if e.Pos.Line < 1 || e.Pos.Col < 1 {
					t.Fatalf("error without position: %v", e)
				}
			}
			return
		}
		// A policy that parses must evaluate posture, compile and run its
		// tests without panic.
		now := time.Now()
		pol.EvaluatePosture(nil, now, now)
		pass, _ := pol.EvaluatePosture(good(), now.Add(-time.Hour), now)
		if quick := pol.PassingPosture(good(), now.Add(-time.Hour), now); !slices.Equal(quick, pass) {
			t.Fatalf("PassingPosture %v, EvaluatePosture passes %v", quick, pass)
		}
		if _, err := pol.RunTests("f.yaml"); err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatal(err)
		}
	})
}

// Two controllers parsing the same file with the same directory produce
// byte-identical compiled output.
func TestCompiledOutputIsByteIdentical(t *testing.T) {
	src, err := os.ReadFile("testdata/hospital.yaml")
	if err != nil {
		t.Fatal(err)
	}
	devices := []Device{
		{ID: "d2", User: "mallory", Addr: netip.MustParseAddr("100.64.0.2"), Tags: []string{"reading-room"}},
		{ID: "d1", User: "alice", Addr: netip.MustParseAddr("100.64.0.1")},
		{ID: "d3", User: "zed", Addr: netip.MustParseAddr("100.64.0.3"), IdP: []IdPRef{{"groups", "Physicians"}}},
	}
	out := func() []byte {
		pol, err := Parse("hospital.yaml", src)
		if err != nil {
			t.Fatal(err)
		}
		rules := pol.WireRules("")
		b, err := json.Marshal(struct {
			R []policy.Rule
			P []policy.Peer
		}{rules, pol.Peers(devices, rules)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := out()
	for range 5 {
		if b := out(); !bytes.Equal(a, b) {
			t.Fatalf("compiled output differs between runs:\n%s\n%s", a, b)
		}
	}
}

func TestDiffSaysWhoGainsAndLoses(t *testing.T) {
	src, err := os.ReadFile("testdata/hospital.yaml")
	if err != nil {
		t.Fatal(err)
	}
	old, err := Parse("old.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(old, old); len(d) != 0 {
		t.Fatalf("a policy differs from itself: %+v", d)
	}
	// Move bob from nurses to billing staff and narrow the EHR rule's MFA age.
	s := strings.Replace(string(src), "members: [alice, bob]", "members: [alice]", 1)
	s = strings.Replace(s, "members: [frank]", "members: [frank, bob]", 1)
	s = strings.Replace(s, "mfa_max_age: 12h", "mfa_max_age: 8h", 1)
	cur, err := Parse("new.yaml", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range Diff(old, cur) {
		got[c.Who+" "+c.App] = c.Kind
	}
	for k, want := range map[string]string{
		"user:bob ehr": "lose", "user:bob billing": "gain", "user:alice ehr": "change", "user:bob intranet": "",
	} {
		if got[k] != want {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], want, got)
		}
	}
}

// Regression: an app with "addresses: []" parsed, then running the tests
// indexed its first address.
func TestEmptyListsAreRefused(t *testing.T) {
	src := `version: 1
segments:
  lan: {prefixes: []}
apps:
  ehr: {segment: lan, addresses: [], ports: []}
rules:
  - {name: r, from: [], to: [], waiver: "a long enough written waiver reason"}
tests:
  - {name: t, user: u, app: ehr, port: tcp/443, expect: deny}
`
	_, err := Parse("p.yaml", []byte(src))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"no prefixes", "no addresses", "no ports", "no from", "no to"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// A YAML syntax error points at the line that holds the problem, not at
// the line before the mapping or list it is in (yaml.v3's report for its
// parser's errors).
func TestSyntaxErrorLine(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
	}{
		{"version: 1\ngroups:\n  nurses:\n    members: [ann, bob]\n   bad: indent\n", 5},
		{"version: 1\napps:\n  ehr:\n    segment: lan\n    addrs: [10.0.0.1/32\n    services: [tcp/443]\n", 5},
		{"version: 1\ngroups: {nurses: {members: [ann]}\napps: {}\n", 2},
		{"version: 1\ngroups:\n\tnurses: {}\n", 3},
		{"version: 1\ngroups:\n  - a\n  b: c\n", 4},
	} {
		_, err := Parse("p.yaml", []byte(tc.src))
		var list ErrorList
		if !errors.As(err, &list) || len(list) != 1 || !strings.Contains(list[0].Msg, "YAML syntax error") {
			t.Errorf("%q: %v, want one syntax error", tc.src, err)
			continue
		}
		if list[0].Pos.Line != tc.line {
			t.Errorf("%q: reported at line %d (%s), want line %d", tc.src, list[0].Pos.Line, list[0].Msg, tc.line)
		}
	}
}
