package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// revokeBound is how fast a policy change must take effect on the data
// path: open flows cut, new flows refused, restored access working.
const revokeBound = 2 * time.Second

// revokeCycles is how many times the test takes the nurse out and puts her
// back: the map pushes race each other, so one cycle can pass by luck.
const revokeCycles = 3

// Taking the nurse out of the group cuts her open connection to ehr and
// refuses new ones within 2 s; putting her back restores access within 2 s.
func TestRemovingFromGroupCutsAccess(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	for i := 1; i <= revokeCycles; i++ {
		t.Logf("---- cycle %d of %d ----", i, revokeCycles)
		w.revokeAndRestore(ehr, []string{"group", "remove-member", groupName, "nurse"}, []string{"group", "add-member", groupName, "nurse"}, revokeBound)
		if t.Failed() {
			break
		}
	}
	w.waitAudit("flow.cut of the nurse's ehr connection", func(e auditEvent) bool {
		return e.Type == "flow.cut" && e.Details["dst"] == ehrAddr && e.Details["user"] == "nurse" && e.Subject == "ehr"
	})
}

// Disabling the nurse (cordonctl user disable) ends her sessions: her open
// connection is cut and new ones refused within 1 s at every gateway.
// Enabling her does not bring the session back; her next sign-in does.
func TestDisablingUserCutsAccess(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.cutAndRestore(ehr, "cordonctl user disable nurse", func() { w.mustCtl("", "user", "disable", "nurse") }, func() {
		w.mustCtl("", "user", "enable", "nurse")
		w.unreachable(w.nurse, ehr) // enabled, but signed out
		w.login(w.nurse)
	}, time.Second)
	w.waitAudit("admin.user.disable of the nurse", func(e auditEvent) bool {
		return e.Type == "admin.user.disable" && e.Subject == "nurse"
	})
}

// revokeAndRestore opens a long-lived connection to ehr, runs the revoking
// cordonctl command and then the restoring one, and checks that each takes
// effect within bound.
func (w *world) revokeAndRestore(ehr *service, revoke, restore []string, bound time.Duration) {
	w.cutAndRestore(ehr, fmt.Sprintf("cordonctl %v", revoke), func() { w.mustCtl("", revoke...) },
		func() { w.mustCtl("", restore...) }, bound)
}

// cutAndRestore is revokeAndRestore with any revoking and restoring step;
// restore nil skips the restoring half.
func (w *world) cutAndRestore(ehr *service, what string, revoke, restore func(), bound time.Duration) {
	t := w.t
	t.Helper()
	ec, err := openEcho(w.cl1, ehrAddr)
	if err != nil {
		t.Fatalf("open a long-lived connection to ehr: %v", err)
	}
	defer ec.Close()
	for range 3 {
		if err := ec.probe(2 * time.Second); err != nil {
			t.Fatalf("echo over the open connection before the change: %v", err)
		}
	}
	for len(ehr.echoEnded) > 0 { // ends of earlier cycles' connections
		<-ehr.echoEnded
	}

	start := time.Now()
	newConns := make(chan blockResult, 1)
	go func() { newConns <- newConnBlocked(w.nurse, start, 3*bound) }()
	revoke()
	t.Logf("%s returned after %v", what, time.Since(start).Round(time.Millisecond))

	how, cutAt, err := watchCut(ec, start, 3*bound)
	if err != nil {
		t.Errorf("open connection: %v", err)
	} else {
		t.Logf("open connection cut %v after the removal (%s)", cutAt.Round(time.Millisecond), how)
		if cutAt > bound {
			t.Errorf("open connection cut after %v, want within %v", cutAt.Round(time.Millisecond), bound)
		}
	}
	nc := <-newConns
	if nc.err != nil {
		t.Errorf("new connections: %v", nc.err)
	} else {
		t.Logf("new connections refused %v after the removal (%v)", nc.at.Round(time.Millisecond), nc.how)
		if nc.at > bound {
			t.Errorf("new connections still opened %v after the removal, want refused within %v", nc.at.Round(time.Millisecond), bound)
		}
	}
	// The app's end must go too (the gateway resets both ends), or the
	// app keeps a half-open connection to a revoked user.
	select {
	case err := <-ehr.echoEnded:
		t.Logf("ehr's end of the cut connection ended: %v", err)
	case <-time.After(revokeBound):
		t.Errorf("ehr's end of the cut connection is still open %v after the client's end was cut: the gateway did not reset the app side", revokeBound)
	}
	w.unreachable(w.nurse, ehr)
	if restore == nil {
		return
	}
	w.restored(restore, bound)
}

// restored runs restore and checks that the nurse reaches ehr again
// within bound.
func (w *world) restored(restore func(), bound time.Duration) {
	t := w.t
	t.Helper()
	restore()
	d, err := poll(20*time.Second, 50*time.Millisecond, func() error {
		body, err := w.nurse.getTimeout(ehrAddr, 500*time.Millisecond)
		if err == nil && body != "ehr" {
			err = fmt.Errorf("answer %q", body)
		}
		return err
	})
	if err != nil {
		t.Fatalf("access not restored %v after adding the nurse back: %v", d.Round(time.Millisecond), err)
	}
	t.Logf("access restored %v after adding the nurse back", d.Round(time.Millisecond))
	if d > bound {
		t.Errorf("access restored after %v, want within %v", d.Round(time.Millisecond), bound)
	}
}

// watchCut probes an open echo connection until it is reset, or stays
// silent for a second, and says when it stopped carrying data (measured
// from start).
func watchCut(ec *echoConn, start time.Time, limit time.Duration) (string, time.Duration, error) {
	const window = 200 * time.Millisecond
	var silentSince time.Time // when the first unanswered probe was sent
	for time.Since(start) < limit {
		sent := time.Now()
		err := ec.probe(window)
		switch {
		case err == nil:
			silentSince = time.Time{}
		case errors.Is(err, errNoEcho):
			if silentSince.IsZero() {
				silentSince = sent
			}
			if time.Since(silentSince) >= time.Second {
				return "silently stopped carrying data (no reset seen)", silentSince.Sub(start), nil
			}
		default:
			at := time.Since(start)
			if !silentSince.IsZero() {
				at = silentSince.Sub(start)
			}
			return "reset: " + err.Error(), at, nil
		}
	}
	return "", 0, fmt.Errorf("still carrying data %v after the removal", limit)
}

type blockResult struct {
	at  time.Duration
	how error
	err error
}

// newConnBlocked opens fresh connections to ehr every 50ms until one fails,
// and says when (measured from start).
func newConnBlocked(c *client, start time.Time, limit time.Duration) blockResult {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < limit {
		conn, err := c.ns.dialTimeout("tcp", ehrAddr, 300*time.Millisecond)
		if err != nil {
			return blockResult{at: time.Since(start), how: err}
		}
		conn.Close()
		<-tick.C
	}
	return blockResult{err: fmt.Errorf("still opening %v after the removal", limit)}
}
