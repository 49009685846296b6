package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationAdmins (schema 5): admin accounts, scoped expiring admin tokens
// and local users' recovery codes (issue 5).
//
// The schema-1 admin_tokens(name, hash) rows are moved into admin_api_tokens
// as standalone owner tokens that never expire (they were all-powerful
// before roles existed; docs/identity.md tells operators to revoke them once
// they have an owner account). A token's account reference is NULL for a
// standalone token. Recovery codes die with their user (ON DELETE CASCADE,
// like enrollment tokens with their segment: a code of a deleted user is
// void, and a user re-created under the same name must not inherit it).
const migrationAdmins = `
CREATE TABLE admins (
	name          TEXT PRIMARY KEY,
	role          TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	totp_secret   TEXT NOT NULL,
	disabled      INTEGER NOT NULL,
	created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE admin_api_tokens (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	admin        TEXT REFERENCES admins(name), -- NULL: standalone
	role         TEXT NOT NULL,
	scopes       TEXT NOT NULL,                -- JSON array of permissions, [] for the whole role
	hash         BLOB NOT NULL UNIQUE,
	created_by   TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL,             -- 0: never
	last_used_at INTEGER NOT NULL,             -- 0: never
	revoked_at   INTEGER NOT NULL              -- 0: not revoked
) STRICT;
CREATE INDEX admin_api_tokens_admin ON admin_api_tokens(admin);

INSERT INTO admin_api_tokens (id, name, admin, role, scopes, hash, created_by, created_at, expires_at, last_used_at, revoked_at)
	SELECT 'adt-' || lower(hex(randomblob(5))), name, NULL, 'owner', '[]', hash, 'migration',
		CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 0, 0, 0
	FROM admin_tokens;
DROP TABLE admin_tokens;

CREATE TABLE recovery_codes (
	seq        INTEGER PRIMARY KEY,
	user_name  TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	hash       BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	used_at    INTEGER NOT NULL, -- 0: unused
	UNIQUE (user_name, hash)
) STRICT;
`

// migrationAdminIdP (schema 8): admin accounts that sign in through an
// identity provider. idp is the provider's name (” for a local account),
// idp_subject its "sub" for the account (” until the first sign-in binds
// it). One IdP user is at most one admin account.
const migrationAdminIdP = `
ALTER TABLE admins ADD COLUMN idp TEXT NOT NULL DEFAULT '';
ALTER TABLE admins ADD COLUMN idp_subject TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX admins_idp_subject ON admins(idp, idp_subject) WHERE idp_subject != '';
`

// migrationAdminTokenAccount (schema 9): the admin account a token acts
// for. A sign-in token acts for its owner; a standalone token for the
// account that issued it, directly or through tokens it issued, so that
// disabling or deleting that account stops the token. Empty for the
// first-start token, migrated legacy tokens and tokens they issued. Tokens
// issued before schema 9 are attributed from created_by when it names an
// existing account. No foreign key: DeleteAdmin revokes the standalone
// tokens of the account in its transaction, and they stay listed.
const migrationAdminTokenAccount = `
ALTER TABLE admin_api_tokens ADD COLUMN account TEXT NOT NULL DEFAULT '';
UPDATE admin_api_tokens SET account = admin WHERE admin IS NOT NULL;
UPDATE admin_api_tokens SET account = substr(created_by, 7)
	WHERE admin IS NULL AND substr(created_by, 1, 6) = 'admin:' AND substr(created_by, 7) IN (SELECT name FROM admins);
CREATE INDEX admin_api_tokens_account ON admin_api_tokens(account) WHERE account != '';
`

// --- accounts ---

const adminCols = `name, role, password_hash, totp_secret, idp, idp_subject, disabled, created_at`

func scanAdmin(r rowScanner) (store.Admin, error) {
	var (
		a  store.Admin
		at int64
	)
	if err := r.Scan(&a.Name, &a.Role, &a.PasswordHash, &a.TOTPSecret, &a.IdP, &a.Subject, &a.Disabled, &at); err != nil {
		return a, err
	}
	a.CreatedAt = fromMicros(at)
	return a, nil
}

