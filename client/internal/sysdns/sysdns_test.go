package sysdns

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var stub = netip.MustParseAddr("100.64.0.11")

func TestResolvConfApplyAndRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	orig := "# from dhcp\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch hosp.example\noptions edns0\n"
	os.WriteFile(path, []byte(orig), 0o644)
	m, err := New(Config{Mode: ModeResolvConf, Stub: stub, StateDir: dir, ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetZones([]string{"hosp.internal"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), marker) || !strings.Contains(string(b), "nameserver 100.64.0.11\n") ||
		strings.Contains(string(b), "192.0.2.53") || !strings.Contains(string(b), "search hosp.example") {
		t.Errorf("managed resolv.conf:\n%s", b)
	}
	if up := m.Upstream(); len(up) != 2 || up[0].String() != "192.0.2.53:53" {
		t.Errorf("upstream = %v", up)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Errorf("not restored:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, backupName)); !os.IsNotExist(err) {
		t.Error("backup left behind")
	}
}

// A crash leaves the managed file and the backup; the next start restores.
func TestResolvConfRecoversAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	target := filepath.Join(dir, "real-resolv.conf")
	os.WriteFile(target, []byte("nameserver 192.0.2.53\n"), 0o644)
	os.Symlink(target, path)
	m, _ := New(Config{Mode: ModeResolvConf, Stub: stub, StateDir: dir, ResolvConf: path})
	if err := m.SetZones([]string{"hosp.internal"}); err != nil {
		t.Fatal(err)
	}
	// crash: no Close
	if err := Recover(dir, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(path); err != nil || got != target {
		t.Errorf("symlink not restored: %q %v", got, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("symlink target changed: %s", b)
	}
}

func TestRecoverLeavesForeignChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	os.WriteFile(path, []byte("nameserver 192.0.2.53\n"), 0o644)
	m, _ := New(Config{Mode: ModeResolvConf, Stub: stub, StateDir: dir, ResolvConf: path})
	m.SetZones(nil)
	os.WriteFile(path, []byte("nameserver 198.51.100.1\n"), 0o644) // NetworkManager rewrote it
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "nameserver 198.51.100.1\n" {
		t.Errorf("foreign resolv.conf overwritten: %s", b)
	}
}

// In containers /etc/resolv.conf is a bind mount, which cannot be renamed
// over: it is rewritten in place, and restored in place.
func TestResolvConfOnMountPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: bind-mounting a file needs root")
	}
	dir := t.TempDir()
	path, src := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "host-resolv.conf")
	os.WriteFile(path, nil, 0o644)
	os.WriteFile(src, []byte("nameserver 192.0.2.53\n"), 0o644)
	if err := syscall.Mount(src, path, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("SKIP: bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(path, 0) })
	m, _ := New(Config{Mode: ModeResolvConf, Stub: stub, StateDir: dir, ResolvConf: path})
	if err := m.SetZones(nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "nameserver 100.64.0.11") {
		t.Fatalf("not rewritten in place:\n%s", b)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(src); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("not restored: %s", b)
	}
}
