package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// This file: the audit trail, request IDs and the snapshot.

// migrationRequests (10): request IDs, so a retried call learns whether its
// first attempt committed; every audit record names the request that made
// it; app DNS names are unique in the database, not only in the API.
const migrationRequests = `
CREATE TABLE requests (
	id         TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX requests_created ON requests(created_at);
ALTER TABLE audit_events ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_request ON audit_events(request_id, seq) WHERE request_id <> '';
CREATE UNIQUE INDEX apps_dns_name ON apps(dns_name) WHERE dns_name <> '';
`

// ClaimRequest implements [store.Store]. It also forgets IDs older than
// store.RequestRetention, so the table stays small.
func (s *Store) ClaimRequest(ctx context.Context, id string, at time.Time) error {
	if id == "" {
		return errors.New("claim request: empty ID")
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM requests WHERE created_at < ?`, toMicros(at.Add(-store.RequestRetention))); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO requests (id, created_at) VALUES (?, ?)`, id, toMicros(at)); err != nil {
			if isUnique(err) {
				return store.ErrRequestSeen
			}
			return err
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrRequestSeen) {
		return fmt.Errorf("claim request %q: %w", id, err)
	}
	return err
}

// defaultAuditLimit is what AuditFilter.Limit 0 means.
const defaultAuditLimit = 100

// AppendAudit implements [store.Store]: the events get the next seqs and
// their leaves of the audit log (auditlog.go), in one transaction. A zero
// Time becomes now; a given Seq is ignored. The caller's slice is not
// modified.
func (s *Store) AppendAudit(ctx context.Context, events ...store.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	now := time.Now()
	var size int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		n, err := auditLogSize(ctx, tx)
		if err != nil {
			return err
		}
		tree, err := openTree(ctx, tx, n)
		if err != nil {
			return err
		}
		rows := make([]auditRow, len(events))
		var line []byte
		var stored []tlog.Hash
		for i, e := range events {
			e = cleanEvent(e)
			if e.Time.IsZero() {
				e.Time = now
			}
			e.Time = fromMicros(toMicros(e.Time))
			e.Seq = n + 1 + int64(i)
			line = e.Record().AppendCanonical(line[:0])
			stored = tree.Append(tlog.RecordHash(line), stored[:0])
			r := &rows[i]
			r.ev = e
			r.keys = audit.KeysOf(e.Type, e.Actor, e.Subject, e.Details)
			r.hashes = make([]byte, 0, len(stored)*tlog.HashSize)
			for _, h := range stored {
				r.hashes = append(r.hashes, h[:]...)
			}
			if len(e.Details) > 0 {
				// The canonical form (valid JSON; cleanEvent made the
				// strings valid UTF-8), not json.Marshal: a tenth of
				// an append's CPU went to its reflection.
				r.details = sql.NullString{String: string(auditlog.AppendDetails(nil, e.Details)), Valid: true}
			}
		}
		size = n + int64(len(events))
		return s.insertAudit(ctx, tx, rows)
	})
	if err != nil {
		return fmt.Errorf("append %d audit events: %w", len(events), err)
	}
	s.idx.appended(size)
	return nil
}

// auditRow is one audit_events row to insert.
type auditRow struct {
	ev      store.AuditEvent
	keys    audit.Keys
	details sql.NullString
	hashes  []byte
}

// auditInsertRows is how many rows one INSERT statement carries: a
// statement per row costs more than the row (binding, the driver's
// per-statement work), and 9 parameters a row stay far below SQLite's
// limit of 32766 (12 a row now: the search keys).
const auditInsertRows = 100

func (s *Store) insertAudit(ctx context.Context, tx *sql.Tx, rows []auditRow) error {
	var args []any
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), auditInsertRows)]
		rows = rows[len(chunk):]
		var stmt *sql.Stmt
		if len(chunk) == auditInsertRows {
			// Full chunks reuse one statement prepared on the writer
			// connection: parsing 900 parameters costs more than a row.
			stmt = tx.StmtContext(ctx, s.stmts.auditInsert)
		} else {
			var err error
			if stmt, err = tx.PrepareContext(ctx, auditInsertSQL(len(chunk))); err != nil {
				return err
			}
		}
		args = args[:0]
		for _, r := range chunk {
			e := r.ev
			args = append(args, e.Seq, toMicros(e.Time), e.Type, e.Actor, e.Outcome, e.Subject, r.details, e.RequestID, r.hashes,
				nullable(r.keys.User), nullable(r.keys.Device), nullable(r.keys.App))
		}
		_, err := stmt.ExecContext(ctx, args...)
		stmt.Close() // a transaction's statement; the prepared one stays
		if err != nil {
			return err
		}
	}
	return nil
}

