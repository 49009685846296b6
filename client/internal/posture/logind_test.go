package posture

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

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
	if st, err := readSystemBus(t.Context()); err != nil || !st.locked || st.session != locked || !strings.Contains(st.how, "this process's session") {
		t.Errorf("this process in a locked session: %+v, %v", st, err)
	}

	client, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		name     string
		pid, uid uint32
		session  dbus.ObjectPath
		locked   bool
		err      string // "": none
	}{
		{"session unlocked", 200, 0, unlocked, false, ""},
		{"no session for the process: the user's display session", 999, 1000, unlocked, false, ""},
		{"user without a display session", 999, 1001, "", false, "no systemd-logind session"},
		{"user without any session", 999, 4242, "", false, "no systemd-logind session"},
		{"LockedHint not a boolean", 300, 0, "", false, "not a boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := readLock(t.Context(), client, tc.pid, tc.uid)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %+v, %v; want an error saying %q", st, err, tc.err)
			case tc.err == "" && (err != nil || st.session != tc.session || st.locked != tc.locked):
				t.Errorf("got %+v, %v; want session %s locked=%v", st, err, tc.session, tc.locked)
			}
		})
	}
	if st, _ := readLock(t.Context(), client, 999, 1000); !strings.Contains(st.how, "display session 32") {
		t.Errorf("the display session is not named: %q", st.how)
	}

	t.Run("no logind on the bus", func(t *testing.T) {
		dbustest.SystemBus(t) // a second, empty bus
		if c := NewScreenLock().Check(t.Context()); c.State != posture.Unknown || !strings.Contains(c.Detail, "does not run") {
			t.Errorf("got %+v, want unknown saying logind does not run", c)
		}
	})
	t.Run("no system bus", func(t *testing.T) {
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/none")
		if c := NewScreenLock().Check(t.Context()); c.State != posture.Unknown || !strings.Contains(c.Detail, "no system D-Bus") {
			t.Errorf("got %+v, want unknown saying there is no bus", c)
		}
	})
}

// The check passes once the session has been seen locked (a screen locker
// guards it), also while it is unlocked again; a session never seen locked
// fails, with what to do; no session is unknown.
func TestScreenLockRemembersALock(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	now := t0
	var next lockState
	var nextErr error
	s := &ScreenLock{read: func(context.Context) (lockState, error) { return next, nextErr }, now: func() time.Time { return now }}
	const sess1, sess2 = dbus.ObjectPath("/org/freedesktop/login1/session/_31"), dbus.ObjectPath("/org/freedesktop/login1/session/_32")
	for _, step := range []struct {
		name   string
		st     lockState
		err    error
		want   posture.State
		detail string
	}{
		{"unlocked, never seen locked", lockState{session: sess1}, nil, posture.No, "lock it once"},
		{"locked", lockState{session: sess1, locked: true}, nil, posture.Yes, "locked now"},
		{"unlocked again", lockState{session: sess1}, nil, posture.Yes, "locked this session at 2026-03-02T08:02:00Z"},
		{"another session, unlocked", lockState{session: sess2}, nil, posture.No, "lock it once"},
		{"no session", lockState{}, errNoSession, posture.Unknown, "no systemd-logind session"},
	} {
		now = now.Add(time.Minute)
		next, nextErr = step.st, step.err
		if c := s.Check(t.Context()); c.State != step.want || !strings.Contains(c.Detail, step.detail) {
			t.Errorf("%s: got %+v, want %s with %q", step.name, c, step.want, step.detail)
		}
	}
}