// CreateAdmin implements [store.AdminStore].
func (s *Store) CreateAdmin(ctx context.Context, a store.Admin) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO admins (`+adminCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			a.Name, a.Role, a.PasswordHash, a.TOTPSecret, a.IdP, a.Subject, a.Disabled, createdAt(a.CreatedAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create admin %q: %w", a.Name, err)
	}
	return nil
}

// GetAdmin implements [store.AdminStore].
func (s *Store) GetAdmin(ctx context.Context, name string) (store.Admin, error) {
	a, err := getRow(ctx, s.reader(), scanAdmin, `SELECT `+adminCols+` FROM admins WHERE name = ?`, name)
	if err != nil {
		return a, fmt.Errorf("get admin %q: %w", name, err)
	}
	return a, nil
}

// ListAdmins implements [store.AdminStore], by name.
func (s *Store) ListAdmins(ctx context.Context) ([]store.Admin, error) {
	xs, err := listRows(ctx, s.reader(), scanAdmin, `SELECT `+adminCols+` FROM admins ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list admins: %w", err)
	}
	return xs, nil
}

// SetAdminDisabled implements [store.AdminStore].
func (s *Store) SetAdminDisabled(ctx context.Context, name string, disabled bool) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE admins SET disabled = ? WHERE name = ?`, disabled, name)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("set admin %q disabled=%v: %w", name, disabled, err)
	}
	return nil
}

// BindAdminSubject implements [store.AdminStore]: the conditional UPDATE
// (idp_subject = ”) decides between concurrent first sign-ins.
func (s *Store) BindAdminSubject(ctx context.Context, name, idp, subject string) error {
	if idp == "" || subject == "" {
		return fmt.Errorf("bind admin %q: idp and subject are required", name)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE admins SET idp_subject = ? WHERE name = ? AND idp = ? AND idp_subject = ''`, subject, name, idp)
		if err != nil {
			return insertErr(err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		ok, err := exists(ctx, tx, `SELECT 1 FROM admins WHERE name = ? AND idp = ?`, name, idp)
		switch {
		case err != nil:
			return err
		case !ok:
			return store.ErrNotFound
		}
		return store.ErrTokenInvalid
	})
	if err != nil {
		return fmt.Errorf("bind admin %q to %s: %w", name, idp, err)
	}
	return nil
}

// DeleteAdmin implements [store.AdminStore].
func (s *Store) DeleteAdmin(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM admin_api_tokens WHERE admin = ?`, name); err != nil {
			return err
		}
		// Standalone tokens the account issued die with it too; revoked
		// rather than deleted, so they stay listed for the review, and
		// an account re-created under the name does not revive them.
		if _, err := tx.ExecContext(ctx, `UPDATE admin_api_tokens SET revoked_at = ? WHERE account = ? AND revoked_at = 0`,
			toMicros(time.Now()), name); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM admins WHERE name = ?`, name)
		if err != nil {
			return deleteErr(err)
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("delete admin %q: %w", name, err)
	}
	return nil
}

// --- tokens ---

const adminTokenCols = `id, name, COALESCE(admin, ''), account, role, scopes, hash, created_by, created_at, expires_at, last_used_at, revoked_at`

func scanAdminToken(r rowScanner) (store.AdminToken, error) {
	var (
		t                               store.AdminToken
		scopes                          string
		created, expires, used, revoked int64
	)
	if err := r.Scan(&t.ID, &t.Name, &t.Admin, &t.Account, &t.Role, &scopes, &t.Hash, &t.CreatedBy, &created, &expires, &used, &revoked); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(scopes), &t.Scopes); err != nil {
		return t, fmt.Errorf("decode scopes of admin token %s: %w", t.ID, err)
	}
	if len(t.Scopes) == 0 {
		t.Scopes = nil
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt = fromOptMicros(expires), fromOptMicros(used), fromOptMicros(revoked)
	return t, nil
}

