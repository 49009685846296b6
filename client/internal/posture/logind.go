package posture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
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

// ScreenLock reports the screen_lock posture check from systemd-logind.
// The policy's screen_lock means "the screen locks automatically"; logind
// tells only whether the session is locked now (its LockedHint, which a
// screen locker such as GNOME's, KDE's or xss-lock sets while it holds the
// screen). So the check passes once this session has been seen locked: a
// locker guards it. It fails while the session has not been seen locked
// since the client started (the fix: lock the screen once), and is unknown
// only when there is no logind session to ask about. The zero value is not
// usable; use NewScreenLock.
type ScreenLock struct {
	read func(context.Context) (lockState, error)
	now  func() time.Time

	mu     sync.Mutex
	seen   dbus.ObjectPath // the session last seen locked
	seenAt time.Time       // when it was last seen locked
}

// NewScreenLock asks the system bus's logind about the session this
// process runs in, else its user's display session.
func NewScreenLock() *ScreenLock {
	return &ScreenLock{read: readSystemBus, now: time.Now}
}

// Check is the screen_lock check now.
func (s *ScreenLock) Check(ctx context.Context) posture.Check {
	st, err := s.read(ctx)
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: "screen lock: " + err.Error()}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.locked {
		s.seen, s.seenAt = st.session, now
		return posture.Check{State: posture.Yes, Detail: "the screen is locked now (" + st.how + ", logind LockedHint)"}
	}
	if s.seen == st.session {
		return posture.Check{State: posture.Yes, Detail: fmt.Sprintf("a screen locker locked this session at %s (%s, logind LockedHint)", s.seenAt.Format(time.RFC3339), st.how)}
	}
	return posture.Check{State: posture.No, Detail: "the screen has not been seen locked since cordon started (" + st.how + ", logind LockedHint): lock it once (e.g. Super+L) to show a screen locker guards it"}
}

// lockState is what logind says about the session.
type lockState struct {
	session dbus.ObjectPath
	how     string // which session it is, for the detail
	locked  bool
}

func readSystemBus(ctx context.Context) (lockState, error) {
	ctx, cancel := context.WithTimeout(ctx, logindCallLimit)
	defer cancel()
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return lockState{}, fmt.Errorf("no system D-Bus to ask systemd-logind (%w)", err)
	}
	defer conn.Close()
	return readLock(ctx, conn, uint32(os.Getpid()), uint32(os.Getuid()))
}

// readLock asks logind on conn for the LockedHint of process pid's
// session, else of user uid's display session.
func readLock(ctx context.Context, conn *dbus.Conn, pid, uid uint32) (lockState, error) {
	sess, how, err := logindSessionOf(ctx, conn, pid, uid)
	if err != nil {
		return lockState{}, err
	}
	v, err := conn.Object(logindDest, sess).GetProperty(logindSession + ".LockedHint")
	if err != nil {
		return lockState{}, fmt.Errorf("read LockedHint of logind session %s: %w", sess, err)
	}
	locked, ok := v.Value().(bool)
	if !ok {
		return lockState{}, fmt.Errorf("logind session %s: LockedHint is %s, not a boolean", sess, v.Signature())
	}
	return lockState{session: sess, how: how, locked: locked}, nil
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
