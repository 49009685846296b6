package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// A request ID applies once: the same call again is refused as already
// applied and changes nothing; the audit trail finds the call's records by
// its ID; a refused call does not use its ID up.
func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	ctx := adminapi.WithRequestID(context.Background(), "req-1")
	if _, err := e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "icu", CIDRs: []string{"10.1.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "icu", CIDRs: []string{"10.1.0.0/24"}})
	var applied *adminapi.AppliedError
	if !errors.As(err, &applied) {
		t.Fatalf("second call with the same ID = %v, want AppliedError", err)
	}
	evs, err := e.admin.ListAudit(context.Background(), adminapi.AuditQuery{Request: "req-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != "admin.segment.create" || evs[0].RequestID != "req-1" {
		t.Fatalf("audit of req-1 = %+v, want one admin.segment.create", evs)
	}

	// Refused (the group does not exist): the ID stays free.
	ctx2 := adminapi.WithRequestID(context.Background(), "req-2")
	_, err = e.admin.AddMember(ctx2, "nobody", "nurse")
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, `group "nobody" not found`)
	if _, err := e.admin.CreateGroup(ctx2, &adminapi.CreateGroupRequest{Name: "icu-staff"}); err != nil {
		t.Fatalf("a refused call used its request ID up: %v", err)
	}

	// A malformed ID is refused before anything runs.
	bad := adminapi.WithRequestID(context.Background(), "spaces are not allowed")
	_, err = e.admin.CreateGroup(bad, &adminapi.CreateGroupRequest{Name: "x"})
	wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, adminapi.IdempotencyHeader)
	if _, err := e.admin.GetGroup(context.Background(), "x"); err == nil {
		t.Fatal("group x exists after a call with a malformed request ID")
	}
}
