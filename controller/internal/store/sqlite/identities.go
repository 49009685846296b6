package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationIdentities (schema 7): users' links to OIDC identity providers
// (issue 5). The foreign key cascades: deleting a user (DeleteUser) drops
// its links without that code knowing they exist, and a link never points
// at a missing user. refresh_token holds what the controller gives it (a
// sealed, encrypted token).
const migrationIdentities = `
CREATE TABLE identities (
	idp           TEXT NOT NULL,
	subject       TEXT NOT NULL,
	user_name     TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	email         TEXT NOT NULL,
	claim         TEXT NOT NULL,
	groups_json   TEXT NOT NULL,    -- JSON array of strings, sorted
	refresh_token TEXT NOT NULL,    -- '' when none
	last_refresh  INTEGER NOT NULL, -- unix µs, 0: never
	invalid_at    INTEGER NOT NULL, -- unix µs, 0: valid
	created_at    INTEGER NOT NULL,
	PRIMARY KEY (idp, subject)
) STRICT;
CREATE INDEX identities_user ON identities(user_name);
`

const identityCols = `idp, subject, user_name, email, claim, groups_json, refresh_token, last_refresh, invalid_at, created_at`

func scanIdentity(r rowScanner) (store.Identity, error) {
	var (
		id                     store.Identity
		groups                 string
		last, invalid, created int64
	)
	if err := r.Scan(&id.IdP, &id.Subject, &id.User, &id.Email, &id.Claim, &groups, &id.RefreshToken, &last, &invalid, &created); err != nil {
		return id, err
	}
	if err := json.Unmarshal([]byte(groups), &id.Groups); err != nil {
		return id, fmt.Errorf("identity %s/%s: groups: %w", id.IdP, id.Subject, err)
	}
	id.LastRefresh, id.InvalidAt, id.CreatedAt = fromOptMicros(last), fromOptMicros(invalid), fromMicros(created)
	return id, nil
}

func groupsText(g []string) (string, error) {
	g = slices.Clone(g)
	slices.Sort(g)
	return jsonText(slices.Compact(g))
}

// LinkIdentity implements [store.IdentityStore].
func (s *Store) LinkIdentity(ctx context.Context, id store.Identity) (store.Identity, error) {
	if id.IdP == "" || id.Subject == "" || id.User == "" {
		return store.Identity{}, fmt.Errorf("link identity: IdP, Subject and User are required")
	}
	groups, err := groupsText(id.Groups)
	if err != nil {
		return store.Identity{}, fmt.Errorf("link identity: %w", err)
	}
	var out store.Identity
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE identities SET email = ?, claim = ?, groups_json = ?,
			refresh_token = CASE WHEN ? = '' THEN refresh_token ELSE ? END, last_refresh = ?, invalid_at = 0
			WHERE idp = ? AND subject = ?`,
			id.Email, id.Claim, groups, id.RefreshToken, id.RefreshToken, optMicros(id.LastRefresh), id.IdP, id.Subject)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			taken, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, id.User)
			if err != nil {
				return err
			}
			if taken {
				return fmt.Errorf("user %q: %w", id.User, store.ErrAlreadyExists)
			}
			created := createdAt(id.CreatedAt)
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (name, password_hash, totp_secret, disabled, created_at) VALUES (?, '', '', 0, ?)`,
				id.User, created); err != nil {
				return insertErr(err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO identities (`+identityCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
				id.IdP, id.Subject, id.User, id.Email, id.Claim, groups, id.RefreshToken, optMicros(id.LastRefresh), created); err != nil {
				return insertErr(err)
			}
		}
		out, err = getRow(ctx, tx, scanIdentity, `SELECT `+identityCols+` FROM identities WHERE idp = ? AND subject = ?`, id.IdP, id.Subject)
		return err
	})
	if err != nil {
		return store.Identity{}, fmt.Errorf("link identity %s/%s: %w", id.IdP, id.Subject, err)
	}
	return out, nil
}

// GetIdentity implements [store.IdentityStore].
func (s *Store) GetIdentity(ctx context.Context, idp, subject string) (store.Identity, error) {
	id, err := getRow(ctx, s.reader(), scanIdentity, `SELECT `+identityCols+` FROM identities WHERE idp = ? AND subject = ?`, idp, subject)
	if err != nil {
		return store.Identity{}, fmt.Errorf("get identity %s/%s: %w", idp, subject, err)
	}
	return id, nil
}

// ListIdentities implements [store.IdentityStore].
func (s *Store) ListIdentities(ctx context.Context) ([]store.Identity, error) {
	out, err := listIdentities(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	return out, nil
}

func listIdentities(ctx context.Context, q queryer) ([]store.Identity, error) {
	return listRows(ctx, q, scanIdentity, `SELECT `+identityCols+` FROM identities ORDER BY idp, subject`)
}

// UpdateIdentity implements [store.IdentityStore].
func (s *Store) UpdateIdentity(ctx context.Context, id store.Identity) error {
	groups, err := groupsText(id.Groups)
	if err != nil {
		return fmt.Errorf("update identity: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE identities SET email = ?, claim = ?, groups_json = ?, refresh_token = ?,
			last_refresh = ?, invalid_at = ? WHERE idp = ? AND subject = ?`,
			id.Email, id.Claim, groups, id.RefreshToken, optMicros(id.LastRefresh), optMicros(id.InvalidAt), id.IdP, id.Subject)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("update identity %s/%s: %w", id.IdP, id.Subject, err)
	}
	return nil
}
