package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationSessions (schema 4): sessions, and device revocation. Ended
// sessions are kept (the access review reads them); they reference their
// device by ID without a foreign key so that history outlives a deleted
// device, whose active session is ended in the same transaction instead.
const migrationSessions = `
CREATE TABLE sessions (
	id            TEXT PRIMARY KEY,
	device_id     TEXT NOT NULL,
	user_name     TEXT NOT NULL,
	method        TEXT NOT NULL,
	source        TEXT NOT NULL,
	started_at    INTEGER NOT NULL,
	last_activity INTEGER NOT NULL,
	mfa_at        INTEGER NOT NULL, -- 0: none
	ended_at      INTEGER NOT NULL, -- 0: active
	end_reason    TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_device ON sessions(device_id, started_at);
CREATE INDEX sessions_user ON sessions(user_name, started_at);
-- At most one active session per device, enforced by the database.
CREATE UNIQUE INDEX sessions_active_device ON sessions(device_id) WHERE ended_at = 0;
-- The session check reads only active sessions near a limit.
CREATE INDEX sessions_active_activity ON sessions(last_activity) WHERE ended_at = 0;
CREATE INDEX sessions_active_started ON sessions(started_at) WHERE ended_at = 0;

ALTER TABLE devices ADD COLUMN revoked_at INTEGER NOT NULL DEFAULT 0; -- unix µs, 0: not revoked
`

const sessionCols = `id, device_id, user_name, method, source, started_at, last_activity, mfa_at, ended_at, end_reason, expires_at, break_glass`

func scanSession(r rowScanner) (store.Session, error) {
	var (
		s                         store.Session
		started, last, mfa, ended int64
		expires                   int64
	)
	if err := r.Scan(&s.ID, &s.DeviceID, &s.User, &s.Method, &s.Source, &started, &last, &mfa, &ended, &s.EndReason,
		&expires, &s.BreakGlass); err != nil {
		return s, err
	}
	s.ExpiresAt = fromOptMicros(expires)
	s.StartedAt, s.LastActivity = fromMicros(started), fromMicros(last)
	s.MFAAt, s.EndedAt = fromOptMicros(mfa), fromOptMicros(ended)
	return s, nil
}

// StartSession implements [store.SessionStore].
func (s *Store) StartSession(ctx context.Context, sess store.Session) ([]store.Session, error) {
	if sess.ID == "" || sess.DeviceID == "" || sess.User == "" || sess.StartedAt.IsZero() {
		return nil, fmt.Errorf("start session: ID, DeviceID, User and StartedAt are required")
	}
	sess.StartedAt = fromMicros(toMicros(sess.StartedAt))
	if sess.LastActivity.IsZero() || sess.LastActivity.Before(sess.StartedAt) {
		sess.LastActivity = sess.StartedAt
	}
	sess.LastActivity = fromMicros(toMicros(sess.LastActivity))
	sess.MFAAt = fromOptMicros(optMicros(sess.MFAAt))
	sess.ExpiresAt = fromOptMicros(optMicros(sess.ExpiresAt))
	sess.EndedAt, sess.EndReason = time.Time{}, ""
	var replaced []store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		disabled, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ? AND disabled != 0`, sess.User)
		if err != nil {
			return err
		}
		if disabled {
			return fmt.Errorf("user %q: %w", sess.User, store.ErrDisabled)
		}
		ok, err := exists(ctx, tx, `SELECT 1 FROM devices WHERE id = ? AND user_name = ? AND revoked_at = 0`, sess.DeviceID, sess.User)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("device %q of user %q: %w", sess.DeviceID, sess.User, store.ErrNotFound)
		}
		if replaced, err = endSessions(ctx, tx, store.SessionFilter{DeviceID: sess.DeviceID}, sess.StartedAt, store.EndReplaced); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?)`,
			sess.ID, sess.DeviceID, sess.User, sess.Method, sess.Source,
			toMicros(sess.StartedAt), toMicros(sess.LastActivity), optMicros(sess.MFAAt), optMicros(sess.ExpiresAt), sess.BreakGlass)
		return insertErr(err)
	})
	if err != nil {
		return nil, fmt.Errorf("start session for device %q: %w", sess.DeviceID, err)
	}
	return replaced, nil
}

// GetSession implements [store.SessionStore].
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	sess, err := getRow(ctx, s.reader(), scanSession, `SELECT `+sessionCols+` FROM sessions WHERE id = ?`, id)
	if err != nil {
		return store.Session{}, fmt.Errorf("get session %q: %w", id, err)
	}
	return sess, nil
}

