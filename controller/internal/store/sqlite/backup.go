package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Copy writes a consistent copy of the database at src to the new file
// dst, while the controller (another process) goes on writing to src, and
// returns the copy's schema version.
//
// The copy is made by VACUUM INTO on a connection of its own (not
// query_only: SQLite counts VACUUM INTO as a write, though it only reads
// the source): one read transaction, which in WAL mode neither blocks the writer nor waits for
// it, so the copy holds exactly the transactions committed before it
// started (audit records, their tree hashes and checkpoints together).
// The source is never migrated nor written; dst is created 0600 and must
// not exist.
func Copy(ctx context.Context, src, dst string) (schemaVersion int, err error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return 0, fmt.Errorf("copy database %q: %w", src, err)
	}
	// A missing source would be created empty by SQLite.
	if _, err := os.Stat(abs); err != nil {
		return 0, fmt.Errorf("copy database: %w (is --data-dir the controller's?)", err)
	}
	if err := createPrivate(dst); err != nil {
		return 0, fmt.Errorf("copy database: %w", err)
	}
	// VACUUM INTO wants dst absent or empty: createPrivate made it empty
	// with the right mode, so no byte of the copy is ever readable by
	// others.
	db, err := sql.Open("sqlite", dsn(abs, []string{fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())}, ""))
	if err != nil {
		return 0, fmt.Errorf("copy database %q: %w", abs, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return 0, fmt.Errorf("copy database %q: %w", abs, err)
	}
	return readSchemaVersion(ctx, dst)
}

// readSchemaVersion reads the schema version of the database file at path
// without migrating it.
func readSchemaVersion(ctx context.Context, path string) (int, error) {
	db, err := sql.Open("sqlite", dsn(path, []string{"query_only(1)"}, ""))
	if err != nil {
		return 0, fmt.Errorf("read schema version of %q: %w", path, err)
	}
	defer db.Close()
	var v int
	err = db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read schema version of %q: %w", path, err)
	}
	if v == 0 {
		return 0, errors.New("read schema version: the database has none: it is not a Cordon controller's")
	}
	return v, nil
}

// SchemaVersion is the schema version this build migrates databases to.
func SchemaVersion() int { return len(migrations) }
