package storetest

// Cases for device posture reports.

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/posture"
)

func postureRecord(device string, received time.Time, fw posture.State) store.PostureRecord {
	return store.PostureRecord{
		DeviceID: device,
		Report: posture.Report{
			CollectedAt: received.Add(-time.Second), OS: "debian", OSVersion: "12", OSName: "Debian GNU/Linux 12 (bookworm)",
			Kernel: "6.1.0-13-amd64", ClientVersion: "0.1.0",
			DiskEncryption: posture.Check{State: posture.Yes, Detail: "root filesystem on dm-crypt (root_crypt)"},
			Firewall:       posture.Check{State: fw},
			ScreenLock:     posture.Check{State: posture.Unknown, Detail: "not detectable"},
		},
		Digest:     "digest-" + string(fw),
		ReceivedAt: received,
		ChangedAt:  received,
		Passing:    []string{"disk-encrypted"},
	}
}

// PutPosture keeps one (the latest) report per device, round-trips every
// field, refuses an unknown device, shows in the snapshot, and goes with
// its device.
func testPosture(t *testing.T, s store.Store) {
	c := ctx(t)
	_, err := s.GetPosture(c, "d1")
	wantErr(t, "GetPosture before any report", err, store.ErrNotFound)
	wantErr(t, "PutPosture of an unknown device", s.PutPosture(c, postureRecord("nope", at(0), posture.Yes)), store.ErrNotFound)

	must(t, s.CreateUser(c, user("nurse")))
	for _, id := range []string{"d1", "d2"} {
		_, err := s.CreateDevice(c, store.Device{ID: id, User: "nurse", PublicKey: key(t, len(id)+int(id[1]))})
		must(t, err)
	}
	first := postureRecord("d1", at(time.Minute), posture.Yes)
	first.AuditedAt = at(time.Minute)
	must(t, s.PutPosture(c, first))
	got, err := s.GetPosture(c, "d1")
	must(t, err)
	equal(t, "GetPosture", got, first)

	second := postureRecord("d1", at(2*time.Minute), posture.No)
	second.Passing = nil // none pass: stored and returned as empty
	must(t, s.PutPosture(c, second))
	got, err = s.GetPosture(c, "d1")
	must(t, err)
	equal(t, "GetPosture after a second report", got, second)
	if !got.AuditedAt.IsZero() {
		t.Errorf("AuditedAt = %v, want zero (the second record has none)", got.AuditedAt)
	}
	other := postureRecord("d2", at(3*time.Minute), posture.Unknown)
	must(t, s.PutPosture(c, other))

	snap, err := s.Snapshot(c)
	must(t, err)
	if len(snap.Posture) != 2 {
		t.Fatalf("snapshot has %d posture reports, want 2", len(snap.Posture))
	}
	equal(t, "snapshot posture d1", snap.Posture["d1"], second)
	equal(t, "snapshot posture d2", snap.Posture["d2"], other)

	must(t, s.DeleteDevice(c, "d1"))
	_, err = s.GetPosture(c, "d1")
	wantErr(t, "GetPosture of a deleted device", err, store.ErrNotFound)
	must(t, s.DeleteUser(c, "nurse"))
	_, err = s.GetPosture(c, "d2")
	wantErr(t, "GetPosture after its user was deleted", err, store.ErrNotFound)
}
