package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Signing out (cordon logout) or ending the nurse's session (cordonctl
// session end) cuts her open connection and refuses new ones within 1 s;
// signing in again restores access. Revoking her device does the same, for good: the client is told
// and the device cannot sign in again.
func TestSessionEndAndDeviceRevoke(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)

	w.cutAndRestore(ehr, "cordon logout", func() {
		if out, errOut, rc := w.nurse.cordon("", "logout"); rc != 0 || !strings.Contains(out, "Signed out") {
			t.Fatalf("cordon logout: exit %d\n%s%s", rc, out, errOut)
		}
	}, func() {
		// Signing in again needs no controller, CA or user: the device
		// remembers them.
		code, err := w.nurse.nextCode()
		if err != nil {
			t.Fatal(err)
		}
		if out, errOut, rc := w.nurse.cordon(w.nurse.password+"\n", "login", "--password-stdin", "--totp", code); rc != 0 {
			t.Fatalf("plain 'cordon login' after logout: exit %d\n%s%s", rc, out, errOut)
		}
	}, time.Second)
	w.waitAudit("session.end by the user's own logout", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Actor == "user:nurse" && e.Details["reason"] == "logout"
	})
	w.cutAndRestore(ehr, "cordonctl session end --user nurse",
		func() { w.mustCtl("", "session", "end", "--user", "nurse", "--comment", "e2e: shift over") },
		func() { w.login(w.nurse) }, time.Second)
	w.waitAudit("session.end by the admin", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Details["user"] == "nurse" && e.Details["reason"] == "admin" && e.Details["comment"] == "e2e: shift over"
	})
	out := w.mustCtl("", "session", "list", "--user", "nurse", "--all")
	if !strings.Contains(out, "ended") || !strings.Contains(out, "(admin)") || !strings.Contains(out, "active") {
		t.Errorf("session list --all does not show the ended and the new session:\n%s", out)
	}

	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	dev := st.DeviceID
	w.cutAndRestore(ehr, "cordonctl device revoke", func() { w.mustCtl("", "device", "revoke", dev) }, nil, time.Second)
	// The controller closes the device's control channel: 'cordon up'
	// stops, saying why.
	waitFor(t, 10*time.Second, "the revoked device's 'cordon up' to stop", func() error {
		if w.nurse.proc.exited() == "" {
			return errors.New("still running")
		}
		return nil
	})
	if logs := w.nurse.proc.logs(); !strings.Contains(logs, "sign in again") && !strings.Contains(logs, "no longer enrolled") {
		t.Errorf("'cordon up' of the revoked device did not say why it stopped:\n%s", tail(logs, 20))
	}
	code, err := w.nurse.nextCode()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, rc := w.nurse.cordon(w.nurse.password+"\n", "login", "--controller", controllerURL, "--ca-cert", w.caFile(),
		"--user", "nurse", "--password-stdin", "--totp", code)
	if rc == 0 || !strings.Contains(errOut, "revoked") {
		t.Errorf("login of a revoked device: exit %d, want a refusal naming the revocation\n%s%s", rc, out, errOut)
	}
	w.waitAudit("admin.device.revoke", func(e auditEvent) bool { return e.Type == "admin.device.revoke" && e.Subject == dev })
	w.waitAudit("session.end for the revoked device", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Details["device"] == dev && e.Details["reason"] == "device-revoked"
	})
	w.nurse.proc = nil // stopped on purpose; checkAlive must not count it
}

