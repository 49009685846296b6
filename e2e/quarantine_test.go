package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quarantineReason is what the admin tells the nurse.
const quarantineReason = "EDR malware alert, ticket 4411"

// Quarantining the nurse's device (cordonctl device quarantine) cuts her
// open connection to ehr and refuses new ones within 1 s, while her
// 'cordon up' keeps its control channel: 'cordon status' and its log say
// why, and her posture reports still arrive. Signing in again changes
// nothing; releasing the device brings access back within 1 s.
func TestQuarantine(t *testing.T) {
	t.Parallel()
	w := newWorld(t, withControllerArgs("--posture-interval", postureInterval.String()))
	ehr := w.svcs["ehr"]
	postureFile := filepath.Join(w.dir, "nurse-posture.json")
	writePosture(t, postureFile, true)
	w.nurse.proc.stop()
	w.upWithPosture(w.nurse, postureFile)
	w.waitReach(w.nurse, ehr, 20*time.Second)
	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	dev := st.DeviceID
	w.waitAudit("the nurse's first posture report", func(e auditEvent) bool {
		return e.Type == "posture.report" && e.Subject == dev && e.Details["disk_encryption"] == "yes"
	})

	w.cutAndRestore(ehr, "cordonctl device quarantine", func() {
		w.mustCtl("", "device", "quarantine", dev, "--reason", quarantineReason)
	}, nil, time.Second)

	t.Log("---- quarantined: the control channel stays, the user is told why ----")
	if s := w.nurse.proc.exited(); s != "" {
		t.Fatalf("the quarantined device's 'cordon up' stopped (it must keep its control channel): %s\n%s", s, tail(w.nurse.proc.logs(), 20))
	}
	const told = "quarantined by your IT security team: " + quarantineReason
	waitFor(t, 5*time.Second, "'cordon status' to say the device is quarantined", func() error {
		out, errOut, _ := w.nurse.cordon("", "status")
		// 'cordon status' capitalizes the message.
		if !strings.Contains(strings.ToLower(out), strings.ToLower(told)) || !strings.Contains(out, "contact your IT service desk") {
			return fmt.Errorf("'cordon status' does not say why:\n%s%s", out, errOut)
		}
		st, err := w.nurse.status()
		if err != nil {
			return err
		}
		if !st.ControlConnected {
			return errors.New("control channel down")
		}
		return nil
	})
	if logs := w.nurse.proc.logs(); !strings.Contains(logs, told) {
		t.Errorf("the log of 'cordon up' does not say why:\n%s", tail(logs, 20))
	}
	writePosture(t, postureFile, false)
	w.waitAudit("a posture report of the quarantined device", func(e auditEvent) bool {
		return e.Type == "posture.report" && e.Subject == dev && e.Details["disk_encryption"] == "no"
	})
	if out := w.mustCtl("", "device", "show", dev); !strings.Contains(out, quarantineReason) {
		t.Errorf("cordonctl device show does not show the quarantine:\n%s", out)
	}

	t.Log("---- signing in again does not end it ----")
	w.login(w.nurse)
	w.unreachable(w.nurse, ehr)

	t.Log("---- released ----")
	w.restored(func() { w.mustCtl("", "device", "release", dev, "--comment", "e2e: reimaged") }, time.Second)
	w.waitAudit("admin.device.quarantine", func(e auditEvent) bool {
		return e.Type == "admin.device.quarantine" && e.Subject == dev && e.Details["reason"] == quarantineReason
	})
	w.waitAudit("admin.device.release", func(e auditEvent) bool {
		return e.Type == "admin.device.release" && e.Subject == dev && e.Details["comment"] == "e2e: reimaged"
	})
}
