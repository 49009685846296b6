package sqlite

import (
	"path/filepath"
	"testing"
)

// TestMigrateBreakGlass: schema 17 leaves what schema 16 had as it was:
// users are no emergency accounts, apps no emergency apps, sessions carry
// no time bound of their own, and there are no uses.
func TestMigrateBreakGlass(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 16)
	if _, err := db.ExecContext(ctx, `
INSERT INTO users (name, password_hash, totp_secret, disabled, created_at) VALUES ('nurse', '', '', 0, 1);
INSERT INTO segments (name, cidrs, created_at) VALUES ('clinical', '["10.20.0.0/24"]', 1);
INSERT INTO apps (name, segment, dns_name, addr, proto, ports, classification, created_at) VALUES
	('ehr', 'clinical', 'ehr.hosp.internal', '10.20.0.5/32', 6, '[]', 'phi', 1);
INSERT INTO overlay_leases (addr) VALUES (9);
INSERT INTO devices (id, user_name, hostname, public_key, overlay_addr, created_at, mfa_at, revoked_at) VALUES
	('dev-1', 'nurse', 'ws1', '4Jv5Kr5wdC9Z8/pAZYDU86U9NtXeUkKTAMD44GN1Pxw=', 9, 1, 0, 0);
INSERT INTO sessions (id, device_id, user_name, method, source, started_at, last_activity, mfa_at, ended_at, end_reason) VALUES
	('ses-1', 'dev-1', 'nurse', 'password+totp', '192.0.2.7', 1, 1, 1, 0, '');`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := s.GetUser(ctx, "nurse")
	if err != nil || u.BreakGlass {
		t.Fatalf("migrated user = %+v, %v: want an ordinary user", u, err)
	}
	a, err := s.GetApp(ctx, "ehr")
	if err != nil || a.Emergency {
		t.Fatalf("migrated app = %+v, %v: want no emergency app", a, err)
	}
	sess, err := s.GetSession(ctx, "ses-1")
	if err != nil || !sess.ExpiresAt.IsZero() || sess.BreakGlass != "" {
		t.Fatalf("migrated session = %+v, %v: want no time bound and no break-glass use", sess, err)
	}
	uses, err := s.ListBreakGlassUses(ctx)
	if err != nil || len(uses) != 0 {
		t.Fatalf("break-glass uses after migration = %+v, %v: want none", uses, err)
	}
}
