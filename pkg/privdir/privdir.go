// Package privdir keeps a Cordon piece's private directory private: the
// controller's --data-dir (database, CA key, OIDC token key) and an agent's
// --state-dir (WireGuard and TLS private keys). os.MkdirAll's mode applies
// only to directories it creates, so a directory made earlier by an
// operator, a package or a volume mount may let group or others in; Ensure
// closes it.
package privdir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
)

// Mode is the mode of a private directory: its owner only.
const Mode fs.FileMode = 0o700

// Ensure creates dir (and missing parents) with Mode, or, when dir already
// exists and grants group or others any access, sets it to Mode and logs a
// warning naming the directory and the mode it had (on log, or
// slog.Default() when log is nil). A directory that is already private is
// left as it is. It fails when dir is not a directory or cannot be
// changed, saying what the operator can do.
func Ensure(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, Mode); err != nil {
			return fmt.Errorf("create %s: %w (create it, owned by the user this runs as, mode 700)", dir, err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory: point the flag at a directory this service alone uses", dir)
	}
	was := fi.Mode().Perm()
	if was&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(dir, Mode); err != nil {
		return fmt.Errorf("%s is mode %04o, open to other users, and could not be made 0700: %w (chown it to the user this runs as, or run 'chmod 700 %s')", dir, was, err, dir)
	}
	if log == nil {
		log = slog.Default()
	}
	log.Warn("private directory was open to other users: made it owner-only", "dir", dir,
		"mode_was", fmt.Sprintf("%04o", was), "mode_now", fmt.Sprintf("%04o", Mode))
	return nil
}
