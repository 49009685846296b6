package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Fail static, fail closed: a gateway that restarts while the controller
// is away serves its last map (saved, integrity-checked) to the clinicians
// it admitted, and nobody else; past the grant lifetime, or a session's
// absolute limit, it admits nobody, whatever it hears.

// killGateway SIGKILLs the gateway and waits for it to be gone.
func (w *world) killGateway() {
	w.t.Helper()
	w.gateway.cmd.Process.Kill()
	<-w.gateway.done
}

// reachWithin polls (every 50 ms, 300 ms dials) until c gets s's answer and
// returns how long that took from since; it fails the test after timeout.
func (w *world) reachWithin(c *client, s *service, since time.Time, timeout time.Duration) time.Duration {
	w.t.Helper()
	for time.Since(since) < timeout {
		if body, err := c.getTimeout(s.addr, 300*time.Millisecond); err == nil && body == s.name {
			return time.Since(since)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("%s did not reach %s within %v", c.user, s.name, timeout)
	return 0
}

// accessEnd polls c's access to s (every 200 ms, 1 s dials) until it has
// failed for a whole streak (5 s without one success: a single failed
// request on a busy machine is not the end) or until deadline. It returns
// the last success before the streak and the streak's first failure;
// ended is false if access never stopped for a streak by deadline.
func (w *world) accessEnd(c *client, s *service, deadline time.Time) (lastOK, firstFail time.Time, ended bool) {
	const streak = 5 * time.Second
	for time.Now().Before(deadline) {
		now := time.Now()
		if body, err := c.getTimeout(s.addr, time.Second); err == nil && body == s.name {
			lastOK, firstFail = now, time.Time{}
		} else if firstFail.IsZero() {
			firstFail = now
		} else if now.Sub(firstFail) >= streak {
			return lastOK, firstFail, true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return lastOK, firstFail, false
}

// waitGatewayLog waits until the gateway's log says text.
func (w *world) waitGatewayLog(timeout time.Duration, what, text string) {
	w.t.Helper()
	waitFor(w.t, timeout, what, func() error {
		if !strings.Contains(w.gateway.logs(), text) {
			return fmt.Errorf("no %q in its log yet", text)
		}
		return nil
	})
}

// waitEndpointSaved waits until the gateway saved where its peers are (it
// looks every 5 s), so that a restart can handshake with them first.
func (w *world) waitEndpointSaved() {
	w.t.Helper()
	waitFor(w.t, 15*time.Second, "the gateway to save its peers' endpoints", func() error {
		b, err := os.ReadFile(filepath.Join(w.dir, "gateway", "last-map.json"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"endpoints"`) {
			return errors.New("no endpoints saved yet")
		}
		return nil
	})
}

func TestGatewayRestartWithoutController(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitEndpointSaved()
	w.controller.stop()

	const runs = 5
	var took []time.Duration
	for i := range runs {
		w.killGateway()
		start := time.Now()
		w.gateway = w.runGateway(fmt.Sprintf("gateway-restart-%d", i))
		d := w.reachWithin(w.nurse, ehr, start, 40*time.Second)
		took = append(took, d)
		if !strings.Contains(w.gateway.logs(), "serving the saved map") {
			t.Errorf("run %d: the gateway did not say it serves the saved map:\n%s", i, tail(w.gateway.logs(), 20))
		}
		// The clerk, never entitled, still reaches nothing.
		w.unreachable(w.clerk, ehr, w.svcs["billing"], w.svcs["lab"])
	}
	slices.Sort(took)
	t.Logf("controller down, gateway SIGKILLed and restarted: nurse back after %v (median %v, p99 %v over %d runs)",
		took, took[len(took)/2], took[len(took)-1], runs)
}

func TestGatewayGrantLifetime(t *testing.T) {
	t.Parallel()
	const lifetime = 30 * time.Second
	w := newWorld(t, withControllerArgs("--gateway-grant-lifetime", lifetime.String()))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitEndpointSaved()

	// The controller goes away; the gateway restarts without it. The
	// gateway last hears from it between the stop request and its exit
	// (it closes agent connections first).
	asked := time.Now()
	w.controller.stop()
	gone := time.Now()
	w.killGateway()
	w.gateway = w.runGateway("gateway-restarted")
	back := w.reachWithin(w.nurse, ehr, gone, lifetime-5*time.Second)
	t.Logf("nurse back %v after the controller went away (gateway restarted meanwhile)", back.Round(time.Millisecond))

	// Nothing else changes; access ends when the grant lifetime passes
	// (counted from the gateway's last word with the controller, renewed
	// every lifetime/10 while connected) and not long before.
	lastOK, ended, ok := w.accessEnd(w.nurse, ehr, gone.Add(lifetime+15*time.Second))
	if !ok {
		t.Fatalf("nurse still reaches ehr %v after the controller went away (grant lifetime %v)", time.Since(gone).Round(time.Millisecond), lifetime)
	}
	t.Logf("access ended %v after the controller went away (last success at %v; stopping it took %v; grant lifetime %v)",
		ended.Sub(gone).Round(time.Millisecond), lastOK.Sub(gone).Round(time.Millisecond), gone.Sub(asked).Round(time.Millisecond), lifetime)
	if early := lifetime - lifetime/10 - 2*time.Second; lastOK.Sub(asked) < early {
		t.Errorf("access ended %v after the controller was asked to stop (last success), before the grant lifetime %v could have passed", lastOK.Sub(asked), lifetime)
	}
	if ended.Sub(gone) > lifetime+3*time.Second {
		t.Errorf("access ended %v after the controller went away, later than the grant lifetime %v allows", ended.Sub(gone), lifetime)
	}
	w.waitGatewayLog(5*time.Second, "the gateway to log that its grants expired", "grants expired")
	// And it stays ended: a restart does not revive the expired map.
	w.killGateway()
	w.gateway = w.runGateway("gateway-after-expiry")
	w.waitGatewayLog(10*time.Second, "the restarted gateway to refuse the expired map", "grants expired")
	w.unreachable(w.nurse, ehr)
}

func TestGatewaySessionLimitWithoutController(t *testing.T) {
	t.Parallel()
	const absolute = 40 * time.Second
	w := newWorld(t, withControllerArgs("--session-absolute", absolute.String()))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	out, errOut, rc := w.nurse.cordon("", "status", "-o", "json")
	if rc != 0 {
		t.Fatalf("cordon status: %s", errOut)
	}
	var st struct {
		Session struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"session"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Session.ExpiresAt.IsZero() {
		t.Fatalf("cordon status -o json: no session expiry (%v)\n%s", err, out)
	}
	expires := st.Session.ExpiresAt

	// Controller gone, gateway restarted from its saved map: the session
	// still ends on time, at the gateway.
	w.controller.stop()
	w.killGateway()
	w.gateway = w.runGateway("gateway-restarted")
	w.reachWithin(w.nurse, ehr, time.Now(), time.Until(expires)-time.Second)
	lastOK, endedAt, ok := w.accessEnd(w.nurse, ehr, expires.Add(15*time.Second))
	if !ok {
		t.Fatalf("nurse still reaches ehr %v after her session's absolute limit, controller down", time.Since(expires).Round(time.Millisecond))
	}
	t.Logf("access ended %v after the session's absolute limit (last success %v before it; controller down)",
		endedAt.Sub(expires).Round(time.Millisecond), expires.Sub(lastOK).Round(time.Millisecond))
	if lastOK.Before(expires.Add(-3 * time.Second)) {
		t.Errorf("access ended at %v (last success), before the session's limit %v", lastOK, expires)
	}
	if endedAt.After(expires.Add(3 * time.Second)) {
		t.Errorf("access ended at %v, later than the session's limit %v allows", endedAt, expires)
	}
	if !strings.Contains(w.gateway.logs(), "absolute limit") {
		t.Errorf("the gateway did not log the session's end:\n%s", tail(w.gateway.logs(), 20))
	}
}

// TestDeletedGatewayForgetsItsMap: a gateway the admin deleted exits and
// removes its saved map, so a restart while the controller is away admits
// nobody.
func TestDeletedGatewayForgetsItsMap(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitEndpointSaved()
	gws := w.gateways()
	if len(gws) != 1 {
		t.Fatalf("gateways: %+v", gws)
	}
	w.mustCtl("", "gateway", "delete", gws[0].ID)
	select {
	case <-w.gateway.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the deleted gateway did not exit")
	}
	if _, err := os.Stat(filepath.Join(w.dir, "gateway", "last-map.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted gateway left its saved map: %v", err)
	}
	w.controller.stop()
	w.gateway = w.runGateway("gateway-after-delete")
	w.waitGatewayLog(10*time.Second, "the restarted gateway to start with no map", "no saved map")
	w.unreachable(w.nurse, ehr)
}
