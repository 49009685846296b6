package sqlite

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// TestMigrateAuditKeys: schema 12 fills the search keys of the records an
// older controller stored, so a search finds them.
func TestMigrateAuditKeys(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 11)
	for i, r := range []struct{ typ, actor, subject, details string }{
		{"flow.allow", "gateway:gw-1", "ehr", `{"user":"nurse","device":"dev-1"}`},
		{"session.start", "user:doc", "sess-1", `{"device":"dev-2"}`},
		{"admin.app.create", "admin:alice", "pacs", ``},
	} {
		var details any
		if r.details != "" {
			details = r.details
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO audit_events (time, type, actor, outcome, subject, details, request_id)
			VALUES (?, ?, ?, 'success', ?, ?, '')`, 1_000_000*i, r.typ, r.actor, r.subject, details); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	// Schema 11's data step logs the records; schema 12's indexes them.
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		q    store.AuditQuery
		want []int64
	}{
		{store.AuditQuery{User: "nurse"}, []int64{1}},
		{store.AuditQuery{User: "doc"}, []int64{2}},
		{store.AuditQuery{Device: "dev-2"}, []int64{2}},
		{store.AuditQuery{App: "ehr"}, []int64{1}},
		{store.AuditQuery{App: "pacs"}, []int64{3}},
		{store.AuditQuery{}, []int64{3, 2, 1}},
	} {
		p, err := s.SearchAudit(ctx, c.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, e := range p.Events {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("search %+v: %v, want %v", c.q, got, c.want)
		}
	}
}
