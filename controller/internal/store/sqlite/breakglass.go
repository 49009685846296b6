package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationBreakGlass (schema 17): break-glass emergency access.
// Emergency accounts are local users marked break_glass (their sealed
// one-time codes are recovery_codes rows); apps marked emergency are all a
// break-glass session reaches; a session carries its own time bound and
// the use that started it; each use is kept with its reviews, without a
// foreign key to the user, so the record outlives the account.
const migrationBreakGlass = `
ALTER TABLE users ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN emergency INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0; -- unix µs, 0: only the absolute limit
ALTER TABLE sessions ADD COLUMN break_glass TEXT NOT NULL DEFAULT '';  -- break_glass_uses.id
-- The session check reads the active sessions whose own bound passed.
CREATE INDEX sessions_active_expires ON sessions(expires_at) WHERE ended_at = 0 AND expires_at > 0;

CREATE TABLE break_glass_uses (
	id            TEXT PRIMARY KEY,
	user_name     TEXT NOT NULL,
	device_id     TEXT NOT NULL,
	session_id    TEXT NOT NULL,
	source        TEXT NOT NULL,
	justification TEXT NOT NULL,
	started_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX break_glass_uses_started ON break_glass_uses(started_at);

CREATE TABLE break_glass_reviews (
	use_id   TEXT NOT NULL REFERENCES break_glass_uses(id),
	reviewer TEXT NOT NULL,
	at       INTEGER NOT NULL,
	comment  TEXT NOT NULL,
	PRIMARY KEY (use_id, reviewer) -- one sign-off per admin
) STRICT;
`

const breakGlassCols = `id, user_name, device_id, session_id, source, justification, started_at, expires_at`

func scanBreakGlassUse(r rowScanner) (store.BreakGlassUse, error) {
	var (
		u                store.BreakGlassUse
		started, expires int64
	)
	if err := r.Scan(&u.ID, &u.User, &u.DeviceID, &u.SessionID, &u.Source, &u.Justification, &started, &expires); err != nil {
		return u, err
	}
	u.StartedAt, u.ExpiresAt = fromMicros(started), fromMicros(expires)
	return u, nil
}

// reviewRow is a review with the use it belongs to.
type reviewRow struct {
	use string
	rv  store.BreakGlassReview
}

func scanBreakGlassReview(r rowScanner) (reviewRow, error) {
	var (
		x  reviewRow
		at int64
	)
	if err := r.Scan(&x.use, &x.rv.Reviewer, &at, &x.rv.Comment); err != nil {
		return x, err
	}
	x.rv.At = fromMicros(at)
	return x, nil
}

// CreateBreakGlassUse implements [store.BreakGlassStore].
func (s *Store) CreateBreakGlassUse(ctx context.Context, u store.BreakGlassUse) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO break_glass_uses (`+breakGlassCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.User, u.DeviceID, u.SessionID, u.Source, u.Justification, toMicros(u.StartedAt), toMicros(u.ExpiresAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create break-glass use %q: %w", u.ID, err)
	}
	return nil
}

// GetBreakGlassUse implements [store.BreakGlassStore].
func (s *Store) GetBreakGlassUse(ctx context.Context, id string) (store.BreakGlassUse, error) {
	var u store.BreakGlassUse
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if u, err = getRow(ctx, tx, scanBreakGlassUse, `SELECT `+breakGlassCols+` FROM break_glass_uses WHERE id = ?`, id); err != nil {
			return err
		}
		rs, err := listRows(ctx, tx, scanBreakGlassReview, `SELECT use_id, reviewer, at, comment FROM break_glass_reviews WHERE use_id = ? ORDER BY at, reviewer`, id)
		if err != nil {
			return err
		}
		for _, r := range rs {
			u.Reviews = append(u.Reviews, r.rv)
		}
		return nil
	})
	if err != nil {
		return store.BreakGlassUse{}, fmt.Errorf("get break-glass use %q: %w", id, err)
	}
	return u, nil
}

// ListBreakGlassUses implements [store.BreakGlassStore].
func (s *Store) ListBreakGlassUses(ctx context.Context) ([]store.BreakGlassUse, error) {
	var out []store.BreakGlassUse
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = listRows(ctx, tx, scanBreakGlassUse, `SELECT `+breakGlassCols+` FROM break_glass_uses ORDER BY started_at DESC, id`); err != nil {
			return err
		}
		rs, err := listRows(ctx, tx, scanBreakGlassReview, `SELECT use_id, reviewer, at, comment FROM break_glass_reviews ORDER BY at, reviewer`)
		if err != nil {
			return err
		}
		byID := make(map[string]int, len(out))
		for i, u := range out {
			byID[u.ID] = i
		}
		for _, r := range rs {
			if i, ok := byID[r.use]; ok {
				out[i].Reviews = append(out[i].Reviews, r.rv)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list break-glass uses: %w", err)
	}
	return out, nil
}

// AddBreakGlassReview implements [store.BreakGlassStore]; the primary key
// (use, reviewer) is what refuses a second sign-off of one admin.
func (s *Store) AddBreakGlassReview(ctx context.Context, id string, r store.BreakGlassReview) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM break_glass_uses WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO break_glass_reviews (use_id, reviewer, at, comment) VALUES (?, ?, ?, ?)`,
			id, r.Reviewer, toMicros(r.At), r.Comment)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("review break-glass use %q: %w", id, err)
	}
	return nil
}
