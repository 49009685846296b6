package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// This file: audit search (its indexed keys) and archiving
// (store.AuditArchiveStore).
//
// Search keys (audit.KeysOf: the user, device and app a record is about)
// live in columns of the record's own row, written by the INSERT that
// stores the record, so they cannot fall out of step with it; they are
// not part of the record the audit log hashes. They are not indexed by
// SQLite: an indexer writes them into posting lists behind the appends
// (auditindex.go), and a search by key reads those and scans the records
// past the indexer's cursor (auditkeysearch.go). Searches without a key
// use (type, time), one scan per type, merged, or (outcome, time). There
// is no index on time alone: every index costs each append page writes,
// and the per-type scans serve time ranges.
//
// Archiving blanks a prefix of the log's rows: their bodies go, their
// log_hashes (the leaf hash and the tree hashes the record completed)
// stay, so the tree, checkpoints, proofs and the next append are as
// before. audit_archives says which prefix is archived, and each range's
// root hash, which the verification checks.

// migrationAuditSearch (12): search keys and their indexes, archived
// ranges and two-admin archive requests. The keys of the records already
// stored are filled in by backfillAuditKeys in the same transaction,
// which then creates the indexes (auditSearchIndexes): an index built
// over filled columns is one sort, instead of a random insert per row.
const migrationAuditSearch = `
ALTER TABLE audit_events ADD COLUMN k_user TEXT;   -- audit.KeysOf; NULL: none
ALTER TABLE audit_events ADD COLUMN k_device TEXT;
ALTER TABLE audit_events ADD COLUMN k_app TEXT;

CREATE TABLE audit_archives (
	to_seq        INTEGER PRIMARY KEY,
	from_seq      INTEGER NOT NULL,
	root          TEXT NOT NULL,  -- base64 tree root at to_seq
	bundle_sha256 TEXT NOT NULL,
	reason        TEXT NOT NULL,
	request       TEXT NOT NULL,  -- '' : one admin, records past retention
	requested_by  TEXT NOT NULL,
	approved_by   TEXT NOT NULL,
	at            INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_archive_requests (
	id            TEXT PRIMARY KEY,
	from_seq      INTEGER NOT NULL,
	to_seq        INTEGER NOT NULL,
	reason        TEXT NOT NULL,
	bundle_sha256 TEXT NOT NULL,
	requested_by  TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL,
	approved_by   TEXT NOT NULL DEFAULT '',
	approved_at   INTEGER              -- NULL until approved (single-use)
) STRICT;
`

// auditSearchIndexes are the search indexes of migrationAuditSearch.
const auditSearchIndexes = `
CREATE INDEX audit_events_user ON audit_events(k_user, time) WHERE k_user IS NOT NULL;
CREATE INDEX audit_events_device ON audit_events(k_device, time) WHERE k_device IS NOT NULL;
CREATE INDEX audit_events_app ON audit_events(k_app, time) WHERE k_app IS NOT NULL;
CREATE INDEX audit_events_type_time ON audit_events(type, time);
CREATE INDEX audit_events_outcome ON audit_events(outcome, time);
`

// backfillAuditKeys fills the search keys of the records stored before
// migrationAuditSearch, a page at a time, then creates their indexes.
func backfillAuditKeys(ctx context.Context, tx *sql.Tx) error {
	upd, err := tx.PrepareContext(ctx, `UPDATE audit_events SET k_user = ?, k_device = ?, k_app = ? WHERE seq = ?`)
	if err != nil {
		return err
	}
	defer upd.Close()
	for after := int64(0); ; {
		evs, err := listRows(ctx, tx, scanAudit, `SELECT seq, time, type, actor, outcome, subject, details, request_id
			FROM audit_events WHERE seq > ? ORDER BY seq LIMIT 5000`, after)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			_, err := tx.ExecContext(ctx, auditSearchIndexes)
			return err
		}
		for _, e := range evs {
			k := audit.KeysOf(e.Type, e.Actor, e.Subject, e.Details)
			if k == (audit.Keys{}) {
				continue
			}
			if _, err := upd.ExecContext(ctx, nullable(k.User), nullable(k.Device), nullable(k.App), e.Seq); err != nil {
				return err
			}
		}
		after = evs[len(evs)-1].Seq
	}
}

