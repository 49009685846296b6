package sqlite

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// TestMigrateReviews: a database of schema 16 (main before access
// reviews) opens at schema 18 with no campaign, and takes one.
func TestMigrateReviews(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	openAtSchema(t, path, 16).Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil || v != 18 {
		t.Fatalf("schema version %d, %v: want 18", v, err)
	}
	if cs, err := s.ListReviews(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("ListReviews = %v, %v: want none", cs, err)
	}
	if err := s.CreateReview(ctx, store.ReviewCampaign{ID: "rv-1", Scope: "phi", Due: time.Now(), CreatedAt: time.Now(),
		Lines: []store.ReviewLine{{N: 1, Who: "user:nurse", App: "ehr"}}}); err != nil {
		t.Fatal(err)
	}
}
