// Package sqlite is the embedded SQLite implementation of [store.Store], the
// controller's default: one file, no server, no cgo (modernc.org/sqlite).
//
// # Write concurrency
//
// The store holds two connection pools on the same file:
//
//   - the writer: exactly one connection (SetMaxOpenConns(1)), every
//     transaction opened with BEGIN IMMEDIATE (_txlock=immediate). Writers
//     of this process queue in database/sql for that one connection, in Go,
//     honouring their contexts; they never race each other for SQLite's
//     write lock, so SQLITE_BUSY cannot reach a caller from inside the
//     process. BEGIN IMMEDIATE takes the write lock before the first read, so
//     a read-then-write transaction (allocate an address, consume a token)
//     cannot be invalidated half way. busy_timeout only covers another
//     process (a backup or the sqlite3 shell) holding the lock briefly.
//   - the readers: a few connections with query_only on, deferred read
//     transactions. In WAL mode readers never block the writer nor wait for
//     it, and a read transaction sees one snapshot from its first read to its
//     end, which is what [Store.Snapshot] and the multi-statement getters rely
//     on.
//
// Correctness does not depend on the single writer: RedeemEnrollToken
// consumes the token with a conditional UPDATE (used_at IS NULL AND
// expires_at > now) and checks rows affected, and the overlay address table's
// primary key backstops the allocator, so the same statements stay correct
// under a multi-writer engine.
//
// # Durability
//
// journal_mode=WAL with synchronous=FULL: a committed token redemption or
// audit event survives a power cut, at the cost of one fsync per commit.
//
// # Values
//
// Times are stored as UTC Unix microseconds (the precision PostgreSQL keeps),
// so they come back truncated to the microsecond, in UTC. A zero CreatedAt
// (or audit Time) is set to the current time; an empty Gateway or Device ID
// or EnrollToken ID is replaced by a random one.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// FileName is the database's name in the controller's data dir.
const FileName = "cordon.db"

// busyTimeout bounds how long a statement waits for a lock held by another
// process before SQLITE_BUSY. Inside this process writers queue in Go.
const busyTimeout = 5 * time.Second

// readConns is the size of the reader pool.
const readConns = 4

// Store is a [store.Store] backed by one SQLite file.
type Store struct {
	w *sql.DB // the single writer connection
	r *sql.DB // query-only readers

	// maxOffset is the largest allocatable offset into store.OverlayPrefix
	// (tests shrink it to reach exhaustion).
	maxOffset uint32

	// tx is set on the Store an [Store.Update] function is given: every
	// method then runs inside that one transaction.
	tx *sql.Tx

	// stmts are statements prepared once on the writer pool, shared by
	// the Stores Update makes.
	stmts *preparedStmts

	// idx is the audit key indexer's state (auditindex.go).
	idx *keyIndexer

	closeOnce sync.Once
	closeErr  error
}

// preparedStmts are the writer's long-lived prepared statements, made by
// Open: the writer pool has one connection, so one prepared later from
// inside a transaction would wait for it for ever.
type preparedStmts struct {
	auditInsert *sql.Stmt // a full chunk of audit rows (insertAudit)
}

var _ store.Store = (*Store)(nil)

// Open opens (creating, mode 0600, if needed) the database at path and
// brings its schema up to date. The directory must exist.
func Open(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	if err := createPrivate(abs); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	pragmas := []string{
		fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
		"foreign_keys(1)",
	}
	w, err := sql.Open("sqlite", dsn(abs, append(pragmas, "journal_mode(WAL)", "synchronous(FULL)"), "immediate"))
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	s := &Store{w: w, maxOffset: maxOffset(), stmts: &preparedStmts{}, idx: newKeyIndexer()}
	// The writer goes first: it switches the file to WAL and migrates before
	// any reader connects.
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}

	if err := s.idx.load(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}

	if s.stmts.auditInsert, err = w.PrepareContext(ctx, auditInsertSQL(auditInsertRows)); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}

	r, err := sql.Open("sqlite", dsn(abs, append(pragmas, "query_only(1)"), ""))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open store %q: %w", abs, err)
	}
	s.r = r
	return s, nil
}

