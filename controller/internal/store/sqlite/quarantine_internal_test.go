package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// TestMigrateDeviceQuarantine: schema 16 leaves a device of schema 15
// unquarantined, and its key is found by the new index.
func TestMigrateDeviceQuarantine(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 15)
	const key = "4Jv5Kr5wdC9Z8/pAZYDU86U9NtXeUkKTAMD44GN1Pxw="
	if _, err := db.ExecContext(ctx, `
INSERT INTO users (name, password_hash, totp_secret, disabled, created_at) VALUES ('nurse', '', '', 0, 1);
INSERT INTO overlay_leases (addr) VALUES (9);
INSERT INTO devices (id, user_name, hostname, public_key, overlay_addr, created_at, mfa_at, revoked_at) VALUES
	('dev-1', 'nurse', 'ws1', '`+key+`', 9, 1, 0, 0);`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.GetDevice(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Quarantine != (store.Quarantine{}) {
		t.Fatalf("migrated device has quarantine %+v, want none", d.Quarantine)
	}
	byKey, err := s.ListDevicesByKey(ctx, d.PublicKey)
	if err != nil || len(byKey) != 1 || byKey[0].ID != "dev-1" {
		t.Fatalf("ListDevicesByKey = %+v, %v: want dev-1", byKey, err)
	}
}
