package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// This file: the key index of audit search (user, device, app), kept by
// an indexer behind the appends instead of by the appends themselves.
//
// # Why not an index on the keys
//
// An SQLite index on (key, time) puts each record's user, device and app
// entry on a random leaf page of a tree much larger than the page cache;
// a transaction of 100 records dirties some 300 pages more, each written
// to the WAL at commit and again at the checkpoint. On a trail of 10
// million records appends fell to 2,800–5,200 records/s
// (docs/benchmarks.md). What costs is not the entries but the number of
// distinct pages each commit touches.
//
// # Buckets of posting lists
//
// The indexer takes the records past its cursor a chunk at a time
// (auditIndexChunk, 20,000), in seq order, and writes one bucket: for
// each user, device and app the chunk mentions, one row holding the
// (seq, time) of all its records in the chunk (a posting list,
// auditpostings.go), and one row in audit_key_buckets with the bucket's
// time range. Rows are keyed (bucket, kind, key) and the bucket is the
// chunk's last seq, so a bucket is written in key order at the right
// edge of the tree: some 150 pages one after another for 20,000 records,
// instead of 60,000 entries each on a random page. The bucket, its postings and the cursor commit
// in one transaction, so a crash loses or repeats nothing: after a
// restart the indexer goes on from the cursor. The records' keys come
// from their own row (k_user, k_device, k_app, written by the append's
// INSERT, unindexed), read in seq order.
//
// A search by key (auditkeysearch.go) reads the key's posting list in each
// bucket whose time range can hold a match, newest buckets first, and
// stops once a page is certain; the records past the cursor (at most a
// chunk and what arrived since, seconds of traffic) are scanned
// directly. So a search is complete whether or not the indexer has
// caught up; only its cost depends on it.
//
// The index is derived data: it is not in the log, audit verify never
// reads it, and emptying the two tables and setting the cursor to 0
// makes the indexer rebuild it from the records (docs/audit.md).

// migrationAuditKeyIndex (15): the key indexes of schema 12 give way to
// buckets of posting lists, filled by the indexer from the k_* columns
// the rows already hold (from the start of the trail, on the first run).
const migrationAuditKeyIndex = `
DROP INDEX IF EXISTS audit_events_user;
DROP INDEX IF EXISTS audit_events_device;
DROP INDEX IF EXISTS audit_events_app;

CREATE TABLE audit_key_buckets (
	last_seq INTEGER PRIMARY KEY, -- the bucket holds records after the previous bucket's last_seq, to this
	min_time INTEGER NOT NULL,    -- the times of its records with a key (unix µs)
	max_time INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_key_postings (
	bucket  INTEGER NOT NULL,     -- audit_key_buckets.last_seq
	kind    INTEGER NOT NULL,     -- keyUser, keyDevice, keyApp
	key     TEXT NOT NULL,
	entries BLOB NOT NULL,        -- appendPostings: (seq, time) of each record, seq ascending
	PRIMARY KEY (bucket, kind, key)
) STRICT, WITHOUT ROWID;

-- The last seq indexed: every record up to it with a key is in a bucket.
CREATE TABLE audit_key_cursor (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
) STRICT;
INSERT INTO audit_key_cursor (id, seq) VALUES (1, 0);
`

// Key kinds, as stored in audit_key_postings.kind.
const (
	keyUser   = 1
	keyDevice = 2
	keyApp    = 3
)

// auditIndexChunk is how many records one bucket covers. Larger buckets
// write fewer rows per record (a key seen twice in a chunk is one row)
// and leave fewer buckets for a search to visit; smaller ones keep the
// unindexed tail a search scans, and the indexer's transaction, short.
const auditIndexChunk = 20_000

// auditIndexTick is how often the indexer looks for a full chunk when
// no append has woken it.
const auditIndexTick = time.Second

// keyIndexer is the indexer's state shared by a Store and the Stores its
// Updates make.
type keyIndexer struct {
	chunk   int64         // records per bucket (tests shrink it)
	wake    chan struct{} // an append made a chunk full; capacity 1
	indexed atomic.Int64  // the cursor as last committed or read
	size    atomic.Int64  // the log's size as of the last append (or Open)
}

func newKeyIndexer() *keyIndexer {
	return &keyIndexer{chunk: auditIndexChunk, wake: make(chan struct{}, 1)}
}

// load reads the cursor and the log's size.
func (k *keyIndexer) load(ctx context.Context, q queryer) error {
	cur, err := readKeyCursor(ctx, q)
	if err != nil {
		return err
	}
	size, err := auditLogSize(ctx, q)
	if err != nil {
		return err
	}
	k.indexed.Store(cur)
	k.size.Store(size)
	return nil
}

