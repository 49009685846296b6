package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// TestLoginRecoveryCode: `cordon login --recovery-code` signs in once per
// code in place of the authenticator code.
func TestLoginRecoveryCode(t *testing.T) {
	srv := apitest.New(t, apitest.Options{})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	admin, err := adminapi.New(srv.URL, srv.AdminToken, srv.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const pw = "correct horse battery"
	u, err := admin.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: "nurse", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	cfg := LoginConfig{StateDir: t.TempDir(), Controller: srv.URL, CACert: ca, User: "nurse", Password: pw, RecoveryCode: u.RecoveryCodes[0]}
	e, err := Login(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.User != "nurse" || e.ID == "" {
		t.Fatalf("enrollment %+v", e)
	}
	if _, err := Login(t.Context(), cfg); !adminapi.IsCode(err, adminapi.CodeUnauthorized) {
		t.Fatalf("second use of the code: %v", err)
	}
	// Signing in again needs no flags: the controller, its CA and the
	// user come from the device's enrollment, and it stays the same
	// device. The CA file is gone, so only the pinned one can be used.
	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	again, err := Login(t.Context(), LoginConfig{StateDir: cfg.StateDir, Password: pw, RecoveryCode: u.RecoveryCodes[1]})
	if err != nil {
		t.Fatalf("plain 'cordon login': %v", err)
	}
	if again.User != "nurse" || again.ID != e.ID || again.Controller != srv.URL {
		t.Fatalf("second sign-in %+v, want user nurse on device %s at %s", again, e.ID, srv.URL)
	}
	// A device that never signed in still needs the controller.
	if _, err := Login(t.Context(), LoginConfig{StateDir: t.TempDir(), Password: pw, RecoveryCode: u.RecoveryCodes[2]}); err == nil || !strings.Contains(err.Error(), "--controller") {
		t.Fatalf("first sign-in without --controller: %v", err)
	}
}
