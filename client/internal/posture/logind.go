package posture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/cordonhq/cordon/pkg/posture"
)

// systemd-logind's D-Bus names (org.freedesktop.login1(5)).
const (
	logindDest      = "org.freedesktop.login1"
	logindPath      = "/org/freedesktop/login1"
	logindManager   = "org.freedesktop.login1.Manager"
	logindSession   = "org.freedesktop.login1.Session"
	logindUser      = "org.freedesktop.login1.User"
	logindCallLimit = 5 * time.Second // logind answers at once; a hung bus must not stall posture reports
)

// LogindScreenLock reads whether the screen is locked now from
// systemd-logind: the LockedHint of the session this process runs in, or,
// for a client started outside the user's session (a systemd unit), of
// the user's display session. A screen locker (GNOME, KDE, xss-lock…)
// sets the hint while the screen is locked. Without a logind session the
// state is unknown.
func LogindScreenLock(ctx context.Context) posture.Check {
	ctx, cancel := context.WithTimeout(ctx, logindCallLimit)
	defer cancel()
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: "screen lock: no system D-Bus to ask systemd-logind (" + err.Error() + ")"}
	}
	defer conn.Close()
	return screenLock(ctx, conn, uint32(os.Getpid()), uint32(os.Getuid()))
}

// screenLock asks logind on conn for the LockedHint of process pid's
// session, else of user uid's display session.
func screenLock(ctx context.Context, conn *dbus.Conn, pid, uid uint32) posture.Check {
	sess, how, err := logindSessionOf(ctx, conn, pid, uid)
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: "screen lock: " + err.Error()}
	}
	v, err := conn.Object(logindDest, sess).GetProperty(logindSession + ".LockedHint")
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: fmt.Sprintf("screen lock: read LockedHint of logind session %s: %v", sess, err)}
	}
	locked, ok := v.Value().(bool)
	if !ok {
		return posture.Check{State: posture.Unknown, Detail: fmt.Sprintf("screen lock: logind session %s: LockedHint is %s, not a boolean", sess, v.Signature())}
	}
	if locked {
		return posture.Check{State: posture.Yes, Detail: "the screen is locked now (" + how + ", logind LockedHint)"}
	}
	return posture.Check{State: posture.No, Detail: "the screen is not locked now (" + how + ", logind LockedHint)"}
}

// errNoSession is the answer when logind has no session for the process
// nor a display session for its user.
var errNoSession = errors.New("no systemd-logind session for this process or its user")

// logindSessionOf returns the object path of pid's logind session or, when
// pid is in none, of uid's display session, and says which it is.
func logindSessionOf(ctx context.Context, conn *dbus.Conn, pid, uid uint32) (dbus.ObjectPath, string, error) {
	mgr := conn.Object(logindDest, logindPath)
	var sess dbus.ObjectPath
	err := mgr.CallWithContext(ctx, logindManager+".GetSessionByPID", 0, pid).Store(&sess)
	if err == nil && sess.IsValid() && sess != "/" {
		return sess, "this process's session", nil
	}
	var de dbus.Error
	switch {
	case err != nil && errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.ServiceUnknown":
		return "", "", errors.New("systemd-logind does not run (no logind session)")
	case err != nil && !errors.As(err, &de):
		// Not logind's answer: the bus failed.
		return "", "", fmt.Errorf("ask systemd-logind for this process's session: %w", err)
	}
	var user dbus.ObjectPath
	if err := mgr.CallWithContext(ctx, logindManager+".GetUser", 0, uid).Store(&user); err != nil {
		return "", "", errNoSession // NoSuchUser: the user has no session at all
	}
	v, err := conn.Object(logindDest, user).GetProperty(logindUser + ".Display")
	if err != nil {
		return "", "", fmt.Errorf("read the display session of logind user %d: %w", uid, err)
	}
	// Display is (so): the session ID and its object path, "/" for none.
	var display struct {
		ID   string
		Path dbus.ObjectPath
	}
	if err := dbus.Store([]any{v.Value()}, &display); err != nil {
		return "", "", fmt.Errorf("logind user %d: Display is %s, not (so)", uid, v.Signature())
	}
	if !display.Path.IsValid() || display.Path == "/" {
		return "", "", errNoSession
	}
	return display.Path, "display session " + display.ID + " of this user", nil
}