// appended is told the log's new size after an append commits.
func (k *keyIndexer) appended(size int64) {
	for old := k.size.Load(); size > old && !k.size.CompareAndSwap(old, size); old = k.size.Load() {
	}
	if size-k.indexed.Load() >= k.chunk {
		select {
		case k.wake <- struct{}{}:
		default:
		}
	}
}

// readKeyCursor returns the last seq indexed.
func readKeyCursor(ctx context.Context, q queryer) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT seq FROM audit_key_cursor WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read audit key index cursor: %w", err)
	}
	return n, nil
}

// RunAuditIndexer keeps the key index of audit search up to date until
// ctx is done: whenever a chunk of records (auditIndexChunk) past its
// cursor is stored, it writes their bucket in one short transaction.
// The caller owns the goroutine it runs on; run one per database. An
// error is logged and retried at the next tick: search stays complete
// meanwhile (it scans what is not indexed), only slower.
func (s *Store) RunAuditIndexer(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(auditIndexTick)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			st, err := s.indexAuditKeys(ctx, false)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("audit search index: bucket not written; searches scan the records past the index meanwhile", "err", err)
				}
				break
			}
			if st.records == 0 {
				break
			}
			log.Debug("audit search index: bucket written", "records", st.records, "keys", st.keys, "build", st.build, "write", st.write)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.idx.wake:
		case <-t.C:
		}
	}
}

// keyRow is what the indexer reads of a record.
type keyRow struct {
	seq, time         int64
	user, device, app sql.NullString
}

// indexStats says what one indexAuditKeys did.
type indexStats struct {
	records int           // records the bucket covers; 0: none written
	keys    int           // posting lists written
	build   time.Duration // reading the records and building the bucket
	write   time.Duration // the write transaction (holding the writer)
}

