package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are the schema, in order: migrations[i] takes the database from
// version i to i+1. Only append; never edit one that has shipped.
//
// Tables are STRICT (SQLite checks column types). Deletions that must
// cascade are done by the Go code in the same transaction, so the foreign
// keys below are plain (NO ACTION) and catch a forgotten step as an error
// instead of silently orphaning or cascading; enroll_tokens → segments is the
// one ON DELETE CASCADE (an unused token for a deleted segment is void).
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE segments (
	name       TEXT PRIMARY KEY,
	cidrs      TEXT NOT NULL,    -- JSON array of prefixes
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE apps (
	name           TEXT PRIMARY KEY,
	segment        TEXT NOT NULL REFERENCES segments(name),
	dns_name       TEXT NOT NULL,
	addr           TEXT NOT NULL, -- netip.Prefix text, '' for none
	proto          INTEGER NOT NULL,
	ports          TEXT NOT NULL, -- JSON array of {first,last}
	classification TEXT NOT NULL,
	created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX apps_segment ON apps(segment);

CREATE TABLE users (
	name          TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL,
	totp_secret   TEXT NOT NULL,
	disabled      INTEGER NOT NULL,
	created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE user_groups (
	name       TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
	group_name TEXT NOT NULL REFERENCES user_groups(name),
	user_name  TEXT NOT NULL REFERENCES users(name),
	PRIMARY KEY (group_name, user_name)
) STRICT, WITHOUT ROWID;
CREATE INDEX group_members_user ON group_members(user_name);

CREATE TABLE rules (
	name       TEXT PRIMARY KEY,
	group_name TEXT NOT NULL REFERENCES user_groups(name),
	app        TEXT NOT NULL REFERENCES apps(name),
	created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX rules_group ON rules(group_name);
CREATE INDEX rules_app ON rules(app);

-- Overlay addresses are offsets into store.OverlayPrefix (1 = 100.64.0.1).
-- Invariant: overlay_leases ∪ overlay_free = {1..H}, disjoint, where H is
-- the highest offset ever handed out; so the lowest free address is
-- MIN(overlay_free), or H+1 when nothing has been released. Both lookups are
-- one index probe. overlay_leases' primary key is the uniqueness backstop
-- across gateways and devices.
CREATE TABLE overlay_leases (addr INTEGER PRIMARY KEY) STRICT;
CREATE TABLE overlay_free (addr INTEGER PRIMARY KEY) STRICT;

CREATE TABLE gateways (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	segment      TEXT NOT NULL REFERENCES segments(name),
	public_key   TEXT NOT NULL,
	overlay_addr INTEGER NOT NULL UNIQUE REFERENCES overlay_leases(addr),
	endpoint     TEXT NOT NULL,
	created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX gateways_segment ON gateways(segment);

CREATE TABLE devices (
	id           TEXT PRIMARY KEY,
	user_name    TEXT NOT NULL REFERENCES users(name),
	hostname     TEXT NOT NULL,
	public_key   TEXT NOT NULL,
	overlay_addr INTEGER NOT NULL UNIQUE REFERENCES overlay_leases(addr),
	created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_user ON devices(user_name);

CREATE TABLE enroll_tokens (
	id         TEXT PRIMARY KEY,
	hash       BLOB NOT NULL UNIQUE,
	segment    TEXT NOT NULL REFERENCES segments(name) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,          -- NULL while unused
	used_by    TEXT NOT NULL     -- gateway ID, '' while unused
) STRICT;
CREATE INDEX enroll_tokens_segment ON enroll_tokens(segment);

-- AUTOINCREMENT: a seq is never reused, even after the newest row is gone.
CREATE TABLE audit_events (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	time    INTEGER NOT NULL,
	type    TEXT NOT NULL,
	actor   TEXT NOT NULL,
	outcome TEXT NOT NULL,
	subject TEXT NOT NULL,
	details TEXT              -- JSON object, NULL when empty
) STRICT;
CREATE INDEX audit_events_type ON audit_events(type, seq);

CREATE TABLE admin_tokens (
	name TEXT PRIMARY KEY,
	hash BLOB NOT NULL
) STRICT;
`,
	// 2: policy versions. The row with the highest version is the active
	// policy; rows are never updated or deleted.
	`
CREATE TABLE policy_versions (
	version     INTEGER PRIMARY KEY, -- 1, 2, ... assigned by PutPolicyVersion
	file        TEXT NOT NULL,
	source      BLOB NOT NULL,
	sha256      TEXT NOT NULL,       -- hex
	actor       TEXT NOT NULL,
	reason      TEXT NOT NULL,
	rollback_of INTEGER NOT NULL,    -- 0: not a rollback
	created_at  INTEGER NOT NULL
) STRICT;
`,
	// 3: when each device's user last completed MFA on it, for the policy's
	// MFA-age conditions.
	`
ALTER TABLE devices ADD COLUMN mfa_at INTEGER NOT NULL DEFAULT 0; -- unix µs, 0: never
`,
	// 4–18 live beside the code that uses them.
	migrationSessions,
	migrationAdmins,
	migrationPosture,
	migrationIdentities,
	migrationAdminIdP,
	migrationAdminTokenAccount,
	migrationRequests,
	migrationAuditLog,
	migrationAuditSearch,
	migrationFlowAcks,
	migrationGatewayDrain,
	migrationAuditKeyIndex,
	migrationDeviceQuarantine,
	migrationBreakGlass,
	migrationReviews,
}

// migrationData are steps in Go that run after the migration to the
// version they are keyed by, in its transaction.
var migrationData = map[int]func(ctx context.Context, tx *sql.Tx) error{
	11: backfillAuditLog,
	12: backfillAuditKeys,
}

// migrate brings the schema up to date in one write transaction, so two
// processes opening a new file at once do not both migrate it.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback()

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&have); err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this controller supports (%d): run a newer cordon-controller", have, len(migrations))
	}
	for v := have; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
		}
		if data := migrationData[v+1]; data != nil {
			if err := data(ctx, tx); err != nil {
				return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
			v+1, toMicros(time.Now())); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}
