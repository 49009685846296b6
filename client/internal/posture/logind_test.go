package posture

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"

	"github.com/cordonhq/cordon/client/internal/dbustest"
	"github.com/cordonhq/cordon/pkg/posture"
)

// fakeLogind answers the two org.freedesktop.login1.Manager calls the
// collector makes, from maps of process → session and user → user object.
type fakeLogind struct {
	sessions map[uint32]dbus.ObjectPath
	users    map[uint32]dbus.ObjectPath
}

func (f *fakeLogind) GetSessionByPID(pid uint32) (dbus.ObjectPath, *dbus.Error) {
	if s, ok := f.sessions[pid]; ok {
		return s, nil
	}
	return "", dbus.NewError("org.freedesktop.login1.NoSessionForPID", []any{"PID does not belong to any known session"})
}

func (f *fakeLogind) GetUser(uid uint32) (dbus.ObjectPath, *dbus.Error) {
	if u, ok := f.users[uid]; ok {
		return u, nil
	}
	return "", dbus.NewError("org.freedesktop.login1.NoSuchUser", []any{"User not known or not logged in"})
}

// display is logind's User.Display: session ID and path, "/" for none.
type display struct {
	ID   string
	Path dbus.ObjectPath
}

// TestLogindScreenLock serves a fake systemd-logind on a private bus and
// checks that the screen lock is the LockedHint of the process's session,
// else of its user's display session, and unknown only without one.
func TestLogindScreenLock(t *testing.T) {
	addr := dbustest.SystemBus(t)
	conn := dbustest.Own(t, addr, logindDest)
	const (
		locked    = dbus.ObjectPath("/org/freedesktop/login1/session/_31")
		unlocked  = dbus.ObjectPath("/org/freedesktop/login1/session/_32")
		garbled   = dbus.ObjectPath("/org/freedesktop/login1/session/_33")
		withDisp  = dbus.ObjectPath("/org/freedesktop/login1/user/_1000")
		noDisplay = dbus.ObjectPath("/org/freedesktop/login1/user/_1001")
	)
	self := uint32(os.Getpid())
	fake := &fakeLogind{
		sessions: map[uint32]dbus.ObjectPath{self: locked, 200: unlocked, 300: garbled},
		users:    map[uint32]dbus.ObjectPath{1000: withDisp, 1001: noDisplay},
	}
	if err := conn.Export(fake, logindPath, logindManager); err != nil {
		t.Fatal(err)
	}
	props := map[dbus.ObjectPath]prop.Map{
		locked:    {logindSession: {"LockedHint": {Value: true}}},
		unlocked:  {logindSession: {"LockedHint": {Value: false}}},
		garbled:   {logindSession: {"LockedHint": {Value: "yes"}}},
		withDisp:  {logindUser: {"Display": {Value: display{"32", unlocked}}}},
		noDisplay: {logindUser: {"Display": {Value: display{"", "/"}}}},
	}
	for p, m := range props {
		if _, err := prop.Export(conn, p, m); err != nil {
			t.Fatal(err)
		}
	}

	// Through the system bus, as the client does, for this very process.
	if c := LogindScreenLock(t.Context()); c.State != posture.Yes || !strings.Contains(c.Detail, "this process's session") {
		t.Errorf("this process in a locked session: %+v", c)
	}

	client, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		name     string
		pid, uid uint32
		want     posture.State
		detail   string
	}{
		{"session unlocked", 200, 0, posture.No, "not locked now (this process's session"},
		{"no session for the process: the user's display session", 999, 1000, posture.No, "display session 32"},
		{"user without a display session", 999, 1001, posture.Unknown, "no systemd-logind session"},
		{"user without any session", 999, 4242, posture.Unknown, "no systemd-logind session"},
		{"LockedHint not a boolean", 300, 0, posture.Unknown, "not a boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := screenLock(t.Context(), client, tc.pid, tc.uid)
			if c.State != tc.want || !strings.Contains(c.Detail, tc.detail) {
				t.Errorf("got %+v, want %s with %q", c, tc.want, tc.detail)
			}
		})
	}

	t.Run("no logind on the bus", func(t *testing.T) {
		if c := LogindScreenLock(context.Background()); c.State != posture.Yes {
			t.Fatalf("precondition: %+v", c)
		}
		dbustest.SystemBus(t) // a second, empty bus
		if c := LogindScreenLock(t.Context()); c.State != posture.Unknown || !strings.Contains(c.Detail, "does not run") {
			t.Errorf("got %+v, want unknown saying logind does not run", c)
		}
	})
	t.Run("no system bus", func(t *testing.T) {
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/none")
		if c := LogindScreenLock(t.Context()); c.State != posture.Unknown || !strings.Contains(c.Detail, "no system D-Bus") {
			t.Errorf("got %+v, want unknown saying there is no bus", c)
		}
	})
}
