package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// Diff names a device whose posture passes other checks, and not one whose
// new report passes the same ones (stored without a change: the drift
// check must not take it for a defect).
func TestDiffPosture(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := store.PostureRecord{DeviceID: "d1", Digest: "aaa", ReceivedAt: t0, ChangedAt: t0, Passing: []string{"disk_encrypted"}}
	snap := func(r store.PostureRecord) *store.Snapshot {
		return &store.Snapshot{Posture: map[string]store.PostureRecord{r.DeviceID: r}}
	}
	sameChecks := rec
	sameChecks.Digest, sameChecks.ChangedAt, sameChecks.ReceivedAt = "bbb", t0.Add(time.Minute), t0.Add(time.Minute)
	sameChecks.Report.Kernel = "6.12.1"
	if c := store.Diff(snap(rec), snap(sameChecks)); !c.IsZero() {
		t.Errorf("a report passing the same checks is a change: %+v", c)
	}
	otherChecks := sameChecks
	otherChecks.Passing = nil
	if c := store.Diff(snap(rec), snap(otherChecks)); !slices.Equal(c.Devices, []string{"d1"}) {
		t.Errorf("a report passing other checks: change %+v, want device d1", c)
	}
	if c := store.Diff(snap(rec), &store.Snapshot{}); !slices.Equal(c.Devices, []string{"d1"}) {
		t.Errorf("a report gone: change %+v, want device d1", c)
	}
}
