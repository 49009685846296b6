package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrateLegacyAdminTokens: a database from before roles (schema 4)
// keeps its admin tokens, as owner tokens that never expire.
func TestMigrateLegacyAdminTokens(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db, err := sql.Open("sqlite", dsn(path, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		t.Fatal(err)
	}
	for v := range 4 {
		if _, err := db.ExecContext(ctx, migrations[v]); err != nil {
			t.Fatalf("migration %d: %v", v+1, err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO schema_version VALUES (?, 0)`, v+1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO admin_tokens (name, hash) VALUES ('owner', x'0102030405')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok, acct, err := s.AdminTokenByHash(ctx, []byte{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Name != "owner" || tok.Role != "owner" || tok.Admin != "" || acct.Name != "" || !tok.ExpiresAt.IsZero() ||
		!strings.HasPrefix(tok.ID, "adt-") || tok.CreatedBy != "migration" || !tok.Usable(time.Now()) {
		t.Fatalf("migrated token %+v", tok)
	}
	if d := time.Since(tok.CreatedAt); d < 0 || d > time.Minute {
		t.Errorf("migrated token created at %v", tok.CreatedAt)
	}
}
