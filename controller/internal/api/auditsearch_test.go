package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// TestAuditSearchBadInput: every bad parameter is a 400 that names it;
// nothing is searched.
func TestAuditSearchBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, tc := range []struct {
		path string
		msg  string
	}{
		{"/v1/audit/search?since=yesterday", `"since"`},
		{"/v1/audit/search?until=2026-13-01T00:00:00Z", `"until"`},
		{"/v1/audit/search?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", "must be before"},
		{"/v1/audit/search?limit=0", `"limit"`},
		{"/v1/audit/search?limit=1001", `"limit"`},
		{"/v1/audit/search?cursor=%00%01", "invalid search cursor"},
		{"/v1/audit/search?user=" + strings.Repeat("u", 201), `"user"`},
	} {
		var out adminapi.AuditSearchPage
		err := e.admin.Do(ctx, http.MethodGet, tc.path, nil, &out)
		wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, tc.msg)
	}
	// Archive requests are checked by the state owner, and refused with
	// what to do.
	for _, body := range []adminapi.ArchiveRequestBody{
		{ToSeq: 1, Reason: "r", BundleSHA256: "00"},
		{ToSeq: 1, BundleSHA256: strings.Repeat("0", 64)},
		{ToSeq: 99, Reason: "r", BundleSHA256: strings.Repeat("0", 64)},
	} {
		_, err := e.admin.RequestArchive(ctx, body)
		wantCode(t, err, http.StatusConflict, adminapi.CodeConflict)
	}
	// A good search works through the client.
	if err := e.Record(ctx, audit.FlowDeny, "gateway:gw-1", "deny", "ehr", map[string]string{"user": "nurse", "proto": "tcp", "src": "100.64.0.7:4000", "dst": "10.20.0.5:443", "gateway": "gw-1"}); err != nil {
		t.Fatal(err)
	}
	p, err := e.admin.SearchAudit(ctx, adminapi.AuditSearch{User: "nurse", Since: e.Now().Add(-time.Minute), Limit: 5})
	if err != nil || len(p.Events) != 1 || p.Events[0].Type != audit.FlowDeny || p.NextCursor != "" {
		t.Fatalf("search: %+v %v", p, err)
	}
}
