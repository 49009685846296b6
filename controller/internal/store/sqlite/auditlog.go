package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// This file: the audit trail's Merkle tree (store.AuditLogStore).
//
// Each audit_events row keeps, in log_hashes, the tree hashes its leaf
// stores (auditlog.Tree.Append: the leaf hash, then the root of every
// subtree the leaf completes), concatenated. Tree hash i (tlog storage
// index) is therefore found in the row auditlog.StoredAt(i) names, and the
// right edge the next append needs is at most 63 rows read by primary key.
// Keeping the hashes in the record's own row costs no second insert per
// record and cannot fall out of step with it.

// migrationAuditLog (11): the audit log's tree hashes and its signed
// checkpoints. The records already stored are logged by backfillAuditLog
// in the same transaction.
const migrationAuditLog = `
ALTER TABLE audit_events ADD COLUMN log_hashes BLOB; -- NULL: not in the log (added outside the controller)
CREATE TABLE audit_checkpoints (
	size INTEGER PRIMARY KEY, -- tree size: the seq of the last record it covers
	time INTEGER NOT NULL,
	note BLOB NOT NULL        -- the signed checkpoint (C2SP tlog-checkpoint note)
) STRICT;
`

// backfillAuditLog logs the records stored before the log existed, in seq
// order. Their seqs must run from 1 without a gap (the controller never
// deletes a record; an AUTOINCREMENT seq is never skipped, a rolled back
// insert included); a gap means records were deleted by hand, and the
// migration stops rather than build a log that hides it.
func backfillAuditLog(ctx context.Context, tx *sql.Tx) error {
	tree := &auditlog.Tree{}
	var (
		line   []byte
		stored []tlog.Hash
		next   int64 = 1
	)
	upd, err := tx.PrepareContext(ctx, `UPDATE audit_events SET log_hashes = ? WHERE seq = ?`)
	if err != nil {
		return err
	}
	defer upd.Close()
	// The rows are read whole first: SQLite's UPDATE of the table a
	// statement is still reading is allowed but its cursor would see the
	// change; a clinic's trail before this version is small.
	var evs []store.AuditEvent
	rows, err := tx.QueryContext(ctx, `SELECT seq, time, type, actor, outcome, subject, details, request_id FROM audit_events ORDER BY seq`)
	if err != nil {
		return err
	}
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			rows.Close()
			return err
		}
		evs = append(evs, e)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, e := range evs {
		if e.Seq != next {
			return fmt.Errorf("audit record seq %d is missing (the next stored is %d): records were deleted outside the controller, so the audit log cannot be built over them; restore cordon.db from a backup taken before, or move it aside to start a new trail", next, e.Seq)
		}
		next++
		line = e.Record().AppendCanonical(line[:0])
		stored = tree.Append(tlog.RecordHash(line), stored[:0])
		if _, err := upd.ExecContext(ctx, hashBlob(stored), e.Seq); err != nil {
			return err
		}
	}
	return nil
}

func hashBlob(hs []tlog.Hash) []byte {
	b := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

func auditLogSize(ctx context.Context, q queryer) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("audit log size: %w", err)
	}
	return n, nil
}

// openTree returns the tree of the first n records, ready to append to.
func openTree(ctx context.Context, q queryer, n int64) (*auditlog.Tree, error) {
	edge, err := readHashes(ctx, q, auditlog.PrefixIndexes(n))
	if err != nil {
		return nil, fmt.Errorf("audit log of %d records cannot be extended: %w; the trail was changed outside the controller: run cordonctl audit verify, and restore cordon.db from a backup", n, err)
	}
	return auditlog.NewTree(n, edge)
}

// readHashes reads tree hashes by tlog storage index.
func readHashes(ctx context.Context, q queryer, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	const page = 500
	for lo := 0; lo < len(indexes); lo += page {
		part := indexes[lo:min(lo+page, len(indexes))]
		seqs := make([]any, len(part))
		for i, x := range part {
			leaf, _, err := auditlog.StoredAt(x)
			if err != nil {
				return nil, err
			}
			seqs[i] = leaf + 1
		}
		blobs := make(map[int64][]byte, len(part))
		rows, err := q.QueryContext(ctx, `SELECT seq, log_hashes FROM audit_events WHERE seq IN (?`+strings.Repeat(",?", len(part)-1)+`)`, seqs...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var (
				seq  int64
				blob []byte
			)
			if err := rows.Scan(&seq, &blob); err != nil {
				rows.Close()
				return nil, err
			}
			blobs[seq] = blob
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, err
		}
		for i, x := range part {
			leaf, off, _ := auditlog.StoredAt(x)
			b := blobs[leaf+1]
			if len(b) < (off+1)*tlog.HashSize {
				return nil, fmt.Errorf("tree hash %d (stored with record seq %d): %w", x, leaf+1, store.ErrNotFound)
			}
			copy(out[lo+i][:], b[off*tlog.HashSize:])
		}
	}
	return out, nil
}

