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
	db := openAtSchema(t, path, 4)
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

// TestMigrateAdminTokenAccount: schema 9 attributes existing tokens to
// the account they act for: a sign-in token to its owner, a standalone one
// to the existing account named by created_by; others have none.
func TestMigrateAdminTokenAccount(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 8)
	if _, err := db.ExecContext(ctx, `
INSERT INTO admins (name, role, password_hash, totp_secret, disabled, created_at) VALUES ('alice', 'owner', '', '', 0, 1);
INSERT INTO admin_api_tokens (id, name, admin, role, scopes, hash, created_by, created_at, expires_at, last_used_at, revoked_at) VALUES
	('adt-1', 'alice', 'alice', 'owner', '[]', x'01', 'login', 1, 0, 0, 0),
	('adt-2', 'ci', NULL, 'owner', '[]', x'02', 'admin:alice', 1, 0, 0, 0),
	('adt-3', 'gone', NULL, 'owner', '[]', x'03', 'admin:bob', 1, 0, 0, 0),
	('adt-4', 'boot', NULL, 'owner', '[]', x'04', 'controller:bootstrap', 1, 0, 0, 0);`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for hash, want := range map[byte]string{1: "alice", 2: "alice", 3: "", 4: ""} {
		tok, acct, err := s.AdminTokenByHash(ctx, []byte{hash})
		if err != nil {
			t.Fatal(err)
		}
		if tok.Account != want || acct.Name != want {
			t.Errorf("token %s: account %q (loaded %q), want %q", tok.ID, tok.Account, acct.Name, want)
		}
	}
}

// openAtSchema creates a database at path migrated only to schema version
// n, as an older controller left it.
func openAtSchema(t *testing.T, path string, n int) *sql.DB {
	t.Helper()
	ctx := t.Context()
	db, err := sql.Open("sqlite", dsn(path, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		t.Fatal(err)
	}
	for v := range n {
		if _, err := db.ExecContext(ctx, migrations[v]); err != nil {
			t.Fatalf("migration %d: %v", v+1, err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO schema_version VALUES (?, 0)`, v+1); err != nil {
			t.Fatal(err)
		}
	}
	return db
}