// Close closes both pools. It is idempotent; calls after the first return
// the first call's result.
func (s *Store) Close() error {
	if s.tx != nil {
		return errors.New("close store: called on the transaction an Update function was given")
	}
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.stmts.auditInsert.Close(), s.r.Close(), s.w.Close())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close store: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// createPrivate creates the database file with mode 0600 unless it exists.
// SQLite gives the -wal and -shm files the main file's mode. An existing
// file's mode is left as the operator set it.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	// The umask can only clear bits, but say exactly what we mean.
	err = errors.Join(f.Chmod(0o600), f.Close())
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	return nil
}

// dsn builds a file: URI so that any byte in the path ('?', '#', '%')
// survives; modernc passes URIs to sqlite3_open_v2 whole.
func dsn(path string, pragmas []string, txlock string) string {
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	if txlock != "" {
		q.Set("_txlock", txlock)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), OmitHost: true, RawQuery: q.Encode()}
	return u.String()
}

// inTx marks the context an [Store.Update] function runs under, so that a
// write through the outer Store (not the transaction) fails at once instead
// of waiting forever for the one writer connection the transaction holds.
type inTx struct{ w *sql.DB }

// ErrOutsideTx is returned by a write made through the Store an Update
// function was called on, instead of through the transaction it was given.
var ErrOutsideTx = errors.New("store: write through the outer store inside an Update: use the transaction it was given")

// Update implements [store.Store]: fn's calls on tx run in one write
// transaction that commits when fn returns nil and rolls back otherwise.
// Each method fn calls is atomic on its own too (a savepoint), so fn may
// handle one's error and go on. Called on a transaction, Update joins it.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx store.Store) error) error {
	if s.tx != nil {
		return fn(ctx, s)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		return fn(context.WithValue(ctx, inTx{}, inTx{s.w}), &Store{w: s.w, r: s.r, maxOffset: s.maxOffset, tx: tx, stmts: s.stmts, idx: s.idx})
	})
}

// write runs fn in one write transaction (BEGIN IMMEDIATE on the single
// writer connection) and commits if fn returns nil. Inside an Update it
// runs fn in a savepoint of the Update's transaction instead.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.tx != nil {
		return savepoint(ctx, s.tx, fn)
	}
	if m, ok := ctx.Value(inTx{}).(inTx); ok && m.w == s.w {
		return ErrOutsideTx
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// savepoint runs fn so that a failure undoes only fn's own statements.
func savepoint(ctx context.Context, tx *sql.Tx, fn func(tx *sql.Tx) error) error {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT op`); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := fn(tx); err != nil {
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO op`); rerr != nil {
			return errors.Join(err, fmt.Errorf("roll back to savepoint: %w", rerr))
		}
		tx.ExecContext(ctx, `RELEASE op`)
		return err
	}
	if _, err := tx.ExecContext(ctx, `RELEASE op`); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// read runs fn in one read transaction: every statement sees the same
// snapshot. Inside an Update it reads the Update's transaction, so fn sees
// the writes made before it.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.tx != nil {
		return fn(s.tx)
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// reader is what single-statement reads run on: the Update's transaction,
// or the reader pool.
func (s *Store) reader() queryer {
	if s.tx != nil {
		return s.tx
	}
	return s.r
}

// sqliteCode returns the extended result code of an SQLite error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isUnique reports a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// isForeignKey reports a foreign key violation.
func isForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// insertErr maps a constraint violation of an INSERT to a sentinel. The
// callers check existence first for a precise message; this is the backstop.
func insertErr(err error) error {
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: %w", store.ErrAlreadyExists, err)
	case isForeignKey(err):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

// deleteErr maps a constraint violation of a DELETE to a sentinel.
func deleteErr(err error) error {
	if isForeignKey(err) {
		return fmt.Errorf("%w: %w", store.ErrInUse, err)
	}
	return err
}

// exists reports whether query (a SELECT 1 ... LIMIT 1) returns a row.
func exists(ctx context.Context, tx *sql.Tx, query string, args ...any) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// count returns the single integer a SELECT COUNT(*) returns.
func count(ctx context.Context, tx *sql.Tx, query string, args ...any) (int64, error) {
	var n int64
	err := tx.QueryRowContext(ctx, query, args...).Scan(&n)
	return n, err
}

// mustAffect returns store.ErrNotFound unless res changed a row.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// Times are UTC Unix microseconds.

func toMicros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// createdAt returns t, or now if t is zero.
func createdAt(t time.Time) int64 {
	if t.IsZero() {
		t = time.Now()
	}
	return toMicros(t)
}

// newID returns a random 128-bit ID in hex, for records created without one.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics on platform failure itself)
	return hex.EncodeToString(b[:])
}