// CreateAdminToken implements [store.AdminStore].
func (s *Store) CreateAdminToken(ctx context.Context, t store.AdminToken) error {
	if t.ID == "" || t.Name == "" || t.Role == "" || len(t.Hash) == 0 {
		return fmt.Errorf("create admin token: ID, Name, Role and Hash are required")
	}
	scopes, err := jsonText(t.Scopes)
	if err != nil {
		return fmt.Errorf("create admin token %s: %w", t.ID, err)
	}
	var admin sql.NullString
	if t.Admin != "" {
		admin = sql.NullString{String: t.Admin, Valid: true}
		if t.Account == "" {
			t.Account = t.Admin
		}
		if t.Account != t.Admin {
			return fmt.Errorf("create admin token %s: a sign-in token of %q cannot act for account %q", t.ID, t.Admin, t.Account)
		}
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if t.Account != "" {
			ok, err := exists(ctx, tx, `SELECT 1 FROM admins WHERE name = ?`, t.Account)
			if err != nil {
				return err
			}
			if !ok {
				return store.ErrNotFound
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO admin_api_tokens (id, name, admin, account, role, scopes, hash, created_by, created_at, expires_at, last_used_at, revoked_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, admin, t.Account, t.Role, scopes, t.Hash, t.CreatedBy, createdAt(t.CreatedAt),
			optMicros(t.ExpiresAt), optMicros(t.LastUsedAt), optMicros(t.RevokedAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create admin token %s: %w", t.ID, err)
	}
	return nil
}

// AdminTokenByHash implements [store.AdminStore] in one read transaction.
func (s *Store) AdminTokenByHash(ctx context.Context, hash []byte) (store.AdminToken, store.Admin, error) {
	var (
		t store.AdminToken
		a store.Admin
	)
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if t, err = getRow(ctx, tx, scanAdminToken, `SELECT `+adminTokenCols+` FROM admin_api_tokens WHERE hash = ?`, hash); err != nil {
			return err
		}
		if t.Account == "" {
			return nil
		}
		a, err = getRow(ctx, tx, scanAdmin, `SELECT `+adminCols+` FROM admins WHERE name = ?`, t.Account)
		if errors.Is(err, store.ErrNotFound) {
			a, err = store.Admin{}, nil // deleted: the caller refuses the token
		}
		return err
	})
	if err != nil {
		return store.AdminToken{}, store.Admin{}, fmt.Errorf("find admin token: %w", err)
	}
	return t, a, nil
}

// ListAdminTokens implements [store.AdminStore].
func (s *Store) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	xs, err := listRows(ctx, s.reader(), scanAdminToken, `SELECT `+adminTokenCols+` FROM admin_api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return xs, nil
}

// RevokeAdminToken implements [store.AdminStore].
func (s *Store) RevokeAdminToken(ctx context.Context, id string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE admin_api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, toMicros(at), id)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("revoke admin token %q: %w", id, err)
	}
	return nil
}

// TouchAdminToken implements [store.AdminStore].
func (s *Store) TouchAdminToken(ctx context.Context, id string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE admin_api_tokens SET last_used_at = ? WHERE id = ? AND last_used_at < ?`, toMicros(at), id, toMicros(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("touch admin token %q: %w", id, err)
	}
	return nil
}

// PruneAdminTokens implements [store.AdminStore].
func (s *Store) PruneAdminTokens(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		b := toMicros(before)
		res, err := tx.ExecContext(ctx, `DELETE FROM admin_api_tokens
			WHERE (expires_at != 0 AND expires_at < ?) OR (revoked_at != 0 AND revoked_at < ?)`, b, b)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune admin tokens: %w", err)
	}
	return int(n), nil
}

// --- recovery codes ---

// ReplaceRecoveryCodes implements [store.AdminStore].
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, user string, hashes [][]byte, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, user)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_name = ?`, user); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO recovery_codes (user_name, hash, created_at, used_at) VALUES (?, ?, ?, 0)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, h := range hashes {
			if len(h) == 0 {
				return errors.New("empty recovery code hash")
			}
			if _, err := stmt.ExecContext(ctx, user, h, toMicros(at)); err != nil {
				return insertErr(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replace recovery codes of user %q: %w", user, err)
	}
	return nil
}

// ListRecoveryCodes implements [store.AdminStore].
func (s *Store) ListRecoveryCodes(ctx context.Context, user string) ([]store.RecoveryCode, error) {
	xs, err := listRows(ctx, s.reader(), func(r rowScanner) (store.RecoveryCode, error) {
		var (
			c           store.RecoveryCode
			created, us int64
		)
		if err := r.Scan(&c.Hash, &created, &us); err != nil {
			return c, err
		}
		c.CreatedAt, c.UsedAt = fromMicros(created), fromOptMicros(us)
		return c, nil
	}, `SELECT hash, created_at, used_at FROM recovery_codes WHERE user_name = ? ORDER BY seq`, user)
	if err != nil {
		return nil, fmt.Errorf("list recovery codes of user %q: %w", user, err)
	}
	return xs, nil
}

// UseRecoveryCode implements [store.AdminStore]: the conditional UPDATE
// (used_at = 0) is what makes a code single use, on any engine.
func (s *Store) UseRecoveryCode(ctx context.Context, user string, hash []byte, at time.Time) (int, error) {
	var left int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE recovery_codes SET used_at = ? WHERE user_name = ? AND hash = ? AND used_at = 0`,
			toMicros(at), user, hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return store.ErrTokenInvalid
		}
		left, err = count(ctx, tx, `SELECT COUNT(*) FROM recovery_codes WHERE user_name = ? AND used_at = 0`, user)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("use recovery code of user %q: %w", user, err)
	}
	return int(left), nil
}
