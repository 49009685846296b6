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

// postureInterval is the controller's --posture-interval in this test:
// how often the nurse's client re-collects its posture.
const postureInterval = time.Second

// postureCutBound is how soon after the device's posture changes the PHI
// app must be refused: one report interval, plus the client's polling
// tick, the controller's recompute and the push to the gateway.
const postureCutBound = postureInterval + 2*time.Second

// posturePolicy: lab (phi) needs MFA and the disk-encrypted check;
// billing (internal) needs nothing.
const posturePolicy = `version: 1
posture_checks:
  disk-encrypted: {description: root filesystem encrypted, disk_encryption: true}
groups:
  clinicians: {members: [nurse]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  lab: {segment: clinical, addresses: [10.20.0.12], ports: [tcp/80], classification: phi}
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
rules:
  - {name: clinicians-lab, from: [group:clinicians], to: [app:lab], when: {mfa: true, posture: [disk-encrypted]}}
  - {name: clinicians-billing, from: [group:clinicians], to: [app:billing]}
`

// writePosture replaces the nurse's posture file atomically (the client
// must never read half a file).
func writePosture(t *testing.T, path string, diskEncrypted bool) {
	t.Helper()
	state := "no"
	if diskEncrypted {
		state = "yes"
	}
	body := fmt.Sprintf(`{"disk_encryption": {"state": %q, "detail": "set by the e2e test"}}`, state)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A posture change cuts a PHI app but not an internal one: with a
// compliant (self-reported) posture the nurse reaches lab (phi, needs
// disk-encrypted) and billing (internal); when her device reports the
// disk unencrypted, lab is refused within about one report interval, new
// connections and the open one alike, billing still works, and 'cordon
// status' says which check fails and what to fix. Compliant again, lab is
// back. Every report is audited as self-reported.
func TestPostureCutsPHINotInternal(t *testing.T) {
	t.Parallel()
	w := newWorld(t, withControllerArgs("--posture-interval", postureInterval.String()))
	lab, billing := w.svcs["lab"], w.svcs["billing"]

	t.Log("---- nurse reporting from a posture file ----")
	postureFile := filepath.Join(w.dir, "nurse-posture.json")
	writePosture(t, postureFile, true)
	w.nurse.proc.stop()
	// The policy first: a report is judged against the policy in force
	// when it arrives, and the client sends an unchanged one again only
	// every report interval.
	p := filepath.Join(w.dir, "posture.yaml")
	if err := os.WriteFile(p, []byte(posturePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	w.mustCtl("", "policy", "apply", p, "--reason", "e2e: posture")
	w.upWithPosture(w.nurse, postureFile)
	w.waitReach(w.nurse, lab, 20*time.Second)
	w.waitReach(w.nurse, billing, 10*time.Second)
	w.waitAudit("a self-reported posture report", func(e auditEvent) bool {
		return e.Type == "posture.report" && e.Outcome == "success" && e.Details["self_reported"] == "true" &&
			e.Details["disk_encryption"] == "yes" && strings.Contains(e.Details["passing"], "disk-encrypted")
	})

	t.Log("---- the disk is reported unencrypted ----")
	ec, err := openEcho(w.nurse.ns, labAddr)
	if err != nil {
		t.Fatalf("open a long-lived connection to lab: %v", err)
	}
	defer ec.Close()
	if err := ec.probe(2 * time.Second); err != nil {
		t.Fatalf("echo before the change: %v", err)
	}
	start := time.Now()
	cut := make(chan string, 1)
	go func() {
		how, at, err := watchCut(ec, start, 10*time.Second)
		if err != nil {
			cut <- err.Error()
			return
		}
		cut <- fmt.Sprintf("%v|%s", at, how)
	}()
	writePosture(t, postureFile, false)
	refused := waitFor(t, 10*time.Second, "new connections to lab to be refused", func() error {
		conn, err := w.nurse.ns.dialTimeout("tcp", labAddr, 300*time.Millisecond)
		if err != nil {
			return nil
		}
		conn.Close()
		return errors.New("lab still accepts connections")
	})
	t.Logf("posture change → new connections to lab (phi) refused after %v (report interval %v)", refused.Round(time.Millisecond), postureInterval)
	res := <-cut
	atS, how, ok := strings.Cut(res, "|")
	if !ok {
		t.Fatalf("open connection to lab: %s", res)
	}
	at, _ := time.ParseDuration(atS)
	t.Logf("posture change → open connection to lab cut after %v (%s)", at.Round(time.Millisecond), how)
	if refused > postureCutBound || at > postureCutBound {
		t.Errorf("lab refused after %v, open connection cut after %v; want both within %v", refused, at, postureCutBound)
	}
	w.waitReach(w.nurse, billing, 5*time.Second)
	w.unreachable(w.nurse, lab)

	var status string
	waitFor(t, 10*time.Second, "'cordon status' to say what to fix", func() error {
		out, e, rc := w.nurse.cordon("", "status")
		if rc != 0 {
			return fmt.Errorf("exit %d: %s", rc, e)
		}
		status = out
		if !strings.Contains(out, `"disk-encrypted" fails`) || !strings.Contains(out, "lab") || !strings.Contains(out, "encrypt the root filesystem") {
			return fmt.Errorf("status says:\n%s", out)
		}
		return nil
	})
	t.Logf("cordon status:\n%s", status)
	w.waitAudit("the non-compliant report, self-reported", func(e auditEvent) bool {
		return e.Type == "posture.report" && e.Details["self_reported"] == "true" && e.Details["disk_encryption"] == "no" &&
			!strings.Contains(e.Details["passing"], "disk-encrypted")
	})

	t.Log("---- compliant again ----")
	writePosture(t, postureFile, true)
	back := w.waitReach(w.nurse, lab, 10*time.Second)
	t.Logf("compliant again → lab reachable after %v", back.Round(time.Millisecond))
	w.waitReach(w.nurse, billing, 5*time.Second)
	w.checkAlive()
}

// upWithPosture is up (world_test.go) with the client reading its posture
// from file.
func (w *world) upWithPosture(c *client, file string) {
	t := w.t
	t.Helper()
	c.proc = w.start(c.ns, "cordon-"+c.user+"-posture", bin("cordon"), "up", "--state-dir", c.stateDir, "--mode", "tun", "--interface", c.iface,
		"--dns", "none", "--posture-file", file)
	waitFor(t, 20*time.Second, c.user+"'s tunnel to connect to the controller", func() error {
		if s := c.proc.exited(); s != "" {
			t.Fatalf("%s\n%s", s, c.proc.logs())
		}
		st, err := c.status()
		if err != nil {
			return err
		}
		if !st.ControlConnected {
			return errors.New("control_connected is false")
		}
		return nil
	})
}
