package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
)

// DefaultBootstrapTokenTTL is how long the bootstrap owner token lives:
// long enough to create the first owner account, short enough that a copy
// left in a terminal scrollback or a ticket stops working.
const DefaultBootstrapTokenTTL = 24 * time.Hour

// bootstrapOwner makes sure an owner can act: when no enabled owner
// account and no usable owner token exist (a fresh install, or every
// owner credential expired, was revoked or disabled), it creates a random
// owner token that expires after ttl, stores only its hash, writes the
// secret to a 0600 file in the data directory and announces it once. There
// is no default password. Its audit actor is "admin:bootstrap".
//
// Re-issuing at start-up is safe: whoever can restart the controller and
// read its data directory already holds the database and the CA key, so
// the token grants them nothing new. It is how an installation whose only
// owner lost their authenticator recovers.
func bootstrapOwner(ctx context.Context, owner *state.State, dir string, authority *ca.CA, announce io.Writer, ttl time.Duration, now time.Time) error {
	if ttl <= 0 {
		ttl = DefaultBootstrapTokenTTL
	}
	now = now.UTC().Truncate(time.Microsecond)
	have, err := hasOwnerCredential(ctx, owner.Store(), now)
	if err != nil {
		return fmt.Errorf("read admin credentials: %w", err)
	}
	if have {
		return nil
	}
	secret, hash := auth.NewAdminToken()
	var id [5]byte
	rand.Read(id[:])
	t := store.AdminToken{
		ID: "adt-" + hex.EncodeToString(id[:]), Name: "bootstrap", Role: string(auth.RoleOwner), Hash: hash,
		CreatedBy: state.BootstrapCreator, CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	path := filepath.Join(dir, AdminTokenFile)
	// A new file each time, so it is 0600 even if an old one was not.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace owner token file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write owner token: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write owner token: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write owner token: %w", err)
	}
	details := map[string]string{"name": t.Name, "role": t.Role, "expires_at": t.ExpiresAt.Format(time.RFC3339), "reason": "bootstrap: no usable owner credential"}
	if err := owner.BootstrapOwnerToken(ctx, t, details); err != nil {
		os.Remove(path)
		return fmt.Errorf("store owner token: %w", err)
	}
	if announce != nil {
		fmt.Fprintf(announce, "No usable owner credential: created a bootstrap owner token.\n"+
			"  admin token (shown once, also in %s, mode 0600; expires %s): %s\n"+
			"  controller CA: %s (%s)\n"+
			"Configure cordonctl with: cordonctl login --controller https://HOST:PORT --token-file %s --ca-cert %s\n"+
			"Then create your own owner account (cordonctl admin create NAME --role owner) and sign in with it\n"+
			"(cordonctl login --admin NAME); the bootstrap token is for that first step only.\n",
			path, t.ExpiresAt.Format(time.RFC3339), secret, filepath.Join(dir, ca.CertFile), authority.Fingerprint(), path, filepath.Join(dir, ca.CertFile))
	}
	return nil
}

// hasOwnerCredential reports whether an enabled owner account exists, or
// a usable owner token whose scope is not narrowed.
func hasOwnerCredential(ctx context.Context, st store.Store, now time.Time) (bool, error) {
	admins, err := st.ListAdmins(ctx)
	if err != nil {
		return false, err
	}
	enabled := map[string]bool{}
	for _, a := range admins {
		if a.Role == string(auth.RoleOwner) && !a.Disabled {
			return true, nil
		}
		enabled[a.Name] = !a.Disabled
	}
	toks, err := st.ListAdminTokens(ctx)
	if err != nil {
		return false, err
	}
	for _, t := range toks {
		// A token acting for a disabled account is refused, so it does
		// not count.
		if t.Admin == "" && (t.Account == "" || enabled[t.Account]) &&
			t.Role == string(auth.RoleOwner) && len(t.Scopes) == 0 && t.Usable(now) {
			return true, nil
		}
	}
	return false, nil
}