// auditInsertSQL is the INSERT of n audit rows.
func auditInsertSQL(n int) string {
	const one = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	return `INSERT INTO audit_events (seq, time, type, actor, outcome, subject, details, request_id, log_hashes, k_user, k_device, k_app) VALUES ` +
		one + strings.Repeat(", "+one, n-1)
}

// cleanEvent returns e with every string valid UTF-8 (auditlog.ValidUTF8),
// so what is stored is what the canonical record says.
func cleanEvent(e store.AuditEvent) store.AuditEvent {
	e.Type = audit.Type(auditlog.ValidUTF8(string(e.Type)))
	e.Actor = auditlog.ValidUTF8(e.Actor)
	e.Outcome = auditlog.ValidUTF8(e.Outcome)
	e.Subject = auditlog.ValidUTF8(e.Subject)
	e.RequestID = auditlog.ValidUTF8(e.RequestID)
	if len(e.Details) > 0 {
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[auditlog.ValidUTF8(k)] = auditlog.ValidUTF8(v)
		}
		e.Details = d
	}
	return e
}

// ListAudit implements [store.Store]: newest first; Type is an exact match
// unless it ends in "." (then a prefix); AfterSeq keeps Seq > AfterSeq;
// Limit 0 (or negative) means 100.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	var (
		// Archived records (auditsearch.go) have no body to list.
		where = []string{`seq > (SELECT COALESCE(MAX(to_seq), 0) FROM audit_archives)`}
		args  []any
	)
	switch {
	case f.Type == "":
	case strings.HasSuffix(f.Type, "."):
		// A range on the (type, seq) index instead of LIKE, which would
		// need escaping of '%' and '_': every string with prefix p sorts in
		// [p, p with its last byte '.' raised to '/').
		where = append(where, `type >= ? AND type < ?`)
		args = append(args, f.Type, f.Type[:len(f.Type)-1]+"/")
	default:
		where = append(where, `type = ?`)
		args = append(args, f.Type)
	}
	if f.RequestID != "" {
		where = append(where, `request_id = ?`)
		args = append(args, f.RequestID)
	}
	if f.AfterSeq > 0 {
		where = append(where, `seq > ?`)
		args = append(args, f.AfterSeq)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultAuditLimit
	}
	q := `SELECT seq, time, type, actor, outcome, subject, details, request_id FROM audit_events WHERE ` + strings.Join(where, ` AND `)
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, limit)

	out, err := listRows(ctx, s.reader(), scanAudit, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return out, nil
}

func scanAudit(r rowScanner) (store.AuditEvent, error) {
	var (
		e       store.AuditEvent
		at      int64
		details sql.NullString
	)
	if err := r.Scan(&e.Seq, &at, &e.Type, &e.Actor, &e.Outcome, &e.Subject, &details, &e.RequestID); err != nil {
		return e, err
	}
	e.Time = fromMicros(at)
	if details.Valid && details.String != "" {
		if err := json.Unmarshal([]byte(details.String), &e.Details); err != nil {
			return e, fmt.Errorf("decode audit event %d details: %w", e.Seq, err)
		}
	}
	return e, nil
}

// Snapshot implements [store.Store] with one read transaction: in WAL mode
// every statement in it sees the database as of its first read.
func (s *Store) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	var snap store.Snapshot
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if snap.Segments, err = listSegments(ctx, tx); err != nil {
			return err
		}
		if snap.Apps, err = listApps(ctx, tx); err != nil {
			return err
		}
		if snap.Users, err = listUsers(ctx, tx); err != nil {
			return err
		}
		if snap.Groups, err = listGroups(ctx, tx); err != nil {
			return err
		}
		if snap.Rules, err = listRules(ctx, tx); err != nil {
			return err
		}
		if snap.Gateways, err = listGateways(ctx, tx); err != nil {
			return err
		}
		if snap.Devices, err = listDevices(ctx, tx); err != nil {
			return err
		}
		if snap.Posture, err = listPosture(ctx, tx); err != nil {
			return err
		}
		if snap.Sessions, err = listLatestSessions(ctx, tx); err != nil {
			return err
		}
		if snap.Identities, err = listIdentities(ctx, tx); err != nil {
			return err
		}
		for i := range snap.Identities {
			snap.Identities[i].RefreshToken = "" // the map never needs it
		}
		switch v, err := activePolicy(ctx, tx); {
		case err == nil:
			snap.Policy = &v
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &snap, nil
}