// sessionWhere builds the WHERE clause of f (always valid SQL).
func sessionWhere(f store.SessionFilter) (string, []any) {
	conds := []string{"1"}
	var args []any
	for col, v := range map[string]string{"id": f.ID, "user_name": f.User, "device_id": f.DeviceID} {
		if v != "" {
			conds = append(conds, col+" = ?")
			args = append(args, v)
		}
	}
	if f.ActiveOnly {
		conds = append(conds, "ended_at = 0")
	}
	return strings.Join(conds, " AND "), args
}

// ListSessions implements [store.SessionStore], newest first.
func (s *Store) ListSessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	where, args := sessionWhere(f)
	out, err := listRows(ctx, s.reader(), scanSession,
		`SELECT `+sessionCols+` FROM sessions WHERE `+where+` ORDER BY started_at DESC, id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// listLatestSessions returns each device's newest session, active or not.
func listLatestSessions(ctx context.Context, q queryer) ([]store.Session, error) {
	return listRows(ctx, q, scanSession, `SELECT `+sessionCols+` FROM sessions s
		WHERE s.id = (SELECT id FROM sessions WHERE device_id = s.device_id ORDER BY started_at DESC, ended_at = 0 DESC LIMIT 1)
		ORDER BY device_id`)
}

// ListSessionsDue implements [store.SessionStore], sorted by device ID.
func (s *Store) ListSessionsDue(ctx context.Context, activityBefore, startedBefore, expiresBy time.Time) ([]store.Session, error) {
	// Three range searches on the partial indexes: an OR, or an ORDER BY,
	// makes SQLite walk every active session instead.
	var out []store.Session
	err := s.read(ctx, func(tx *sql.Tx) error {
		seen := map[string]bool{}
		for _, q := range []struct {
			cond string
			t    time.Time
		}{{"last_activity < ?", activityBefore}, {"started_at < ?", startedBefore}, {"expires_at > 0 AND expires_at <= ?", expiresBy}} {
			xs, err := listRows(ctx, tx, scanSession, `SELECT `+sessionCols+` FROM sessions WHERE ended_at = 0 AND `+q.cond, toMicros(q.t))
			if err != nil {
				return err
			}
			for _, x := range xs {
				if !seen[x.ID] {
					seen[x.ID] = true
					out = append(out, x)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions due: %w", err)
	}
	slices.SortFunc(out, func(a, b store.Session) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return out, nil
}

// TouchSessions implements [store.SessionStore].
func (s *Store) TouchSessions(ctx context.Context, last map[string]time.Time) error {
	if len(last) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for id, t := range last {
			if _, err := tx.ExecContext(ctx, `UPDATE sessions SET last_activity = ? WHERE id = ? AND ended_at = 0 AND last_activity < ?`,
				toMicros(t), id, toMicros(t)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record session activity: %w", err)
	}
	return nil
}

// EndSessions implements [store.SessionStore].
func (s *Store) EndSessions(ctx context.Context, f store.SessionFilter, at time.Time, reason string) ([]store.Session, error) {
	if f.ID == "" && f.User == "" && f.DeviceID == "" {
		return nil, errors.New("end sessions: select them by ID, user or device")
	}
	var out []store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = endSessions(ctx, tx, f, at, reason)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("end sessions: %w", err)
	}
	return out, nil
}

func endSessions(ctx context.Context, tx *sql.Tx, f store.SessionFilter, at time.Time, reason string) ([]store.Session, error) {
	f.ActiveOnly = true
	where, args := sessionWhere(f)
	ended, err := listRows(ctx, tx, scanSession, `UPDATE sessions SET ended_at = ?, end_reason = ? WHERE `+where+` RETURNING `+sessionCols,
		append([]any{toMicros(at), reason}, args...)...)
	if err != nil {
		return nil, err
	}
	return ended, nil
}

// RevokeDevice implements [store.SessionStore].
func (s *Store) RevokeDevice(ctx context.Context, id string, at time.Time) ([]store.Session, error) {
	var out []store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, toMicros(at), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			ok, err := exists(ctx, tx, `SELECT 1 FROM devices WHERE id = ?`, id)
			if err != nil {
				return err
			}
			if !ok {
				return store.ErrNotFound
			}
		}
		out, err = endSessions(ctx, tx, store.SessionFilter{DeviceID: id}, at, store.EndDeviceRevoked)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke device %q: %w", id, err)
	}
	return out, nil
}
