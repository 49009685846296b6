package netmap

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/posture"
)

// postureSnapshot is policySnapshot with the disk check defined (testPolicy
// writes it as a description only) and the given disk encryption states
// reported by the nurse's (dev-n) and the clerk's (dev-c) devices; an
// empty state: no report.
func postureSnapshot(t *testing.T, defined bool, nurse, clerk posture.State) *store.Snapshot {
	snap := policySnapshot(t)
	if defined {
		src := strings.Replace(testPolicy, "disk: disk encrypted", "disk: {description: disk encrypted, disk_encryption: true}", 1)
		snap.Policy.Source = []byte(src)
	}
	snap.Posture = map[string]store.PostureRecord{}
	now := time.Now()
	for id, st := range map[string]posture.State{"dev-n": nurse, "dev-c": clerk} {
		if st == "" {
			continue
		}
		snap.Posture[id] = store.PostureRecord{DeviceID: id, ReceivedAt: now, Report: posture.Report{
			CollectedAt: now, OS: "debian", OSVersion: "12", DiskEncryption: posture.Check{State: st},
			Firewall: posture.Check{State: posture.No}, ScreenLock: posture.Check{State: posture.Unknown},
		}}
	}
	return snap
}

// labSession is the session the lab gateway evaluates dev-n's flows
// against.
func labPosture(t *testing.T, ix *Index) []string {
	t.Helper()
	gl, _ := ix.Gateway("gw-lab")
	m := ix.GatewayMap(gl)
	for _, p := range m.Peers {
		if p.DeviceID == "dev-n" {
			if p.Session == nil {
				t.Fatal("dev-n has no session at the lab gateway")
			}
			return p.Session.Posture
		}
	}
	t.Fatalf("dev-n is not a peer of the lab gateway: %+v", m.Peers)
	return nil
}

// A passing report puts the check in the session the gateway evaluates; a
// failing one leaves it out and tells the device what to fix for which
// app; a device with no rule requiring the check is told nothing.
func TestPostureFillsSessionAndFindings(t *testing.T) {
	ix := NewIndex(postureSnapshot(t, true, posture.Yes, posture.No))
	if got := labPosture(t, ix); !slices.Equal(got, []string{"disk"}) {
		t.Fatalf("compliant nurse: session posture %v, want [disk]", got)
	}
	if f := ix.postureFindings("dev-n"); len(f) != 0 {
		t.Fatalf("compliant nurse: findings %+v", f)
	}
	if f := ix.postureFindings("dev-c"); len(f) != 0 {
		t.Fatalf("clerk fails disk but no rule of hers requires it: findings %+v", f)
	}

	ix = NewIndex(postureSnapshot(t, true, posture.No, posture.No))
	if got := labPosture(t, ix); len(got) != 0 {
		t.Fatalf("non-compliant nurse: session posture %v, want none", got)
	}
	f := ix.postureFindings("dev-n")
	if len(f) != 1 || f[0].Check != "disk" || !slices.Equal(f[0].Apps, []string{"lis"}) || !strings.Contains(f[0].Fix, "encrypt the root filesystem") {
		t.Fatalf("non-compliant nurse: findings %+v", f)
	}
}

// Posture is evaluated when maps are computed, so a new policy re-decides
// a stored report: the same report passes a defined check and fails the
// description-only form. No report fails closed.
func TestPostureFollowsPolicyNotReportTime(t *testing.T) {
	if got := labPosture(t, NewIndex(postureSnapshot(t, true, posture.Yes, ""))); !slices.Equal(got, []string{"disk"}) {
		t.Fatalf("defined check: %v", got)
	}
	ix := NewIndex(postureSnapshot(t, false, posture.Yes, ""))
	if got := labPosture(t, ix); len(got) != 0 {
		t.Fatalf("description-only check passed: %v", got)
	}
	if f := ix.postureFindings("dev-n"); len(f) != 1 || !strings.Contains(f[0].Fix, "administrator") {
		t.Fatalf("description-only findings %+v", f)
	}
	ix = NewIndex(postureSnapshot(t, true, "", ""))
	if got := labPosture(t, ix); len(got) != 0 {
		t.Fatalf("no report passed: %v", got)
	}
	if f := ix.postureFindings("dev-n"); len(f) != 1 || !strings.Contains(f[0].Fix, "no posture report") {
		t.Fatalf("no-report findings %+v", f)
	}
}
