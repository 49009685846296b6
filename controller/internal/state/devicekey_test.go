package state_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// A WireGuard key enrolls one device: another user's sign-in with it is
// refused without naming the device, a second enrollment by the same user
// is told which device holds it, and neither stores or records anything.
// The device's own sign-ins with its key go on working.
func TestDeviceKeyEnrollsOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, u := range []string{"nurse", "clerk"} {
		must(t, f.st.CreateUser(ctx, store.User{Name: u}))
	}
	priv, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id string) (string, error) { return "cert-" + id, nil }
	in := state.SignIn{User: "nurse", Hostname: "ws1", Key: priv.Public(), Method: "password+totp", MFA: true, Source: "192.0.2.1"}
	first, err := f.s.SignIn(ctx, in, issue)
	if err != nil {
		t.Fatal(err)
	}
	records := len(f.audit(t))

	other := in
	other.User = "clerk"
	_, err = f.s.SignIn(ctx, other, issue)
	if !errors.Is(err, store.ErrAlreadyExists) || strings.Contains(err.Error(), first.Device.ID) {
		t.Errorf("another user's sign-in with the nurse's key: %v (want ErrAlreadyExists, not naming %s)", err, first.Device.ID)
	}
	_, err = f.s.SignIn(ctx, in, issue) // the nurse again, as a new device
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), first.Device.ID) {
		t.Errorf("a second enrollment of the nurse's key: %v (want ErrAlreadyExists naming %s)", err, first.Device.ID)
	}
	devs, err := f.st.ListDevicesByKey(ctx, priv.Public())
	if err != nil || len(devs) != 1 {
		t.Fatalf("devices with the key: %v (%v), want only the first", devs, err)
	}
	if n := len(f.audit(t)); n != records {
		t.Errorf("refused sign-ins wrote %d audit records", n-records)
	}

	again := in
	again.DeviceID = first.Device.ID
	if _, err := f.s.SignIn(ctx, again, issue); err != nil {
		t.Errorf("the device's own sign-in with its key: %v", err)
	}
}
