package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/internal/oidctest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func oidcRig(t *testing.T) (*apitest.Server, *oidctest.IdP, string) {
	t.Helper()
	idp, err := oidctest.Start(oidctest.Options{DevicePoll: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddUser(oidctest.User{Username: "alice", Password: "pw", Groups: []string{"Physicians"}})
	srv := apitest.New(t, apitest.Options{OIDCIssuer: idp.Issuer})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, idp, ca
}

// TestLoginOIDCCode: `cordon login --idp test` with a browser that signs
// in at the IdP; signing in again re-enrolls the same device.
func TestLoginOIDCCode(t *testing.T) {
	srv, idp, ca := oidcRig(t)
	provs, err := OIDCProviders(t.Context(), t.TempDir(), srv.URL, ca)
	if err != nil || len(provs) != 1 || provs[0].Name != "test" {
		t.Fatalf("providers: %+v %v", provs, err)
	}
	dir := t.TempDir()
	var out syncBuf
	cfg := OIDCLoginConfig{StateDir: dir, Controller: srv.URL, CACert: ca, IdP: "test", Browser: idp.Browser("alice", "pw"), Out: &out}
	e, err := LoginOIDC(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.User != "alice" || e.ID == "" {
		t.Fatalf("enrollment: %+v", e)
	}
	e2, err := LoginOIDC(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e2.ID != e.ID {
		t.Errorf("second sign-in enrolled device %s, want the same %s", e2.ID, e.ID)
	}

	// A wrong password at the IdP: the browser step fails, nothing enrolls.
	cfg.Browser = idp.Browser("alice", "wrong")
	cfg.StateDir = t.TempDir()
	if _, err := LoginOIDC(t.Context(), cfg); err == nil {
		t.Error("sign-in with a wrong IdP password succeeded")
	}
}

// TestLoginOIDCDeviceCode: `cordon login --idp test --device-code`; the
// user confirms the printed code at the IdP.
func TestLoginOIDCDeviceCode(t *testing.T) {
	srv, idp, ca := oidcRig(t)
	var out syncBuf
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go func() {
		re := regexp.MustCompile(`enter the code:\s+(\S+)`)
		for ctx.Err() == nil {
			if m := re.FindStringSubmatch(out.String()); m != nil {
				if err := idp.ApproveDevice(ctx, m[1], "alice", "pw"); err != nil {
					t.Errorf("approve: %v", err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond) // waiting for the client to print, not for a result
		}
	}()
	e, err := LoginOIDC(ctx, OIDCLoginConfig{StateDir: t.TempDir(), Controller: srv.URL, CACert: ca, IdP: "test", DeviceCode: true, Out: &out})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	if e.User != "alice" {
		t.Errorf("enrollment: %+v", e)
	}
}
