package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"

	_ "modernc.org/sqlite"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "cordon.db"))
	})
}

// TestFileMode: the database holds password hashes and TOTP seeds, so it
// and its WAL files are private to the controller's user.
func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cordon.db")
	s := open(t, path)
	if err := s.CreateUser(t.Context(), store.User{Name: "nurse", PasswordHash: "x", TOTPSecret: "y"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cordon.db", "cordon.db-wal", "cordon.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, m)
		}
	}
}

// TestReopen: data survives a close and reopen, and opening an up-to-date
// database applies no migration again.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	s := open(t, path)
	if err := s.CreateSegment(ctx, store.Segment{Name: "clinical"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{Name: "nurse"}); err != nil {
		t.Fatal(err)
	}
	d, err := s.CreateDevice(ctx, store.Device{ID: "d1", User: "nurse"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, store.AuditEvent{Type: "login"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		s = open(t, path)
		if _, err := s.GetSegment(ctx, "clinical"); err != nil {
			t.Fatalf("after reopen: %v", err)
		}
		got, err := s.GetDevice(ctx, "d1")
		if err != nil {
			t.Fatalf("after reopen: %v", err)
		}
		if got.OverlayAddr != d.OverlayAddr {
			t.Errorf("device address %v after reopen, was %v", got.OverlayAddr, d.OverlayAddr)
		}
		ev, err := s.ListAudit(ctx, store.AuditFilter{})
		if err != nil || len(ev) != 1 {
			t.Fatalf("audit after reopen: %v %v", ev, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, version int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != version {
		t.Errorf("schema_version has %d rows for version %d: a migration ran twice", rows, version)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// TestNewerSchema: a database from a newer controller is refused, not
// misread.
func TestNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cordon.db")
	s := open(t, path)
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_version (version, applied_at) VALUES (1000, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

// TestOddPath: the path is a file name, not a URI: '?' and '#' are kept.
func TestOddPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a?b#c%20 d.db")
	open(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "a?b#c%20 d.db") {
			t.Errorf("stray file %q", e.Name())
		}
	}
}

func TestOpenMissingDir(t *testing.T) {
	_, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "no", "such", "cordon.db"))
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}
