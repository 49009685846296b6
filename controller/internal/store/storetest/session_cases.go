package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// device creates user (if new) and a device of theirs; i picks its key.
func device(t *testing.T, s store.Store, userName string, i int) store.Device {
	t.Helper()
	if _, err := s.GetUser(ctx(t), userName); err != nil {
		must(t, s.CreateUser(ctx(t), user(userName)))
	}
	d, err := s.CreateDevice(ctx(t), store.Device{ID: fmt.Sprintf("dev-%d", i), User: userName, Hostname: "pc", PublicKey: key(t, i), CreatedAt: t0})
	must(t, err)
	return d
}

func sess(id string, d store.Device, started time.Time) store.Session {
	return store.Session{ID: id, DeviceID: d.ID, User: d.User, Method: "password+totp", Source: "192.0.2.7", StartedAt: started, MFAAt: started}
}

func testSessions(t *testing.T, s store.Store) {
	d1 := device(t, s, "nurse", 1)
	d2 := device(t, s, "nurse", 2)
	d3 := device(t, s, "doctor", 3)

	// Start, get, list.
	replaced, err := s.StartSession(ctx(t), sess("s1", d1, at(0)))
	must(t, err)
	equal(t, "replaced by the first session", len(replaced), 0)
	got, err := s.GetSession(ctx(t), "s1")
	must(t, err)
	want := sess("s1", d1, at(0))
	want.LastActivity = at(0)
	equal(t, "stored session", got, want)
	if !got.Active() {
		t.Fatal("a new session is not active")
	}
	_, err = s.GetSession(ctx(t), "nope")
	wantErr(t, "get unknown session", err, store.ErrNotFound)

	// A device of another user, or an unknown device, cannot have a session.
	bad := sess("sx", d3, at(0))
	bad.User = "nurse"
	_, err = s.StartSession(ctx(t), bad)
	wantErr(t, "session for another user's device", err, store.ErrNotFound)
	_, err = s.StartSession(ctx(t), sess("sy", store.Device{ID: "ghost", User: "nurse"}, at(0)))
	wantErr(t, "session for an unknown device", err, store.ErrNotFound)

	// Signing in again replaces the device's session.
	replaced, err = s.StartSession(ctx(t), sess("s2", d1, at(time.Minute)))
	must(t, err)
	equal(t, "replaced sessions", len(replaced), 1)
	equal(t, "replaced session", replaced[0].ID, "s1")
	equal(t, "replaced reason", replaced[0].EndReason, store.EndReplaced)
	equal(t, "replaced at", replaced[0].EndedAt, at(time.Minute))
	_, err = s.StartSession(ctx(t), sess("s3", d2, at(2*time.Minute)))
	must(t, err)
	_, err = s.StartSession(ctx(t), sess("s4", d3, at(3*time.Minute)))
	must(t, err)

	active, err := s.ListSessions(ctx(t), store.SessionFilter{ActiveOnly: true})
	must(t, err)
	equal(t, "active sessions newest first", names(active, func(x store.Session) string { return x.ID }), []string{"s4", "s3", "s2"})
	all, err := s.ListSessions(ctx(t), store.SessionFilter{User: "nurse"})
	must(t, err)
	equal(t, "nurse's sessions", names(all, func(x store.Session) string { return x.ID }), []string{"s3", "s2", "s1"})

	// Activity only moves forward, and only for active sessions.
	must(t, s.TouchSessions(ctx(t), map[string]time.Time{"s2": at(10 * time.Minute), "s1": at(20 * time.Minute), "ghost": at(0)}))
	must(t, s.TouchSessions(ctx(t), map[string]time.Time{"s2": at(5 * time.Minute)}))
	got, _ = s.GetSession(ctx(t), "s2")
	equal(t, "touched activity", got.LastActivity, at(10*time.Minute))
	got, _ = s.GetSession(ctx(t), "s1")
	equal(t, "ended session not touched", got.LastActivity, at(0))

	// Due: idle (as stored) since before a time, or started before one.
	due, err := s.ListSessionsDue(ctx(t), at(3*time.Minute), at(0), at(0))
	must(t, err)
	equal(t, "sessions idle since before 3m", names(due, func(x store.Session) string { return x.ID }), []string{"s3"})
	due, err = s.ListSessionsDue(ctx(t), at(0), at(90*time.Second), at(0))
	must(t, err)
	equal(t, "sessions started before 1m30s", names(due, func(x store.Session) string { return x.ID }), []string{"s2"})
	due, err = s.ListSessionsDue(ctx(t), at(time.Hour), at(0), at(0))
	must(t, err)
	equal(t, "every active session idle since before 1h", len(due), 3)

	// Snapshot: each device's newest session.
	snap, err := s.Snapshot(ctx(t))
	must(t, err)
	equal(t, "snapshot sessions", names(snap.Sessions, func(x store.Session) string { return x.ID }), []string{"s2", "s3", "s4"})

	// End by user, by ID; ending again ends nothing.
	ended, err := s.EndSessions(ctx(t), store.SessionFilter{User: "nurse"}, at(time.Hour), store.EndUserDisabled)
	must(t, err)
	equal(t, "ended for nurse", len(ended), 2)
	for _, e := range ended {
		if e.Active() || e.EndReason != store.EndUserDisabled || !e.EndedAt.Equal(at(time.Hour)) {
			t.Fatalf("ended session %+v", e)
		}
	}
	ended, err = s.EndSessions(ctx(t), store.SessionFilter{User: "nurse"}, at(2*time.Hour), store.EndAdmin)
	must(t, err)
	equal(t, "ended twice", len(ended), 0)
	got, _ = s.GetSession(ctx(t), "s2")
	equal(t, "first end reason kept", got.EndReason, store.EndUserDisabled)
	_, err = s.EndSessions(ctx(t), store.SessionFilter{}, at(0), store.EndAdmin)
	if err == nil {
		t.Fatal("EndSessions without a selector ended sessions")
	}
	snap, err = s.Snapshot(ctx(t))
	must(t, err)
	for _, x := range snap.Sessions {
		if x.DeviceID == d1.ID && (x.ID != "s2" || x.Active()) {
			t.Fatalf("snapshot keeps the newest, ended session of a device: %+v", x)
		}
	}

	// Revoking a device ends its session, keeps it listed, and refuses
	// new sessions and key updates.
	ended, err = s.RevokeDevice(ctx(t), d3.ID, at(3*time.Hour))
	must(t, err)
	equal(t, "revocation ended", names(ended, func(x store.Session) string { return x.ID + "/" + x.EndReason }), []string{"s4/" + store.EndDeviceRevoked})
	rd, err := s.GetDevice(ctx(t), d3.ID)
	must(t, err)
	equal(t, "revoked at", rd.RevokedAt, at(3*time.Hour))
	_, err = s.StartSession(ctx(t), sess("s5", d3, at(4*time.Hour)))
	wantErr(t, "session for a revoked device", err, store.ErrNotFound)
	rd.Hostname = "other"
	wantErr(t, "update of a revoked device", s.UpdateDevice(ctx(t), rd), store.ErrNotFound)
	_, err = s.RevokeDevice(ctx(t), d3.ID, at(5*time.Hour))
	must(t, err)
	rd, _ = s.GetDevice(ctx(t), d3.ID)
	equal(t, "revoking again keeps the first time", rd.RevokedAt, at(3*time.Hour))
	_, err = s.RevokeDevice(ctx(t), "ghost", at(0))
	wantErr(t, "revoke unknown device", err, store.ErrNotFound)

	// Deleting a device ends its active session; history stays.
	_, err = s.StartSession(ctx(t), sess("s6", d2, at(6*time.Hour)))
	must(t, err)
	must(t, s.DeleteDevice(ctx(t), d2.ID))
	got, err = s.GetSession(ctx(t), "s6")
	must(t, err)
	if got.Active() {
		t.Fatal("a deleted device's session is still active")
	}
}