// AuditLogSize implements [store.AuditLogStore].
func (s *Store) AuditLogSize(ctx context.Context) (int64, error) {
	return auditLogSize(ctx, s.reader())
}

// ReadAuditHashes implements [store.AuditLogStore].
func (s *Store) ReadAuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	hs, err := readHashes(ctx, s.reader(), indexes)
	if err != nil {
		return nil, fmt.Errorf("read audit log hashes: %w", err)
	}
	return hs, nil
}

// auditScanPage is how many records one read transaction of ScanAuditLog
// reads.
const auditScanPage = 10_000

// ScanAuditLog implements [store.AuditLogStore].
func (s *Store) ScanAuditLog(ctx context.Context, from, to int64, fn func(store.AuditEvent, tlog.Hash, bool) error) error {
	type row struct {
		ev     store.AuditEvent
		hashes []byte
	}
	page := make([]row, 0, auditScanPage)
	for from <= to {
		page = page[:0]
		err := s.read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT seq, time, type, actor, outcome, subject, details, request_id, log_hashes
				FROM audit_events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?`, from, to, auditScanPage)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var (
					r       row
					at      int64
					details sql.NullString
				)
				if err := rows.Scan(&r.ev.Seq, &at, &r.ev.Type, &r.ev.Actor, &r.ev.Outcome, &r.ev.Subject, &details, &r.ev.RequestID, &r.hashes); err != nil {
					return err
				}
				r.ev.Time = fromMicros(at)
				if details.Valid && details.String != "" {
					if err := json.Unmarshal([]byte(details.String), &r.ev.Details); err != nil {
						// Not valid JSON any more: the row was edited. Keep
						// the text, so the record fails its hash check and
						// verification names it, instead of stopping here.
						r.ev.Details = map[string]string{"": details.String}
					}
				}
				page = append(page, r)
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("read audit log from seq %d: %w", from, err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, r := range page {
			var leaf tlog.Hash
			logged := len(r.hashes) >= tlog.HashSize
			if logged {
				copy(leaf[:], r.hashes)
			}
			if err := fn(r.ev, leaf, logged); err != nil {
				return err
			}
		}
		from = page[len(page)-1].ev.Seq + 1
	}
	return nil
}

// PutCheckpoint implements [store.AuditLogStore].
func (s *Store) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (size, time, note) VALUES (?, ?, ?)`, c.Size, toMicros(c.Time), c.Note)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("store audit log checkpoint of size %d: %w", c.Size, err)
	}
	return nil
}

// LatestCheckpoint implements [store.AuditLogStore].
func (s *Store) LatestCheckpoint(ctx context.Context) (store.Checkpoint, error) {
	var (
		c  store.Checkpoint
		at int64
	)
	err := s.reader().QueryRowContext(ctx, `SELECT size, time, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&c.Size, &at, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("audit log checkpoint: %w", store.ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("read latest audit log checkpoint: %w", err)
	}
	c.Time = fromMicros(at)
	return c, nil
}

// ScanCheckpoints implements [store.AuditLogStore].
func (s *Store) ScanCheckpoints(ctx context.Context, fn func(store.Checkpoint) error) error {
	cps, err := listRows(ctx, s.reader(), func(r rowScanner) (store.Checkpoint, error) {
		var (
			c  store.Checkpoint
			at int64
		)
		err := r.Scan(&c.Size, &at, &c.Note)
		c.Time = fromMicros(at)
		return c, err
	}, `SELECT size, time, note FROM audit_checkpoints ORDER BY size`)
	if err != nil {
		return fmt.Errorf("list audit log checkpoints: %w", err)
	}
	for _, c := range cps {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}
