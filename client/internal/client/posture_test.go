package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/posture"
)

// The posture file overrides only the fields it sets (a check whole, so
// no collected detail contradicts it), rejects unknown fields, and a
// report differing only in collection time has the same digest.
func TestPostureFileOverrides(t *testing.T) {
	collected := posture.Report{
		CollectedAt: time.Now(), OS: "debian", OSVersion: "12", Kernel: "6.1.0", ClientVersion: "dev",
		DiskEncryption: posture.Check{State: posture.No, Detail: "root filesystem (device 8:1) is not on dm-crypt"},
		Firewall:       posture.Check{State: posture.Yes, Detail: "input chain inet/filter drops by default"},
		ScreenLock:     posture.Check{State: posture.Unknown},
	}
	file := filepath.Join(t.TempDir(), "posture.json")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"disk_encryption": {"state": "yes"}, "os_version": "13"}`)
	rep := collected
	if err := overridePosture(&rep, file); err != nil {
		t.Fatal(err)
	}
	if rep.DiskEncryption != (posture.Check{State: posture.Yes}) || rep.OSVersion != "13" || rep.OS != "debian" || rep.Firewall != collected.Firewall {
		t.Fatalf("overridden report %+v", rep)
	}
	if err := rep.Validate(time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"disk": true}`, `{"firewall": {"state": "yes", "why": "x"}}`, `not json`} {
		write(bad)
		r := collected
		if err := overridePosture(&r, file); err == nil || !strings.Contains(err.Error(), "posture file") {
			t.Errorf("%s: err %v", bad, err)
		}
	}
	if err := overridePosture(&rep, filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing posture file was accepted")
	}
	later := collected
	later.CollectedAt = later.CollectedAt.Add(time.Minute)
	if reportDigest(later) != reportDigest(collected) {
		t.Error("the digest depends on the collection time")
	}
	later.Firewall.State = posture.No
	if reportDigest(later) == reportDigest(collected) {
		t.Error("the digest ignores the firewall")
	}
}

// Posture facts from a mobile shell: the fields only the OS knows are
// accepted, integrity included; anything the controller would refuse is
// a clear error at the shell's call, not a silent drop at collection.
func TestCheckPostureFacts(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	good := `{"os":"android","os_version":"15","disk_encryption":{"state":"yes","detail":"file-based encryption"},` +
		`"screen_lock":{"state":"yes"},"integrity":{"state":"no","detail":"Play Integrity: device not certified"}}`
	if err := CheckPostureFacts([]byte(good), now); err != nil {
		t.Fatalf("good facts refused: %v", err)
	}
	rep := posture.Report{CollectedAt: now, OS: "debian", Firewall: posture.Check{State: posture.Yes}}
	if err := overridePostureJSON(&rep, []byte(good)); err != nil {
		t.Fatal(err)
	}
	if rep.OS != "android" || rep.Integrity.State != posture.No || rep.Firewall.State != posture.Yes {
		t.Fatalf("facts applied as %+v", rep)
	}
	for name, bad := range map[string]string{
		"unknown field":   `{"rooted":true}`,
		"bad state":       `{"integrity":{"state":"maybe"}}`,
		"detail no state": `{"integrity":{"detail":"x"}}`,
		"control chars":   `{"os_version":"15\u001b[31m"}`,
		"not json":        `{`,
		"collected_at":    `{"collected_at":"2026-12-04T11:00:00Z"}`,
		"too large":       `{"os":"` + strings.Repeat("a", posture.MaxSize) + `"}`,
	} {
		err := CheckPostureFacts([]byte(bad), now)
		if err == nil || !strings.HasPrefix(err.Error(), "posture facts: ") {
			t.Errorf("%s: got %v, want a posture facts error", name, err)
		}
	}
}

// FuzzCheckPostureFacts: whatever a shell passes, the facts are refused
// with an error or make a report the controller accepts; never a panic.
func FuzzCheckPostureFacts(f *testing.F) {
	f.Add([]byte(`{"os":"android","integrity":{"state":"no","detail":"rooted"}}`))
	f.Add([]byte(`{"screen_lock":{"state":"yes"},"disk_encryption":{}}`))
	f.Add([]byte(`{"collected_at":"2030-01-01T00:00:00Z"}`))
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		if CheckPostureFacts(b, now) != nil {
			return
		}
		rep := posture.Report{CollectedAt: now, DiskEncryption: posture.Check{State: posture.Unknown},
			Firewall: posture.Check{State: posture.Unknown}, ScreenLock: posture.Check{State: posture.Unknown}}
		if err := overridePostureJSON(&rep, b); err != nil {
			t.Fatalf("checked facts do not apply: %v", err)
		}
		if err := rep.Validate(now); err != nil {
			t.Fatalf("checked facts make a report the controller refuses: %v", err)
		}
	})
}