// testSessionsConcurrent: many sign-ins of one device at once leave
// exactly one active session.
func testSessionsConcurrent(t *testing.T, s store.Store) {
	d := device(t, s, "nurse", 1)
	errs := together(20, func(i int) error {
		_, err := s.StartSession(ctx(t), sess(fmt.Sprintf("c%02d", i), d, at(time.Duration(i)*time.Second)))
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("start session %d: %v", i, err)
		}
	}
	active, err := s.ListSessions(ctx(t), store.SessionFilter{DeviceID: d.ID, ActiveOnly: true})
	must(t, err)
	equal(t, "active sessions after concurrent sign-ins", len(active), 1)
	all, err := s.ListSessions(ctx(t), store.SessionFilter{DeviceID: d.ID})
	must(t, err)
	equal(t, "sessions recorded", len(all), 20)
}

// testSessionsUserDisabled: disabling a user ends every active session of
// theirs in the same call and returns them; a disabled user cannot start
// a session; enabling brings none back.
func testSessionsUserDisabled(t *testing.T, s store.Store) {
	d1 := device(t, s, "nurse", 1)
	d2 := device(t, s, "nurse", 2)
	d3 := device(t, s, "doctor", 3)
	for _, x := range []store.Session{sess("s1", d1, at(0)), sess("s2", d2, at(time.Minute)), sess("s3", d3, at(0))} {
		_, err := s.StartSession(ctx(t), x)
		must(t, err)
	}

	ended, err := s.SetUserDisabled(ctx(t), "nurse", true, at(time.Hour))
	must(t, err)
	equal(t, "disabling ended", names(ended, func(x store.Session) string { return x.ID + "/" + x.EndReason }),
		[]string{"s1/" + store.EndUserDisabled, "s2/" + store.EndUserDisabled})
	for _, x := range ended {
		equal(t, "ended at", x.EndedAt, at(time.Hour))
	}
	active, err := s.ListSessions(ctx(t), store.SessionFilter{User: "nurse", ActiveOnly: true})
	must(t, err)
	equal(t, "nurse's active sessions after disabling", len(active), 0)
	other, err := s.GetSession(ctx(t), "s3")
	must(t, err)
	if !other.Active() {
		t.Fatal("disabling nurse ended doctor's session")
	}

	_, err = s.StartSession(ctx(t), sess("s4", d1, at(2*time.Hour)))
	wantErr(t, "session for a disabled user", err, store.ErrDisabled)
	if _, err := s.GetSession(ctx(t), "s4"); err == nil {
		t.Fatal("a refused session was stored")
	}

	// Disabling again ends nothing; enabling brings nothing back.
	ended, err = s.SetUserDisabled(ctx(t), "nurse", true, at(3*time.Hour))
	must(t, err)
	equal(t, "disabling again ended", len(ended), 0)
	ended, err = s.SetUserDisabled(ctx(t), "nurse", false, at(4*time.Hour))
	must(t, err)
	equal(t, "enabling ended", len(ended), 0)
	active, err = s.ListSessions(ctx(t), store.SessionFilter{User: "nurse", ActiveOnly: true})
	must(t, err)
	equal(t, "nurse's active sessions after enabling", len(active), 0)
	_, err = s.StartSession(ctx(t), sess("s5", d1, at(5*time.Hour)))
	must(t, err)
}