// nullable is s, or NULL for "".
func nullable(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// archivedTo is the last archived seq (0: none).
func archivedTo(ctx context.Context, q queryer) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(to_seq), 0) FROM audit_archives`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read archived audit range: %w", err)
	}
	return n, nil
}

// defaultSearchLimit is what AuditQuery.Limit 0 means.
const defaultSearchLimit = 100

// SearchAudit implements [store.AuditArchiveStore]. The access path is
// chosen by the filters, and indexes are named (INDEXED BY), so the plan
// does not depend on statistics: with a user, device or app, that key's
// posting lists (keySearch); else with an exact type, (type, time);
// else with an outcome, (outcome, time); else (type, time) once per type
// (those under the prefix, or every type, found by seeking the index
// from one type to the next), merged. Each scan yields rows in (time,
// seq) order, checks the other filters on them and stops after a page.
func (s *Store) SearchAudit(ctx context.Context, q store.AuditQuery) (store.AuditPage, error) {
	var page store.AuditPage
	cur, hasCur, err := q.DecodeCursor()
	if err != nil {
		return page, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = defaultSearchLimit
	}
	limit = min(limit, store.MaxAuditSearchLimit)

	var (
		where = []string{`seq > ?`}
		args  = []any{int64(0)} // the archived prefix, read in the transaction
		index = "audit_events_type_time"
	)
	eq := func(col, v string) {
		where = append(where, col+` = ?`)
		args = append(args, v)
	}
	prefix := q.Type == "" || strings.HasSuffix(q.Type, ".")
	byKey := q.User != "" || q.Device != "" || q.App != ""
	// merge: one scan per type, merged; otherwise one scan.
	merge := false
	switch {
	case byKey:
	case !prefix:
	case q.Outcome != "":
		index = "audit_events_outcome"
	default:
		merge = true
	}
	if q.User != "" {
		eq("k_user", q.User)
	}
	if q.Device != "" {
		eq("k_device", q.Device)
	}
	if q.App != "" {
		eq("k_app", q.App)
	}
	switch {
	case merge:
		where = append(where, `type = ?`)
		args = append(args, "") // each type under the prefix in turn
	case q.Type == "":
	case prefix:
		where = append(where, `type >= ? AND type < ?`)
		args = append(args, q.Type, prefixEnd(q.Type))
	default:
		eq("type", q.Type)
	}
	typeArg := len(args) - 1
	if q.Outcome != "" {
		eq("outcome", q.Outcome)
	}
	if !q.Since.IsZero() {
		where = append(where, `time >= ?`)
		args = append(args, toMicros(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, `time < ?`)
		args = append(args, toMicros(q.Until))
	}
	if hasCur {
		where = append(where, `(time, seq) < (?, ?)`)
		args = append(args, toMicros(cur.Time), cur.Seq)
	}
	query := `SELECT seq, time, type, actor, outcome, subject, details, request_id FROM audit_events INDEXED BY ` + index +
		` WHERE ` + strings.Join(where, ` AND `) + ` ORDER BY time DESC, seq DESC LIMIT ?`

	err = s.read(ctx, func(tx *sql.Tx) error {
		a, err := archivedTo(ctx, tx)
		if err != nil {
			return err
		}
		args[0] = a
		if byKey {
			ks := keySearch{q: q, where: strings.Join(where, ` AND `), args: args, archived: a, n: limit + 1}
			if hasCur {
				ks.cur = &posting{seq: cur.Seq, time: toMicros(cur.Time)}
			}
			page.Events, err = ks.run(ctx, tx)
			return err
		}
		args := append(args, limit+1)
		if !merge {
			page.Events, err = listRows(ctx, tx, scanAudit, query, args...)
			return err
		}
		types, err := typesUnder(ctx, tx, q.Type)
		if err != nil {
			return err
		}
		for _, t := range types {
			args[typeArg] = t
			evs, err := listRows(ctx, tx, scanAudit, query, args...)
			if err != nil {
				return err
			}
			page.Events = mergeNewest(page.Events, evs, limit+1)
		}
		return nil
	})
	if err != nil {
		return store.AuditPage{}, fmt.Errorf("search audit records: %w", err)
	}
	if len(page.Events) > limit {
		page.Events = page.Events[:limit]
		last := page.Events[limit-1]
		page.NextCursor = q.EncodeCursor(store.SearchCursor{Time: last.Time, Seq: last.Seq})
	}
	return page, nil
}

// prefixEnd is the least string above every string with prefix p (p ends
// in "."): a range on an index instead of LIKE, which would need escaping
// of '%' and '_'.
func prefixEnd(p string) string { return p[:len(p)-1] + "/" }

// typesUnder returns the stored types with prefix p ("": every type), by
// seeking the type index from each to the next (one probe per type,
// however many records). Archived records' empty type is left out.
func typesUnder(ctx context.Context, tx *sql.Tx, p string) ([]string, error) {
	var out []string
	next, end := p, "\U0010FFFF"
	if p == "" {
		next = "\x00"
	} else {
		end = prefixEnd(p)
	}
	for {
		var t sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT MIN(type) FROM audit_events INDEXED BY audit_events_type_time WHERE type >= ? AND type < ?`,
			next, end).Scan(&t)
		if err != nil {
			return nil, err
		}
		if !t.Valid {
			return out, nil
		}
		out = append(out, t.String)
		next = t.String + "\x00"
	}
}

