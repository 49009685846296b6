package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

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
	evs, err := listRows(ctx, tx, scanAudit, `SELECT seq, time, type, actor, outcome, subject, details, request_id FROM audit_events ORDER BY seq`)
	if err != nil {
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

// auditScanRow is a row of audit_events as read, details still JSON.
type auditScanRow struct {
	ev      store.AuditEvent
	details sql.NullString
	hashes  []byte
}

// ScanAuditLog implements [store.AuditLogStore]. One goroutine reads the
// next page while the caller's goroutine decodes and hands out the current
// one: a verification of millions of records keeps both cores busy.
func (s *Store) ScanAuditLog(ctx context.Context, from, to int64, fn func(store.AuditEvent, tlog.Hash, bool) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type page struct {
		rows []auditScanRow
		err  error
	}
	pages := make(chan page, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(pages)
		for next := from; next <= to; {
			rows, err := s.readAuditPage(ctx, next, to)
			select {
			case pages <- page{rows, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(rows) == 0 {
				return
			}
			next = rows[len(rows)-1].ev.Seq + 1
		}
	}()
	defer func() { cancel(); <-done }()
	for p := range pages {
		if p.err != nil {
			return fmt.Errorf("read audit log: %w", p.err)
		}
		for _, r := range p.rows {
			if r.details.Valid && r.details.String != "" {
				var err error
				if r.ev.Details, err = decodeDetails(r.details.String); err != nil {
					// Not valid JSON any more: the row was edited. Keep
					// the text, so the record fails its hash check and
					// verification names it, instead of stopping here.
					r.ev.Details = map[string]string{"": r.details.String}
				}
			}
			var leaf tlog.Hash
			logged := len(r.hashes) >= tlog.HashSize
			if logged {
				copy(leaf[:], r.hashes)
			}
			if err := fn(r.ev, leaf, logged); err != nil {
				return err
			}
		}
	}
	return nil
}

// readAuditPage reads up to auditScanPage rows with seq in [from, to], in
// one read transaction.
func (s *Store) readAuditPage(ctx context.Context, from, to int64) ([]auditScanRow, error) {
	var out []auditScanRow
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT seq, time, type, actor, outcome, subject, details, request_id, log_hashes
			FROM audit_events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?`, from, to, auditScanPage)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = make([]auditScanRow, 0, min(to-from+1, auditScanPage))
		for rows.Next() {
			var (
				r  auditScanRow
				at int64
			)
			if err := rows.Scan(&r.ev.Seq, &at, &r.ev.Type, &r.ev.Actor, &r.ev.Outcome, &r.ev.Subject, &r.details, &r.ev.RequestID, &r.hashes); err != nil {
				return err
			}
			r.ev.Time = fromMicros(at)
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
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

// decodeDetails decodes a details column: the JSON object of strings that
// auditlog.AppendDetails wrote (json.Marshal before schema 15's
// controller). A hand parser for that one shape (either escaping), three times as fast as encoding/json's reflection, which matters
// when a verification decodes millions of rows; anything else (escapes it
// does not know, invalid UTF-8, another shape) goes to json.Unmarshal, so
// the result is always encoding/json's.
func decodeDetails(s string) (map[string]string, error) {
	if m, ok := decodeFlat(s); ok {
		return m, nil
	}
	var m map[string]string
	err := json.Unmarshal([]byte(s), &m)
	return m, err
}

// decodeFlat parses {"k":"v",...} with the escapes json.Marshal writes;
// false for anything else.
func decodeFlat(s string) (map[string]string, bool) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' || !utf8.ValidString(s) {
		return nil, false
	}
	m := make(map[string]string, 8)
	i := 1
	if s[i] == '}' {
		return m, i == len(s)-1
	}
	for {
		k, n, ok := flatString(s, i)
		if !ok || n >= len(s) || s[n] != ':' {
			return nil, false
		}
		v, n2, ok := flatString(s, n+1)
		if !ok || n2 >= len(s) {
			return nil, false
		}
		if _, dup := m[k]; dup {
			return nil, false
		}
		m[k] = v
		switch s[n2] {
		case ',':
			i = n2 + 1
		case '}':
			return m, n2 == len(s)-1
		default:
			return nil, false
		}
	}
}

// flatString reads a JSON string at s[i:] and returns it and the index
// after it; escapes other than \" \\ \/ \b \f \n \r \t and \u of a
// non-surrogate are left to encoding/json (false).
func flatString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	i++
	start := i
	var b []byte
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			if b == nil {
				return s[start:i], i + 1, true
			}
			return string(append(b, s[start:i]...)), i + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			i++
			continue
		}
		if i+1 >= len(s) {
			return "", 0, false
		}
		b = append(b, s[start:i]...)
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			if i+6 > len(s) {
				return "", 0, false
			}
			v, err := strconv.ParseUint(s[i+2:i+6], 16, 16)
			if err != nil || utf16.IsSurrogate(rune(v)) {
				return "", 0, false
			}
			b = utf8.AppendRune(b, rune(v))
			i += 4
		default:
			return "", 0, false
		}
		i += 2
		start = i
	}
	return "", 0, false
}
