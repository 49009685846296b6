package state_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

func enrollGateway(t *testing.T, st store.Store, segment, id string) {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	must(t, st.CreateEnrollToken(ctx, store.EnrollToken{ID: "tok-" + id, Hash: []byte("h-" + id), Segment: segment,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
	if _, err := st.RedeemEnrollToken(ctx, []byte("h-"+id), now, store.Gateway{ID: id, Name: id, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
}

// A drain is stored with its record and names the gateway in the change;
// draining the segment's last live gateway that is not draining is refused
// unless forced (and the forced one says so); a dead spare does not count;
// undrain clears it; repeating either changes nothing.
func TestDrainGateway(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.s.CreateSegment(ctx, admin, seg("icu")); err != nil {
		t.Fatal(err)
	}
	enrollGateway(t, f.st, "icu", "gw-a")
	enrollGateway(t, f.st, "icu", "gw-b")
	up := map[string]bool{"gw-a": true, "gw-b": true}
	live := func(id string) bool { return up[id] }
	drained := func(id string) bool {
		g, err := f.st.GetGateway(ctx, id)
		must(t, err)
		return !g.DrainedAt.IsZero()
	}
	f.changes = nil
	must(t, f.s.DrainGateway(ctx, admin, "gw-a", false, live))
	if !drained("gw-a") || drained("gw-b") {
		t.Fatal("gw-a not drained, or gw-b drained too")
	}
	if len(f.changes) != 1 || !slices.Equal(f.changes[0].Gateways, []string{"gw-a"}) {
		t.Fatalf("published %+v, want one change naming gw-a", f.changes)
	}
	must(t, f.s.DrainGateway(ctx, admin, "gw-a", false, live)) // again: nothing
	var refused *state.Refused
	err := f.s.DrainGateway(ctx, admin, "gw-b", false, live)
	if !errors.As(err, &refused) || !errors.Is(err, state.ErrConflict) {
		t.Fatalf("draining the last live gateway = %v, want a refused conflict", err)
	}
	if drained("gw-b") {
		t.Fatal("a refused drain was stored")
	}
	// A spare that is not live does not count either.
	must(t, f.s.UndrainGateway(ctx, admin, "gw-a"))
	up["gw-a"] = false
	if err := f.s.DrainGateway(ctx, admin, "gw-b", false, live); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("draining gw-b with gw-a dead = %v, want a refused conflict", err)
	}
	must(t, f.s.DrainGateway(ctx, admin, "gw-b", true, live))
	if !drained("gw-b") || drained("gw-a") {
		t.Fatal("forced drain of gw-b not stored, or gw-a still drained")
	}
	must(t, f.s.UndrainGateway(ctx, admin, "gw-a")) // not drained: nothing
	if err := f.s.DrainGateway(ctx, admin, "nope", false, live); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("drain of an unknown gateway = %v, want ErrNotFound", err)
	}

	var got []string
	for _, ev := range f.audit(t) {
		if ev.Type == audit.AdminGatewayDrain || ev.Type == audit.AdminGatewayUndrain {
			got = append(got, string(ev.Type)+" "+ev.Subject+" forced="+ev.Details["forced"]+" segment="+ev.Details["segment"])
		}
	}
	want := []string{
		"admin.gateway.drain gw-a forced= segment=icu",
		"admin.gateway.undrain gw-a forced= segment=icu",
		"admin.gateway.drain gw-b forced=true segment=icu",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("drain records %q, want %q", got, want)
	}
}