// indexAuditKeys writes the bucket of the next chunk of records past the
// cursor: nothing while fewer than a chunk are waiting, unless all is set
// (then it indexes what there is). The records are read in a read
// transaction, so appends go on while the bucket is built; only the write
// holds the writer.
func (s *Store) indexAuditKeys(ctx context.Context, all bool) (indexStats, error) {
	var (
		from  int64
		rows  []keyRow
		st    indexStats
		start = time.Now()
	)
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if from, err = readKeyCursor(ctx, tx); err != nil {
			return err
		}
		s.idx.indexed.Store(from)
		// Not a chunk yet: one probe, not a read of what is there.
		if size, err := auditLogSize(ctx, tx); err != nil || !all && size-from < s.idx.chunk {
			return err
		}
		rows, err = listRows(ctx, tx, func(r rowScanner) (keyRow, error) {
			var k keyRow
			err := r.Scan(&k.seq, &k.time, &k.user, &k.device, &k.app)
			return k, err
		}, `SELECT seq, time, k_user, k_device, k_app FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?`, from, s.idx.chunk)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("read audit records to index: %w", err)
	}
	if len(rows) == 0 || !all && int64(len(rows)) < s.idx.chunk {
		return st, nil
	}
	b := buildBucket(rows)
	last := rows[len(rows)-1].seq
	st.build = time.Since(start)
	start = time.Now()
	err = s.write(ctx, func(tx *sql.Tx) error {
		// One indexer per database; a second (another process on the same
		// file) must not write the same bucket again.
		if cur, err := readKeyCursor(ctx, tx); err != nil || cur != from {
			if err == nil {
				err = fmt.Errorf("audit key index cursor moved from %d to %d under the indexer: is a second controller using this database?", from, cur)
			}
			return err
		}
		// Records archived since they were read lost their keys with
		// their bodies; so do their postings.
		done, err := archivedTo(ctx, tx)
		if err != nil {
			return err
		}
		if err := writeBucket(ctx, tx, last, b.without(done)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE audit_key_cursor SET seq = ? WHERE id = 1`, last)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("index audit records %d to %d: %w", from+1, last, err)
	}
	s.idx.indexed.Store(last)
	st.records, st.keys, st.write = len(rows), len(b), time.Since(start)
	return st, nil
}

// bucketKey names one posting list of a bucket.
type bucketKey struct {
	kind int
	key  string
}

// bucket is the posting lists of one chunk of records.
type bucket map[bucketKey][]posting

func buildBucket(rows []keyRow) bucket {
	b := make(bucket)
	for _, r := range rows {
		p := posting{seq: r.seq, time: r.time}
		for kind, k := range [...]sql.NullString{keyUser: r.user, keyDevice: r.device, keyApp: r.app} {
			if k.Valid && k.String != "" {
				bk := bucketKey{kind, k.String}
				b[bk] = append(b[bk], p)
			}
		}
	}
	return b
}

// without returns b without the postings of seq <= done.
func (b bucket) without(done int64) bucket {
	for k, ps := range b {
		i := 0
		for i < len(ps) && ps[i].seq <= done {
			i++
		}
		if i == len(ps) {
			delete(b, k)
		} else {
			b[k] = ps[i:]
		}
	}
	return b
}

// postingsInsertRows is how many postings one INSERT statement writes.
const postingsInsertRows = 200

// writeBucket inserts bucket b (keyed last) in key order: its rows then
// fill pages one after another at the right edge of the table.
func writeBucket(ctx context.Context, tx *sql.Tx, last int64, b bucket) error {
	if len(b) == 0 {
		return nil
	}
	keys := make([]bucketKey, 0, len(b))
	minT, maxT := int64(1<<63-1), int64(-1<<63)
	for k, ps := range b {
		keys = append(keys, k)
		for _, p := range ps {
			minT, maxT = min(minT, p.time), max(maxT, p.time)
		}
	}
	slices.SortFunc(keys, func(x, y bucketKey) int {
		return cmp.Or(cmp.Compare(x.kind, y.kind), strings.Compare(x.key, y.key))
	})
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_key_buckets (last_seq, min_time, max_time) VALUES (?, ?, ?)`, last, minT, maxT); err != nil {
		return err
	}
	var (
		full *sql.Stmt
		args []any
		buf  []byte
	)
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), postingsInsertRows)]
		keys = keys[len(chunk):]
		args, buf = args[:0], buf[:0]
		// The blobs share one buffer: slice it only when it is complete.
		ends := make([]int, 0, len(chunk))
		for _, k := range chunk {
			buf = appendPostings(buf, b[k])
			ends = append(ends, len(buf))
		}
		start := 0
		for i, k := range chunk {
			args = append(args, last, k.kind, k.key, buf[start:ends[i]])
			start = ends[i]
		}
		stmt := full
		if len(chunk) < postingsInsertRows || full == nil {
			var err error
			if stmt, err = tx.PrepareContext(ctx, postingsInsertSQL(len(chunk))); err != nil {
				return err
			}
			if len(chunk) == postingsInsertRows {
				full = stmt
			} else {
				defer stmt.Close()
			}
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

func postingsInsertSQL(n int) string {
	return `INSERT INTO audit_key_postings (bucket, kind, key, entries) VALUES (?, ?, ?, ?)` + strings.Repeat(", (?, ?, ?, ?)", n-1)
}

// archiveKeyIndex drops the postings of records up to seq to (archived):
// buckets wholly archived go; the one that straddles it is rewritten
// without them. Called in the archive's transaction.
func archiveKeyIndex(ctx context.Context, tx *sql.Tx, to int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_key_postings WHERE bucket <= ?`, to); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_key_buckets WHERE last_seq <= ?`, to); err != nil {
		return err
	}
	var straddle int64
	err := tx.QueryRowContext(ctx, `SELECT last_seq FROM audit_key_buckets WHERE last_seq > ? ORDER BY last_seq LIMIT 1`, to).Scan(&straddle)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	type row struct {
		kind    int
		key     string
		entries []byte
	}
	rows, err := listRows(ctx, tx, func(r rowScanner) (row, error) {
		var x row
		err := r.Scan(&x.kind, &x.key, &x.entries)
		return x, err
	}, `SELECT kind, key, entries FROM audit_key_postings WHERE bucket = ?`, straddle)
	if err != nil {
		return err
	}
	var ps []posting
	for _, r := range rows {
		if ps, err = decodePostings(ps[:0], r.entries); err != nil {
			return fmt.Errorf("audit key index bucket %d, key %q: %w", straddle, r.key, err)
		}
		i := 0
		for i < len(ps) && ps[i].seq <= to {
			i++
		}
		if i == 0 {
			continue
		}
		if i == len(ps) {
			_, err = tx.ExecContext(ctx, `DELETE FROM audit_key_postings WHERE bucket = ? AND kind = ? AND key = ?`, straddle, r.kind, r.key)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE audit_key_postings SET entries = ? WHERE bucket = ? AND kind = ? AND key = ?`,
				appendPostings(nil, ps[i:]), straddle, r.kind, r.key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// AuditIndexBehind returns how many records are past the key index's
// cursor as this process last saw them, without reading the database
// (for a metric).
func (s *Store) AuditIndexBehind() int64 {
	return max(0, s.idx.size.Load()-s.idx.indexed.Load())
}

// AuditIndexLag returns how many records are past the key index's
// cursor: what a search by key scans directly. It stays below a chunk
// or two while the indexer keeps up.
func (s *Store) AuditIndexLag(ctx context.Context) (int64, error) {
	var n int64
	err := s.read(ctx, func(tx *sql.Tx) error {
		size, err := auditLogSize(ctx, tx)
		if err != nil {
			return err
		}
		cur, err := readKeyCursor(ctx, tx)
		n = size - cur
		return err
	})
	return n, err
}