// mergeNewest merges two lists sorted newest first by (Time, Seq) and
// keeps the first n.
func mergeNewest(a, b []store.AuditEvent, n int) []store.AuditEvent {
	out := make([]store.AuditEvent, 0, min(n, len(a)+len(b)))
	for len(out) < n && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && newer(a[0], b[0]) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

func newer(x, y store.AuditEvent) bool {
	if !x.Time.Equal(y.Time) {
		return x.Time.After(y.Time)
	}
	return x.Seq > y.Seq
}

// CreateArchiveRequest implements [store.AuditArchiveStore].
func (s *Store) CreateArchiveRequest(ctx context.Context, r store.ArchiveRequest) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_archive_requests
			(id, from_seq, to_seq, reason, bundle_sha256, requested_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.FromSeq, r.ToSeq, r.Reason, r.BundleSHA256, r.RequestedBy, toMicros(r.CreatedAt), toMicros(r.ExpiresAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("store archive request %q: %w", r.ID, err)
	}
	return nil
}

const archiveRequestCols = `id, from_seq, to_seq, reason, bundle_sha256, requested_by, created_at, expires_at, approved_by, approved_at`

func scanArchiveRequest(r rowScanner) (store.ArchiveRequest, error) {
	var (
		a                store.ArchiveRequest
		created, expires int64
		approved         sql.NullInt64
	)
	err := r.Scan(&a.ID, &a.FromSeq, &a.ToSeq, &a.Reason, &a.BundleSHA256, &a.RequestedBy, &created, &expires, &a.ApprovedBy, &approved)
	a.CreatedAt, a.ExpiresAt = fromMicros(created), fromMicros(expires)
	if approved.Valid {
		t := fromMicros(approved.Int64)
		a.ApprovedAt = &t
	}
	return a, err
}

// GetArchiveRequest implements [store.AuditArchiveStore].
func (s *Store) GetArchiveRequest(ctx context.Context, id string) (store.ArchiveRequest, error) {
	r, err := getRow(ctx, s.reader(), scanArchiveRequest, `SELECT `+archiveRequestCols+` FROM audit_archive_requests WHERE id = ?`, id)
	if err != nil {
		return r, fmt.Errorf("archive request %q: %w", id, err)
	}
	return r, nil
}

// ListArchiveRequests implements [store.AuditArchiveStore].
func (s *Store) ListArchiveRequests(ctx context.Context) ([]store.ArchiveRequest, error) {
	rs, err := listRows(ctx, s.reader(), scanArchiveRequest, `SELECT `+archiveRequestCols+` FROM audit_archive_requests ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list archive requests: %w", err)
	}
	return rs, nil
}

// ConsumeArchiveRequest implements [store.AuditArchiveStore].
func (s *Store) ConsumeArchiveRequest(ctx context.Context, id, approver string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE audit_archive_requests SET approved_by = ?, approved_at = ? WHERE id = ? AND approved_at IS NULL`,
			approver, toMicros(at), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM audit_archive_requests WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return err
		}
		return store.ErrRequestUsed
	})
	if err != nil {
		return fmt.Errorf("approve archive request %q: %w", id, err)
	}
	return nil
}