// Automatic logoff: traffic keeps the session alive past the idle limit;
// without traffic the session ends at the limit, the open connection is
// cut, new ones are refused, 'cordon status' says so, and only a new
// sign-in restores access.
func TestIdleLogoff(t *testing.T) {
	t.Parallel()
	const idle = 4 * time.Second
	w := newWorld(t, withControllerArgs("--session-idle", idle.String()))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	ec, err := openEcho(w.cl1, ehrAddr)
	if err != nil {
		t.Fatalf("open a long-lived connection to ehr: %v", err)
	}
	defer ec.Close()

	// Active for longer than the limit: still signed in.
	var last time.Time
	for start := time.Now(); time.Since(start) < idle+2*time.Second; time.Sleep(500 * time.Millisecond) {
		if err := ec.probe(2 * time.Second); err != nil {
			t.Fatalf("echo while active, %v after the first probe: %v", time.Since(start).Round(time.Millisecond), err)
		}
		last = time.Now()
	}
	t.Logf("the session stayed up through %v of traffic (idle limit %v)", idle+2*time.Second, idle)

	// Silence: watch 'cordon status' (local, not traffic) for the end.
	var reason string
	d, err := poll(idle+10*time.Second, 100*time.Millisecond, func() error {
		st, err := w.nurse.status()
		if err != nil {
			return err
		}
		if st.Session == nil || st.Session.State != "ended" {
			return errors.New("session still active")
		}
		reason = st.Session.Reason + ": " + st.Session.Message
		return nil
	})
	if err != nil {
		t.Fatalf("session not ended %v after the last packet: %v", d, err)
	}
	after := time.Since(last)
	t.Logf("client told the session ended %v after the last packet (limit %v): %s", after.Round(time.Millisecond), idle, reason)
	// The gateway stamps packets with its coarse clock (1 s ticks), so a
	// session may end up to about a second before the limit, never later
	// than the limit plus a report interval and a check.
	if after < idle-1500*time.Millisecond {
		t.Errorf("session ended %v after the last packet, well before the %v idle limit", after.Round(time.Millisecond), idle)
	}
	if after > idle+3*time.Second {
		t.Errorf("session ended %v after the last packet, want within ~%v of the %v limit", after.Round(time.Millisecond), 3*time.Second, idle)
	}
	if !strings.HasPrefix(reason, "idle:") || !strings.Contains(reason, "cordon login") {
		t.Errorf("status reason %q: want idle, and how to sign in again", reason)
	}
	out, _, _ := w.nurse.cordon("", "status")
	if !strings.Contains(out, "automatic logoff") {
		t.Errorf("'cordon status' does not explain the logoff:\n%s", out)
	}
	if err := ec.probe(time.Second); err == nil {
		t.Error("the open connection still carries data after the idle logoff")
	}
	w.unreachable(w.nurse, ehr)
	w.waitAudit("session.end (idle) by the controller", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Actor == "controller" && e.Details["reason"] == "idle" && e.Details["user"] == "nurse"
	})

	start := time.Now()
	w.login(w.nurse)
	dd, err := poll(10*time.Second, 50*time.Millisecond, func() error {
		body, err := w.nurse.getTimeout(ehrAddr, 500*time.Millisecond)
		if err == nil && body != "ehr" {
			err = fmt.Errorf("answer %q", body)
		}
		return err
	})
	if err != nil {
		t.Fatalf("access not restored %v after signing in again: %v", dd, err)
	}
	t.Logf("access restored %v after 'cordon login' (login itself %v)", dd.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)-dd.Round(time.Millisecond))
}

// stepUpPolicy: ehr's admin port needs an MFA no older than STEPUP.
const stepUpPolicy = `version: 1
groups:
  clinicians: {members: [nurse, clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.20.0.10], ports: [tcp/80, tcp/8080], classification: internal}
rules:
  - {name: ehr, from: [group:clinicians], to: [app:ehr], ports: [tcp/80]}
  - {name: ehr-admin-step-up, from: [group:clinicians], to: [app:ehr], ports: [tcp/8080], when: {mfa_max_age: STEPUP}}
`

