package state_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// A quarantine commits with its admin.device.quarantine record and names
// the device in the published change; the session stays; neither a new
// sign-in of the device, nor re-enrolling its key, nor a controller
// restart ends it; only a release does, with its record. Refusals (twice,
// unknown, revoked, release of a free device) store and record nothing.
func TestQuarantineDevice(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cordon.db")
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var changes []store.Change
	open := func() (store.Store, *state.State) {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, state.New(state.Config{Store: st, Now: func() time.Time { return clock },
			Publish: func(c store.Change) { changes = append(changes, c) }})
	}
	st, s := open()
	must(t, st.CreateUser(ctx, store.User{Name: "nurse"}))
	priv, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	in := state.SignIn{User: "nurse", Hostname: "ws1", Key: priv.Public(), Method: "password+totp", MFA: true, Source: "192.0.2.1"}
	issue := func(id string) (string, error) { return "cert-" + id, nil }
	first, err := s.SignIn(ctx, in, issue)
	if err != nil {
		t.Fatal(err)
	}
	id := first.Device.ID
	records := func(types ...audit.Type) []store.AuditEvent {
		evs, err := st.ListAudit(ctx, store.AuditFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(evs, func(e store.AuditEvent) bool { return !slices.Contains(types, e.Type) })
	}
	quarantined := func(st store.Store) store.Quarantine {
		t.Helper()
		d, err := st.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.Quarantine
	}

	helpdesk := state.Origin{Actor: "admin:hd"}
	changes = nil
	d, err := s.QuarantineDevice(ctx, helpdesk, id, "EDR alert, ticket 4411")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Quarantine{At: clock, By: "admin:hd", Reason: "EDR alert, ticket 4411"}
	if d.Quarantine != want || quarantined(st) != want {
		t.Fatalf("quarantine returned %+v, stored %+v, want %+v", d.Quarantine, quarantined(st), want)
	}
	if len(changes) != 1 || !slices.Equal(changes[0].Devices, []string{id}) {
		t.Fatalf("published %+v, want one change naming %s", changes, id)
	}
	evs := records(audit.AdminDeviceQuarantine)
	if len(evs) != 1 || evs[0].Subject != id || evs[0].Actor != "admin:hd" || evs[0].Details["reason"] != want.Reason || evs[0].Details["user"] != "nurse" {
		t.Fatalf("quarantine records %+v, want one naming the device, admin, user and reason", evs)
	}
	active, err := st.ListSessions(ctx, store.SessionFilter{DeviceID: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || !active[0].EndedAt.IsZero() {
		t.Fatalf("sessions after the quarantine %+v, want the one still active (the user must see why)", active)
	}

	// Refusals change and record nothing.
	var refused *state.Refused
	if _, err := s.QuarantineDevice(ctx, admin, id, "again"); !errors.As(err, &refused) || !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second quarantine = %v, want a refused conflict", err)
	}
	if _, err := s.QuarantineDevice(ctx, admin, "dev-ghost", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("quarantine of an unknown device = %v, want ErrNotFound", err)
	}
	if quarantined(st) != want || len(records(audit.AdminDeviceQuarantine)) != 1 {
		t.Fatal("a refused quarantine changed the stored one or recorded something")
	}

	// Signing in again, and re-enrolling the same key, keep it.
	in.DeviceID = id
	if _, err := s.SignIn(ctx, in, issue); err != nil {
		t.Fatalf("sign-in of the quarantined device: %v (it may sign in: it stays quarantined)", err)
	}
	in.DeviceID = ""
	if _, err := s.SignIn(ctx, in, issue); !errors.Is(err, state.ErrConflict) || !strings.Contains(err.Error(), "quarantined by your IT security team: EDR alert") {
		t.Fatalf("re-enrolling the quarantined device's key = %v, want a refusal naming the quarantine", err)
	}
	// Nor does moving the key onto another device of the user.
	priv2, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	other := in
	other.Key, other.Hostname = priv2.Public(), "ws2"
	second, err := s.SignIn(ctx, other, issue)
	if err != nil {
		t.Fatal(err)
	}
	other.DeviceID, other.Key = second.Device.ID, in.Key
	if _, err := s.SignIn(ctx, other, issue); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("signing in device %s with the quarantined device's key = %v, want a refusal", second.Device.ID, err)
	}
	if ds, _ := st.ListDevicesByKey(ctx, in.Key); len(ds) != 1 || ds[0].ID != id {
		t.Fatalf("devices holding the quarantined key: %+v, want only %s", ds, id)
	}
	if quarantined(st) != want {
		t.Fatalf("after signing in again the device's quarantine is %+v, want %+v", quarantined(st), want)
	}

	// A controller restart keeps it.
	must(t, st.Close())
	st, s = open()
	if quarantined(st) != want {
		t.Fatalf("after a restart the device's quarantine is %+v, want %+v", quarantined(st), want)
	}

	clock = clock.Add(time.Hour)
	changes = nil
	d, err = s.ReleaseDevice(ctx, admin, id, "reimaged")
	if err != nil {
		t.Fatal(err)
	}
	if d.Quarantine.Active() || quarantined(st).Active() {
		t.Fatalf("released device still quarantined: returned %+v, stored %+v", d.Quarantine, quarantined(st))
	}
	if len(changes) != 1 || !slices.Equal(changes[0].Devices, []string{id}) {
		t.Fatalf("release published %+v, want one change naming %s", changes, id)
	}
	evs = records(audit.AdminDeviceRelease)
	if len(evs) != 1 || evs[0].Actor != "admin:alice" || evs[0].Details["comment"] != "reimaged" ||
		evs[0].Details["quarantined_by"] != "admin:hd" || evs[0].Details["reason"] != want.Reason ||
		evs[0].Details["quarantined_at"] != want.At.Format(time.RFC3339) {
		t.Fatalf("release records %+v, want one with the comment and the quarantine it ended", evs)
	}
	if _, err := s.ReleaseDevice(ctx, admin, id, ""); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("release of a free device = %v, want a refused conflict", err)
	}

	if _, err := s.RevokeDevice(ctx, admin, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.QuarantineDevice(ctx, admin, id, "late"); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("quarantine of a revoked device = %v, want a refused conflict", err)
	}
	if n := len(records(audit.AdminDeviceQuarantine, audit.AdminDeviceRelease)); n != 2 {
		t.Fatalf("%d quarantine and release records, want 2 (refusals record nothing)", n)
	}
}