// ArchiveAudit implements [store.AuditArchiveStore].
func (s *Store) ArchiveAudit(ctx context.Context, a store.AuditArchive) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		done, err := archivedTo(ctx, tx)
		if err != nil {
			return err
		}
		if a.FromSeq != done+1 {
			return fmt.Errorf("records up to seq %d are archived, so the next range starts at %d, not %d: %w", done, done+1, a.FromSeq, store.ErrStale)
		}
		n, err := auditLogSize(ctx, tx)
		if err != nil {
			return err
		}
		if a.ToSeq < a.FromSeq || a.ToSeq > n {
			return fmt.Errorf("record seq %d (the log holds 1 to %d): %w", a.ToSeq, n, store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE audit_events SET time = 0, type = '', actor = '', outcome = '', subject = '',
			details = NULL, request_id = '', k_user = NULL, k_device = NULL, k_app = NULL WHERE seq >= ? AND seq <= ?`, a.FromSeq, a.ToSeq); err != nil {
			return err
		}
		if err := archiveKeyIndex(ctx, tx, a.ToSeq); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO audit_archives (to_seq, from_seq, root, bundle_sha256, reason, request, requested_by, approved_by, at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, a.ToSeq, a.FromSeq, a.Root, a.BundleSHA256, a.Reason, a.Request, a.RequestedBy, a.ApprovedBy, toMicros(a.At))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("archive audit records %d to %d: %w", a.FromSeq, a.ToSeq, err)
	}
	return nil
}

// ListAuditArchives implements [store.AuditArchiveStore].
func (s *Store) ListAuditArchives(ctx context.Context) ([]store.AuditArchive, error) {
	as, err := listRows(ctx, s.reader(), func(r rowScanner) (store.AuditArchive, error) {
		var (
			a  store.AuditArchive
			at int64
		)
		err := r.Scan(&a.FromSeq, &a.ToSeq, &a.Root, &a.BundleSHA256, &a.Reason, &a.Request, &a.RequestedBy, &a.ApprovedBy, &at)
		a.At = fromMicros(at)
		return a, err
	}, `SELECT from_seq, to_seq, root, bundle_sha256, reason, request, requested_by, approved_by, at FROM audit_archives ORDER BY to_seq`)
	if err != nil {
		return nil, fmt.Errorf("list archived audit ranges: %w", err)
	}
	return as, nil
}

// ReadNewestAuditTime implements [store.AuditArchiveStore].
func (s *Store) ReadNewestAuditTime(ctx context.Context, from, to int64) (time.Time, error) {
	var at sql.NullInt64
	if err := s.reader().QueryRowContext(ctx, `SELECT MAX(time) FROM audit_events WHERE seq >= ? AND seq <= ?`, from, to).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("read times of audit records %d to %d: %w", from, to, err)
	}
	if !at.Valid {
		return time.Time{}, fmt.Errorf("audit records %d to %d: %w", from, to, store.ErrNotFound)
	}
	return fromMicros(at.Int64), nil
}
