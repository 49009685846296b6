package storetest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// testUpdateAtomic: what fn does through tx commits with fn's nil, and
// nothing of it (audit included) when fn fails.
func testUpdateAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	seg := store.Segment{Name: "icu", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}
	boom := errors.New("boom")
	err := s.Update(ctx, func(ctx context.Context, tx store.Store) error {
		if err := tx.CreateSegment(ctx, seg); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, event("admin.segment.create", 1)); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if _, err := tx.GetSegment(ctx, "icu"); err != nil {
			t.Errorf("GetSegment inside the Update: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	if _, err := s.GetSegment(ctx, "icu"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("segment of a failed Update: GetSegment = %v, want ErrNotFound", err)
	}
	if evs, _ := s.ListAudit(ctx, store.AuditFilter{}); len(evs) != 0 {
		t.Fatalf("audit of a failed Update: %d events, want 0", len(evs))
	}

	err = s.Update(ctx, func(ctx context.Context, tx store.Store) error {
		// A failing method inside fn undoes only itself.
		if err := tx.CreateApp(ctx, store.App{Name: "emr", Segment: "missing"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("CreateApp in an unknown segment = %v, want ErrNotFound", err)
		}
		if err := tx.CreateSegment(ctx, seg); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, event("admin.segment.create", 2))
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if _, err := s.GetSegment(ctx, "icu"); err != nil {
		t.Fatalf("segment of a committed Update: %v", err)
	}
	if evs, _ := s.ListAudit(ctx, store.AuditFilter{}); len(evs) != 1 {
		t.Fatalf("audit of a committed Update: %d events, want 1", len(evs))
	}
	// Writing through the outer store from inside fn fails instead of
	// waiting for the writer the transaction holds.
	err = s.Update(ctx, func(ctx context.Context, tx store.Store) error {
		return s.AppendAudit(ctx, event("x.y", 3))
	})
	if err == nil {
		t.Fatal("a write through the outer store inside Update succeeded; want an error")
	}
}

// testClaimRequest: an ID is claimed once; the claim rolls back with its
// transaction; the audit filter finds a request's events.
func testClaimRequest(t *testing.T, s store.Store) {
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.ClaimRequest(ctx, "r1", at); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := s.ClaimRequest(ctx, "r1", at); !errors.Is(err, store.ErrRequestSeen) {
		t.Fatalf("second claim = %v, want ErrRequestSeen", err)
	}
	s.Update(ctx, func(ctx context.Context, tx store.Store) error {
		if err := tx.ClaimRequest(ctx, "r2", at); err != nil {
			t.Errorf("claim r2: %v", err)
		}
		return errors.New("roll back")
	})
	if err := s.ClaimRequest(ctx, "r2", at); err != nil {
		t.Fatalf("claim of a rolled-back request: %v, want it free", err)
	}
	// IDs older than the retention are forgotten.
	if err := s.ClaimRequest(ctx, "r3", at.Add(store.RequestRetention+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimRequest(ctx, "r1", at.Add(store.RequestRetention+time.Hour)); err != nil {
		t.Fatalf("claim of an expired ID: %v, want it free", err)
	}

	ev := event("admin.group.add_member", 1)
	ev.RequestID = "r3"
	if err := s.AppendAudit(ctx, event("admin.group.add_member", 2), ev); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{RequestID: "r3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].RequestID != "r3" {
		t.Fatalf("ListAudit(RequestID r3) = %+v, want the one event of r3", evs)
	}
}

// testDNSNameUnique: two apps cannot share a DNS name, whoever checks.
func testDNSNameUnique(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.CreateSegment(ctx, store.Segment{Name: "icu", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}))
	a := store.App{Name: "emr", Segment: "icu", DNSName: "emr.hospital.internal", Addr: netip.MustParsePrefix("10.1.0.5/32")}
	if err := s.CreateApp(ctx, a); err != nil {
		t.Fatal(err)
	}
	a.Name = "emr2"
	if err := s.CreateApp(ctx, a); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second app with the same DNS name = %v, want ErrAlreadyExists", err)
	}
}
