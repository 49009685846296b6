package policyfile

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/posture"
)

const postureSrc = `version: 1
posture_checks:
  legacy: full-disk encryption on
  disk: {description: Root filesystem encrypted, disk_encryption: true}
  fw: {firewall: true}
  lock: {screen_lock: true}
  lock-or-unknown: {screen_lock: true, allow_unknown: [screen_lock]}
  os-current:
    os: [debian, ubuntu, rhel]
    min_os_version: {debian: "12", ubuntu: "22.04"}
  client: {min_client_version: "0.2.0"}
  fresh: {max_report_age: 10m}
  hardened: {firewall: true, disk_encryption: true, os: [debian]}
`

func good() *posture.Report {
	return &posture.Report{
		CollectedAt: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), OS: "debian", OSVersion: "12", Kernel: "6.1.0",
		DiskEncryption: posture.Check{State: posture.Yes}, Firewall: posture.Check{State: posture.Yes},
		ScreenLock: posture.Check{State: posture.Yes}, ClientVersion: "0.2.1",
	}
}

// Each requirement fails on its own field, with a fix naming what to do;
// the description-only form never passes; unknown fails unless allowed.
func TestEvaluatePosture(t *testing.T) {
	pol, err := Parse("p.yaml", []byte(postureSrc))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 2, 9, 5, 0, 0, time.UTC)
	all := []string{"client", "disk", "fresh", "fw", "hardened", "lock", "lock-or-unknown", "os-current"}
	for _, tc := range []struct {
		name     string
		mod      func(r *posture.Report)
		received time.Duration // before now
		nilRep   bool
		fail     map[string]string // check → part of its fix
	}{
		{name: "compliant", mod: func(*posture.Report) {}},
		{name: "disk off", mod: func(r *posture.Report) { r.DiskEncryption.State = posture.No },
			fail: map[string]string{"disk": "encrypt the root filesystem", "hardened": "encrypt"}},
		{name: "disk unknown", mod: func(r *posture.Report) {
			r.DiskEncryption.State, r.DiskEncryption.Detail = posture.Unknown, "root is overlay"
		},
			fail: map[string]string{"disk": "root is overlay", "hardened": "could not be determined"}},
		{name: "firewall off", mod: func(r *posture.Report) { r.Firewall.State = posture.No },
			fail: map[string]string{"fw": "turn on the firewall", "hardened": "turn on the firewall"}},
		{name: "screen lock off", mod: func(r *posture.Report) { r.ScreenLock.State = posture.No },
			fail: map[string]string{"lock": "screen lock", "lock-or-unknown": "screen lock"}},
		{name: "screen lock unknown is allowed only where listed", mod: func(r *posture.Report) { r.ScreenLock.State = posture.Unknown },
			fail: map[string]string{"lock": "could not be determined"}},
		{name: "other os", mod: func(r *posture.Report) { r.OS = "arch" },
			fail: map[string]string{"os-current": "supported operating system", "hardened": "this device runs arch"}},
		{name: "os unknown", mod: func(r *posture.Report) { r.OS = "" },
			fail: map[string]string{"os-current": "runs unknown", "hardened": "runs unknown"}},
		{name: "old debian", mod: func(r *posture.Report) { r.OSVersion = "11" },
			fail: map[string]string{"os-current": "update debian to version 12"}},
		{name: "ubuntu dotted version", mod: func(r *posture.Report) { r.OS, r.OSVersion = "ubuntu", "22.10" },
			fail: map[string]string{"hardened": "supported operating system"}},
		{name: "old ubuntu", mod: func(r *posture.Report) { r.OS, r.OSVersion = "ubuntu", "20.04" },
			fail: map[string]string{"os-current": "ubuntu to version 22.04", "hardened": "supported"}},
		{name: "rhel has no minimum", mod: func(r *posture.Report) { r.OS, r.OSVersion = "rhel", "" },
			fail: map[string]string{"hardened": "supported"}},
		{name: "version unparsable fails closed", mod: func(r *posture.Report) { r.OSVersion = "bookworm" },
			fail: map[string]string{"os-current": "runs bookworm"}},
		{name: "old client", mod: func(r *posture.Report) { r.ClientVersion = "0.1.9" },
			fail: map[string]string{"client": "update the Cordon client to 0.2.0"}},
		{name: "dev client", mod: func(r *posture.Report) { r.ClientVersion = "dev" },
			fail: map[string]string{"client": "this one is dev"}},
		{name: "stale report", mod: func(*posture.Report) {}, received: 11 * time.Minute,
			fail: map[string]string{"fresh": "older than 10m"}},
		{name: "no report", nilRep: true,
			fail: map[string]string{"client": "no posture report", "disk": "", "fresh": "", "fw": "", "hardened": "", "lock": "", "lock-or-unknown": "", "os-current": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *posture.Report
			if !tc.nilRep {
				r = good()
				tc.mod(r)
			}
			pass, findings := pol.EvaluatePosture(r, now.Add(-tc.received), now)
			if quick := pol.PassingPosture(r, now.Add(-tc.received), now); !slices.Equal(quick, pass) {
				t.Errorf("PassingPosture = %v, EvaluatePosture passes %v", quick, pass)
			}
			var wantPass []string
			for _, c := range all {
				if _, f := tc.fail[c]; !f {
					wantPass = append(wantPass, c)
				}
			}
			if !slices.Equal(pass, wantPass) {
				t.Errorf("pass = %v, want %v", pass, wantPass)
			}
			got := map[string]string{}
			for _, f := range findings {
				got[f.Check] = f.Fix
			}
			if fix := got["legacy"]; !strings.Contains(fix, "ask your administrator") {
				t.Errorf("description-only check: fix %q", fix)
			}
			delete(got, "legacy")
			if len(got) != len(tc.fail) {
				t.Errorf("findings %v, want checks %v", got, tc.fail)
			}
			for c, want := range tc.fail {
				if !strings.Contains(got[c], want) {
					t.Errorf("%s: fix %q, want it to mention %q", c, got[c], want)
				}
			}
		})
	}
}

