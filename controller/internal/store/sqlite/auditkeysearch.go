package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// This file: a search by user, device or app, on the key index
// (auditindex.go).

// keySearch is one page of a search with a user, device or app filter.
type keySearch struct {
	q        store.AuditQuery
	where    string // every filter, on audit_events' columns
	args     []any  // where's arguments
	archived int64  // records up to this seq have no body
	indexed  int64  // the key index's cursor
	cur      *posting
	n        int // how many records to return (a page and one more)
}

// auditCols are the columns scanAudit reads.
const auditCols = `seq, time, type, actor, outcome, subject, details, request_id`

// bucketRef is a bucket a search may visit.
type bucketRef struct {
	last    int64
	maxTime int64
}

// run returns the first k.n records that match, newest first. The
// records past the index's cursor are scanned directly; for the rest it
// visits the buckets whose time range can hold a match, latest max_time
// first, a few, then more at a time, reading the key's posting list in
// each. A posting newer than every bucket not yet visited (time above
// the next one's max_time) is final: once no record found so far keeps
// it out of the page, its row is read and the other filters checked. It
// stops when the page's records are all newer than every bucket left, so
// a search over recent records reads the newest buckets only, and one
// whose filters match little reads every bucket's posting list of that
// key (one index probe each) and the rows they name.
func (k *keySearch) run(ctx context.Context, tx *sql.Tx) ([]store.AuditEvent, error) {
	indexed, err := readKeyCursor(ctx, tx)
	if err != nil {
		return nil, err
	}
	k.indexed = indexed
	// NOT INDEXED: the rowid range past the cursor (short), whatever
	// the other filters are.
	tail, err := listRows(ctx, tx, scanAudit, `SELECT `+auditCols+` FROM audit_events NOT INDEXED WHERE seq > ? AND `+k.where+
		` ORDER BY time DESC, seq DESC LIMIT ?`, append(append([]any{indexed}, k.args...), k.n)...)
	if err != nil {
		return nil, err
	}
	kind, key := keyUser, k.q.User
	switch {
	case key != "":
	case k.q.Device != "":
		kind, key = keyDevice, k.q.Device
	default:
		kind, key = keyApp, k.q.App
	}
	buckets, err := k.buckets(ctx, tx)
	if err != nil {
		return nil, err
	}
	var (
		pending []posting // from visited buckets, not yet read; newest first
		found   []store.AuditEvent
		next    int
		step    = 4
	)
	for {
		if next < len(buckets) {
			batch := buckets[next:min(len(buckets), next+step)]
			next += len(batch)
			step = min(2*step, 256)
			if pending, err = k.postings(ctx, tx, kind, key, batch, pending); err != nil {
				return nil, err
			}
			slices.SortFunc(pending, func(x, y posting) int {
				if x.after(y) {
					return -1
				}
				return 1
			})
		}
		// bound: no bucket left to visit holds a record newer than it.
		more, bound := next < len(buckets), int64(math.MinInt64)
		if more {
			bound = buckets[next].maxTime
		}
		// Read the rows of the final postings, newest first, while the
		// next could still be in the page.
		for len(pending) > 0 && (!more || pending[0].time > bound) {
			if top := mergeNewest(found, tail, k.n); len(top) == k.n && postingOf(top[k.n-1]).after(pending[0]) {
				break
			}
			want := min(256, max(32, 2*(k.n-len(found))))
			j := 0
			for j < len(pending) && j < want && (!more || pending[j].time > bound) {
				j++
			}
			evs, err := k.fetch(ctx, tx, pending[:j])
			if err != nil {
				return nil, err
			}
			pending = pending[j:]
			found = append(found, evs...)
		}
		top := mergeNewest(found, tail, k.n)
		if !more || len(top) == k.n && toMicros(top[k.n-1].Time) > bound {
			return top, nil
		}
	}
}

// postingOf is e's position in search order.
func postingOf(e store.AuditEvent) posting { return posting{seq: e.Seq, time: toMicros(e.Time)} }

// buckets lists the buckets whose time range meets the search's, latest
// max_time first. Only those up to the cursor: the records past it are
// the scanned tail, whatever else the table holds.
func (k *keySearch) buckets(ctx context.Context, tx *sql.Tx) ([]bucketRef, error) {
	since, until, upTo := int64(math.MinInt64), int64(math.MaxInt64), int64(math.MaxInt64)
	if !k.q.Since.IsZero() {
		since = toMicros(k.q.Since)
	}
	if !k.q.Until.IsZero() {
		until = toMicros(k.q.Until)
	}
	if k.cur != nil {
		upTo = k.cur.time
	}
	return listRows(ctx, tx, func(r rowScanner) (bucketRef, error) {
		var b bucketRef
		err := r.Scan(&b.last, &b.maxTime)
		return b, err
	}, `SELECT last_seq, max_time FROM audit_key_buckets WHERE last_seq > ? AND last_seq <= ? AND max_time >= ? AND min_time < ? AND min_time <= ?
		ORDER BY max_time DESC, last_seq DESC`, k.archived, k.indexed, since, until, upTo)
}

// postings appends to out the postings of kind/key in the buckets bs
// that meet the search's time range, cursor and archived prefix.
func (k *keySearch) postings(ctx context.Context, tx *sql.Tx, kind int, key string, bs []bucketRef, out []posting) ([]posting, error) {
	args := make([]any, 0, 2+len(bs))
	args = append(args, kind, key)
	for _, b := range bs {
		args = append(args, b.last)
	}
	rows, err := tx.QueryContext(ctx, `SELECT bucket, entries FROM audit_key_postings WHERE kind = ? AND key = ? AND bucket IN (?`+
		strings.Repeat(", ?", len(bs)-1)+`)`, args...)
	if err != nil {
		return out, err
	}
	defer rows.Close()
	var ps []posting
	for rows.Next() {
		var (
			b       int64
			entries []byte
		)
		if err := rows.Scan(&b, &entries); err != nil {
			return out, err
		}
		if ps, err = decodePostings(ps[:0], entries); err != nil {
			return out, fmt.Errorf("audit search index, bucket %d: %w; the index is derived from the records and can be rebuilt (docs/audit.md, \"The search index\")", b, err)
		}
		for _, p := range ps {
			if k.keep(p) {
				out = append(out, p)
			}
		}
	}
	return out, rows.Err()
}

// keep reports whether a posting can match the search's time range,
// cursor and archived prefix (the row is checked again when read).
func (k *keySearch) keep(p posting) bool {
	switch {
	case p.seq <= k.archived,
		!k.q.Since.IsZero() && p.time < toMicros(k.q.Since),
		!k.q.Until.IsZero() && p.time >= toMicros(k.q.Until),
		k.cur != nil && !k.cur.after(p):
		return false
	}
	return true
}

// fetch reads the records ps name that match every filter, newest first.
func (k *keySearch) fetch(ctx context.Context, tx *sql.Tx, ps []posting) ([]store.AuditEvent, error) {
	args := make([]any, 0, len(ps)+len(k.args))
	for _, p := range ps {
		args = append(args, p.seq)
	}
	args = append(args, k.args...)
	evs, err := listRows(ctx, tx, scanAudit, `SELECT `+auditCols+` FROM audit_events NOT INDEXED WHERE seq IN (?`+
		strings.Repeat(", ?", len(ps)-1)+`) AND `+k.where+` ORDER BY time DESC, seq DESC`, args...)
	return evs, err
}
