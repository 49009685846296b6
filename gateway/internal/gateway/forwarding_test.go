package gateway

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func fakeSysctl(t *testing.T, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ip_forward")
	if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := ipForwardPath
	ipForwardPath = p
	t.Cleanup(func() { ipForwardPath = old })
	return p
}

func sysctlValue(t *testing.T, p string) string {
	t.Helper()
	v, err := readSysctl(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestForwardingOffNeedsTheOperator(t *testing.T) {
	p := fakeSysctl(t, "0")
	if _, err := prepareForwarding(t.TempDir(), false, slog.New(slog.DiscardHandler)); !errors.Is(err, errForwardingOff) {
		t.Fatalf("prepareForwarding with forwarding off = %v, want errForwardingOff", err)
	}
	if v := sysctlValue(t, p); v != "0" {
		t.Fatalf("forwarding changed to %s without --manage-forwarding", v)
	}
}

func TestForwardingOnIsLeftAlone(t *testing.T) {
	p := fakeSysctl(t, "1")
	for _, manage := range []bool{false, true} {
		restore, err := prepareForwarding(t.TempDir(), manage, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		restore()
		if v := sysctlValue(t, p); v != "1" {
			t.Fatalf("manage=%v: operator's forwarding turned to %s", manage, v)
		}
	}
}

func TestManagedForwardingIsRestored(t *testing.T) {
	p := fakeSysctl(t, "0")
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	if _, err := prepareForwarding(dir, true, log); err != nil {
		t.Fatal(err)
	}
	if v := sysctlValue(t, p); v != "1" {
		t.Fatalf("--manage-forwarding left it at %s", v)
	}
	// Killed: no restore ran. The next run still knows it was 0.
	restore, err := prepareForwarding(dir, true, log)
	if err != nil {
		t.Fatal(err)
	}
	restore()
	if v := sysctlValue(t, p); v != "0" {
		t.Fatalf("after a crash and a clean stop forwarding is %s, want the operator's 0", v)
	}
	if _, err := os.Stat(filepath.Join(dir, forwardMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker left behind: %v", err)
	}
}
