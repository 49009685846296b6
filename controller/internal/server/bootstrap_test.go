package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
)

// TestBootstrapOwner: a fresh install gets one expiring owner-role token
// (file 0600, only its hash stored); a restart makes another only when no
// usable owner credential is left.
func TestBootstrapOwner(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	authority, err := ca.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, AdminTokenFile)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	boot := func(at time.Time) (string, bool) {
		t.Helper()
		before, _ := os.ReadFile(path)
		var out bytes.Buffer
		if err := bootstrapOwner(ctx, storetest.CheckAudit(t, st), dir, authority, &out, 24*time.Hour, at); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(path)
		return strings.TrimSpace(string(after)), !bytes.Equal(before, after) && out.Len() > 0
	}

	secret, made := boot(t0)
	if !made || !auth.LooksLikeAdminToken(secret) {
		t.Fatalf("fresh install: made=%v secret=%q", made, secret)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	tok, _, err := st.AdminTokenByHash(ctx, auth.HashToken(secret))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Role != "owner" || len(tok.Scopes) != 0 || !tok.ExpiresAt.Equal(t0.Add(24*time.Hour)) || tok.CreatedBy != "controller:bootstrap" {
		t.Fatalf("bootstrap token %+v", tok)
	}
	if evs, _ := st.ListAudit(ctx, store.AuditFilter{Type: "admin.admin_token.create"}); len(evs) != 1 || evs[0].Actor != "controller" {
		t.Fatalf("audit %+v", evs)
	}

	if _, made := boot(t0.Add(time.Hour)); made {
		t.Fatal("restart with a valid owner token made another")
	}
	// Expired and unused: a restart makes a new one.
	secret2, made := boot(t0.Add(25 * time.Hour))
	if !made || secret2 == secret {
		t.Fatal("restart after expiry made no new token")
	}
	// An enabled owner account is an owner credential; a disabled one is not.
	if err := st.CreateAdmin(ctx, store.Admin{Name: "alice", Role: "owner", PasswordHash: "x", TOTPSecret: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, made := boot(t0.Add(50 * time.Hour)); made {
		t.Fatal("made a token although an owner account exists")
	}
	if err := st.SetAdminDisabled(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if _, made := boot(t0.Add(50 * time.Hour)); !made {
		t.Fatal("no token although the only owner account is disabled")
	}
	// A network-admin account or a narrowed owner token does not count.
	st.CreateAdmin(ctx, store.Admin{Name: "bob", Role: "network-admin", PasswordHash: "x", TOTPSecret: "x"})
	st.CreateAdminToken(ctx, store.AdminToken{ID: "adt-n", Name: "n", Role: "owner", Scopes: []string{"read"}, Hash: []byte("n"), ExpiresAt: t0.Add(100 * time.Hour)})
	if _, made := boot(t0.Add(80 * time.Hour)); !made {
		t.Fatal("a narrowed owner token or a network-admin counted as an owner credential")
	}
	// Nor an owner token acting for a disabled account (it is refused).
	if err := st.CreateAdminToken(ctx, store.AdminToken{ID: "adt-a", Name: "a", Account: "alice", Role: "owner", Hash: []byte("a"), ExpiresAt: t0.Add(200 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, made := boot(t0.Add(110 * time.Hour)); !made {
		t.Fatal("an owner token of a disabled account counted as an owner credential")
	}
}
