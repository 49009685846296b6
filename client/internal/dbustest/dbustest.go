// Package dbustest runs a private D-Bus daemon for tests that talk to
// system services (systemd-resolved, systemd-logind): the code under test
// connects to it as the system bus (DBUS_SYSTEM_BUS_ADDRESS), and the test
// serves a fake of the service on it. Nothing touches the machine's own
// buses.
package dbustest

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

// SystemBus starts a private dbus-daemon for the rest of the test, makes
// it the system bus of the test's process (t.Setenv, so the test may not
// be parallel) and returns its address. It skips the test when
// dbus-daemon is not installed (Debian package dbus-daemon).
func SystemBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("SKIP: dbus-daemon not installed")
	}
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read the dbus-daemon's address: %v", err)
	}
	addr = strings.TrimSpace(addr)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	return addr
}

// Own connects to the bus at addr as the owner of name, the well-known
// name of the service the test fakes; the connection closes when the
// test ends. The caller exports its fake's objects on it.
func Own(t *testing.T, addr, name string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect to the test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if r, err := conn.RequestName(name, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s on the test bus: reply %v, %v", name, r, err)
	}
	return conn
}
