package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationReviews (schema 18): access review campaigns and their lines.
// A line's entitlement and evidence are fixed at the campaign's start
// (data, JSON); only its decision columns change.
const migrationReviews = `
CREATE TABLE review_campaigns (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	scope          TEXT NOT NULL,
	reviewers      TEXT NOT NULL,     -- JSON array of admin names
	due            INTEGER NOT NULL,  -- unix µs
	stale_days     INTEGER NOT NULL,
	recent_days    INTEGER NOT NULL,
	policy_version INTEGER NOT NULL,  -- 0: the one-by-one directory
	created_at     INTEGER NOT NULL,
	created_by     TEXT NOT NULL,
	closed_at      INTEGER NOT NULL DEFAULT 0, -- 0: open
	closed_by      TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE TABLE review_lines (
	campaign   TEXT NOT NULL REFERENCES review_campaigns(id) ON DELETE CASCADE,
	line       INTEGER NOT NULL,
	data       TEXT NOT NULL,              -- JSON: the entitlement, evidence and flags
	decision   TEXT NOT NULL DEFAULT '',
	keep_ports TEXT NOT NULL DEFAULT '',
	comment    TEXT NOT NULL DEFAULT '',
	decided_by TEXT NOT NULL DEFAULT '',
	decided_at INTEGER NOT NULL DEFAULT 0,
	applied_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (campaign, line)
) STRICT, WITHOUT ROWID;
`

const reviewCols = `id, name, scope, reviewers, due, stale_days, recent_days, policy_version, created_at, created_by, closed_at, closed_by`

func scanReview(r rowScanner) (store.ReviewCampaign, error) {
	var (
		c                      store.ReviewCampaign
		reviewers              string
		due, created, closedAt int64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.Scope, &reviewers, &due, &c.StaleDays, &c.RecentDays, &c.PolicyVersion,
		&created, &c.CreatedBy, &closedAt, &c.ClosedBy); err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(reviewers), &c.Reviewers); err != nil {
		return c, fmt.Errorf("campaign %q: reviewers: %w", c.ID, err)
	}
	c.Due, c.CreatedAt, c.ClosedAt = fromMicros(due), fromMicros(created), fromOptMicros(closedAt)
	return c, nil
}

// reviewData is what column data holds: a line less its decision.
func reviewData(l store.ReviewLine) ([]byte, error) {
	l.N, l.Decision, l.KeepPorts, l.Comment, l.DecidedBy = 0, "", "", "", ""
	l.DecidedAt, l.AppliedAt = time.Time{}, time.Time{}
	return json.Marshal(l)
}

func scanReviewLine(r rowScanner) (store.ReviewLine, error) {
	var (
		l                store.ReviewLine
		data             string
		decided, applied int64
	)
	if err := r.Scan(&l.N, &data, &l.Decision, &l.KeepPorts, &l.Comment, &l.DecidedBy, &decided, &applied); err != nil {
		return l, err
	}
	n := l.N
	dec := l
	if err := json.Unmarshal([]byte(data), &l); err != nil {
		return l, fmt.Errorf("review line %d: %w", n, err)
	}
	l.N, l.Decision, l.KeepPorts, l.Comment, l.DecidedBy = n, dec.Decision, dec.KeepPorts, dec.Comment, dec.DecidedBy
	l.DecidedAt, l.AppliedAt = fromOptMicros(decided), fromOptMicros(applied)
	return l, nil
}

// CreateReview implements [store.ReviewStore].
func (s *Store) CreateReview(ctx context.Context, c store.ReviewCampaign) error {
	reviewers, err := json.Marshal(slices.Sorted(slices.Values(c.Reviewers)))
	if err != nil {
		return fmt.Errorf("create review %q: %w", c.ID, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO review_campaigns (`+reviewCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')`,
			c.ID, c.Name, c.Scope, string(reviewers), toMicros(c.Due), c.StaleDays, c.RecentDays, c.PolicyVersion,
			toMicros(c.CreatedAt), c.CreatedBy)
		if err != nil {
			return insertErr(err)
		}
		for _, l := range c.Lines {
			data, err := reviewData(l)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO review_lines (campaign, line, data) VALUES (?, ?, ?)`,
				c.ID, l.N, string(data)); err != nil {
				return insertErr(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create review %q: %w", c.ID, err)
	}
	return nil
}

// GetReview implements [store.ReviewStore].
func (s *Store) GetReview(ctx context.Context, id string) (store.ReviewCampaign, error) {
	var c store.ReviewCampaign
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if c, err = getRow(ctx, tx, scanReview, `SELECT `+reviewCols+` FROM review_campaigns WHERE id = ?`, id); err != nil {
			return err
		}
		c.Lines, err = reviewLines(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.ReviewCampaign{}, fmt.Errorf("get review %q: %w", id, err)
	}
	return c, nil
}

func reviewLines(ctx context.Context, q queryer, id string) ([]store.ReviewLine, error) {
	return listRows(ctx, q, scanReviewLine, `SELECT line, data, decision, keep_ports, comment, decided_by, decided_at, applied_at
		FROM review_lines WHERE campaign = ? ORDER BY line`, id)
}

// ListReviews implements [store.ReviewStore].
func (s *Store) ListReviews(ctx context.Context) ([]store.ReviewCampaign, error) {
	var out []store.ReviewCampaign
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = listRows(ctx, tx, scanReview, `SELECT `+reviewCols+` FROM review_campaigns ORDER BY created_at DESC, id`); err != nil {
			return err
		}
		for i := range out {
			if out[i].Lines, err = reviewLines(ctx, tx, out[i].ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list reviews: %w", err)
	}
	return out, nil
}

// PutReviewLine implements [store.ReviewStore].
func (s *Store) PutReviewLine(ctx context.Context, id string, l store.ReviewLine) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE review_lines SET decision = ?, keep_ports = ?, comment = ?, decided_by = ?, decided_at = ?, applied_at = ?
			WHERE campaign = ? AND line = ?`,
			l.Decision, l.KeepPorts, l.Comment, l.DecidedBy, optMicros(l.DecidedAt), optMicros(l.AppliedAt), id, l.N)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("store line %d of review %q: %w", l.N, id, err)
	}
	return nil
}

// CloseReview implements [store.ReviewStore].
func (s *Store) CloseReview(ctx context.Context, id, by string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE review_campaigns SET closed_at = ?, closed_by = ? WHERE id = ? AND closed_at = 0`,
			toMicros(at), by, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM review_campaigns WHERE id = ?`, id); err != nil {
			return err
		} else if !ok {
			return store.ErrNotFound
		}
		return store.ErrStale
	})
	if err != nil {
		return fmt.Errorf("close review %q: %w", id, err)
	}
	return nil
}