// The description-only form of a check (every policy file before checks
// had requirements) still parses, fails closed and is warned about with
// its position.
func TestPostureDescriptionOnlyWarns(t *testing.T) {
	pol, err := Parse("p.yaml", []byte(postureSrc))
	if err != nil {
		t.Fatal(err)
	}
	w := pol.Warnings()
	if len(w) != 1 || w[0].Pos != (Pos{3, 3}) || !strings.Contains(w[0].Error(), `p.yaml:3:3: posture check "legacy" is a description only`) {
		t.Fatalf("warnings = %v", w)
	}
	if c := pol.PostureChecks["legacy"]; c.Defined || c.Description != "full-disk encryption on" {
		t.Fatalf("legacy = %+v", c)
	}
	if len(hospital(t).Warnings()) != 0 {
		t.Fatal("the worked example has description-only checks")
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		have, min string
		want      bool
	}{
		{"12", "12", true}, {"12.1", "12", true}, {"12", "12.0", true}, {"11.9", "12", false},
		{"22.04", "22.04", true}, {"22.10", "22.04", true}, {"20.04", "22.04", false},
		{"v0.3.0-rc1", "0.2.0", true}, {"0.1.10", "0.1.9", true}, {"", "1", false}, {"x", "1", false},
	} {
		if got := versionAtLeast(tc.have, tc.min); got != tc.want {
			t.Errorf("versionAtLeast(%q, %q) = %v", tc.have, tc.min, got)
		}
	}
}

func BenchmarkPassingPosture(b *testing.B) {
	pol, err := Parse("p.yaml", []byte(postureSrc))
	if err != nil {
		b.Fatal(err)
	}
	r, now := good(), time.Now()
	r.Firewall.State = posture.No
	b.ReportAllocs()
	for b.Loop() {
		pol.PassingPosture(r, now, now)
	}
}