// MFA step-up: once the nurse's MFA is older than a rule allows, the
// gateway refuses that app, her client tells her to verify again, and a new
// sign-in (the tunnel staying up) admits her again.
func TestMFAStepUp(t *testing.T) {
	t.Parallel()
	const maxAge = 6 * time.Second
	w := newWorld(t)
	ehr, admin := w.svcs["ehr"], w.svcs["ehr-admin"]
	p := filepath.Join(w.dir, "stepup.yaml")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(stepUpPolicy, "STEPUP", maxAge.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	w.login(w.nurse) // MFA now
	signedIn := time.Now()
	w.mustCtl("", "policy", "apply", p, "--reason", "e2e: step-up")
	w.waitReach(w.nurse, admin, 5*time.Second)
	time.Sleep(time.Until(signedIn.Add(maxAge + time.Second)))

	w.unreachable(w.nurse, admin)
	w.waitReach(w.nurse, ehr, 5*time.Second) // no MFA age on this port
	var msg string
	d, err := poll(10*time.Second, 100*time.Millisecond, func() error {
		out, errOut, rc := w.nurse.cordon("", "status")
		if rc != 0 {
			return fmt.Errorf("cordon status: exit %d: %s", rc, errOut)
		}
		for l := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(l, "Verify:") && strings.Contains(l, "ehr") {
				msg = l
				return nil
			}
		}
		return errors.New("no step-up line in 'cordon status'")
	})
	if err != nil {
		t.Fatalf("client never asked to verify again (%v): %v", d, err)
	}
	t.Logf("'cordon status' %v after the refusal: %s", d.Round(time.Millisecond), msg)

	w.login(w.nurse)
	dd := w.waitReach(w.nurse, admin, 5*time.Second)
	t.Logf("admin port reachable %v after signing in again", dd.Round(time.Millisecond))
	// The gateway may take the new map a moment before the client does.
	var out string
	if _, err := poll(5*time.Second, 100*time.Millisecond, func() error {
		if out, _, _ = w.nurse.cordon("", "status"); strings.Contains(out, "Verify:") {
			return errors.New("still asks to verify")
		}
		return nil
	}); err != nil {
		t.Errorf("'cordon status' still asks to verify 5s after a fresh sign-in:\n%s", out)
	}
	w.checkAlive()
}

// idleClassPolicy: lab is PHI, billing internal; the PHI rule waives MFA
// and posture (this world reports no posture) so only the idle limits
// decide.
const idleClassPolicy = `version: 1
groups:
  clinicians: {members: [nurse]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  lab: {segment: clinical, addresses: [10.20.0.12], ports: [tcp/80], classification: phi}
  billing: {segment: clinical, addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
rules:
  - {name: clinicians-lab, from: [group:clinicians], to: [app:lab], waiver: "e2e world: no posture reports, testing idle limits only"}
  - {name: clinicians-billing, from: [group:clinicians], to: [app:billing]}
`

// Idle limits per data classification: with a PHI limit shorter than the
// session's, a quiet device loses the PHI app first (its route goes from
// the client's map; the session stays), keeps the internal one, and gets
// the PHI app back with its next activity.
func TestIdleLimitPerClassification(t *testing.T) {
	t.Parallel()
	const phiIdle = 4 * time.Second
	w := newWorld(t, withControllerArgs("--session-idle", "1m", "--session-idle-for", "phi="+phiIdle.String()))
	lab, billing := w.svcs["lab"], w.svcs["billing"]
	p := filepath.Join(w.dir, "idle-class.yaml")
	if err := os.WriteFile(p, []byte(idleClassPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	w.mustCtl("", "policy", "apply", p, "--reason", "e2e: idle limits per classification")
	w.waitReach(w.nurse, lab, 10*time.Second)
	w.waitReach(w.nurse, billing, 10*time.Second)
	last := time.Now()

	// Quiet: watch the client's map (local, not traffic).
	routed := func(app string) (bool, string, error) {
		st, err := w.nurse.status()
		if err != nil {
			return false, "", err
		}
		state := ""
		if st.Session != nil {
			state = st.Session.State
		}
		for _, g := range st.Gateways {
			for _, a := range g.Apps {
				if a.Name == app {
					return true, state, nil
				}
			}
		}
		return false, state, nil
	}
	d, err := poll(phiIdle+10*time.Second, 100*time.Millisecond, func() error {
		if on, _, err := routed("lab"); err != nil || on {
			return fmt.Errorf("lab still routed (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the PHI app stayed in the map %v after the last packet: %v", d, err)
	}
	after := time.Since(last)
	t.Logf("PHI app left the quiet device's map %v after its last packet (PHI idle limit %v)", after.Round(time.Millisecond), phiIdle)
	if after < phiIdle-1500*time.Millisecond {
		t.Errorf("the PHI app went %v after the last packet, well before its %v limit", after.Round(time.Millisecond), phiIdle)
	}
	if on, state, err := routed("billing"); err != nil || !on || state != "active" {
		t.Fatalf("after the PHI limit: billing routed %v, session %q (%v); want the internal app and an active session", on, state, err)
	}
	w.unreachable(w.nurse, lab)

	// Activity (on the internal app) brings the PHI app back.
	w.waitReach(w.nurse, billing, 5*time.Second)
	dd := w.waitReach(w.nurse, lab, 10*time.Second)
	t.Logf("PHI app reachable again %v after new activity", dd.Round(time.Millisecond))
	w.checkAlive()
}