// testSessionsDisableRace: sign-ins racing a disable never leave an
// active session behind: each one either ends with the disable or is
// refused.
func testSessionsDisableRace(t *testing.T, s store.Store) {
	var devs []store.Device
	for i := range 8 {
		devs = append(devs, device(t, s, "nurse", i+1))
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started = map[string]bool{}
		ended   []store.Session
	)
	for i, d := range devs {
		wg.Go(func() {
			id := fmt.Sprintf("r%02d", i)
			_, err := s.StartSession(ctx(t), sess(id, d, at(time.Duration(i)*time.Second)))
			switch {
			case err == nil:
				mu.Lock()
				started[id] = true
				mu.Unlock()
			case !errors.Is(err, store.ErrDisabled):
				t.Errorf("start session %s: %v", id, err)
			}
		})
	}
	wg.Go(func() {
		var err error
		ended, err = s.SetUserDisabled(ctx(t), "nurse", true, at(time.Minute))
		if err != nil {
			t.Errorf("disable: %v", err)
		}
	})
	wg.Wait()
	active, err := s.ListSessions(ctx(t), store.SessionFilter{User: "nurse", ActiveOnly: true})
	must(t, err)
	equal(t, "active sessions after a racing disable", len(active), 0)
	equal(t, "sessions the disable ended", len(ended), len(started))
	for _, x := range ended {
		if !started[x.ID] {
			t.Errorf("disable ended %s, which never started", x.ID)
		}
	}
}
