// Package witness keeps, in a gateway's state directory, the latest audit
// log checkpoint the controller sent it, and refuses a new one that does
// not extend it. A controller whose log was rolled back, truncated or
// replaced by a forgery cannot show such a gateway a consistent checkpoint
// (pkg/auditlog.Consistent), so every gateway that saw the log before is a
// witness against it.
//
// The log's public key is pinned by the first checkpoint the gateway
// accepts (trust on first use, like the CA it enrolled with); a checkpoint
// signed by another key is refused as well. Both files are plain text: the
// checkpoint is a signed note an auditor can hand to cordonctl audit
// verify --checkpoint.
package witness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/atomicfile"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Files in the state directory.
const (
	KeyFile        = "audit-log.pub"    // the pinned verifier key
	CheckpointFile = "audit-checkpoint" // the latest accepted checkpoint (signed note)
)

// ErrRefused is wrapped by every refusal of Offer.
var ErrRefused = errors.New("audit log checkpoint refused")

// Witness is one gateway's held checkpoint. Safe for concurrent use.
type Witness struct {
	dir string

	mu   sync.Mutex
	key  string               // pinned; "" until the first checkpoint
	held *auditlog.Checkpoint // nil until the first
	note []byte
}

// Open loads the held checkpoint of dir, if any. A checkpoint file that
// does not verify with the pinned key is an error naming both files: the
// gateway must not quietly forget what it witnessed.
func Open(dir string) (*Witness, error) {
	w := &Witness{dir: dir}
	key, err := os.ReadFile(filepath.Join(dir, KeyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return w, nil
	case err != nil:
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	w.key = strings.TrimSpace(string(key))
	note, err := os.ReadFile(filepath.Join(dir, CheckpointFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return w, nil
	case err != nil:
		return nil, fmt.Errorf("held audit log checkpoint: %w", err)
	}
	c, err := auditlog.OpenCheckpoint(note, w.key)
	if err != nil {
		return nil, fmt.Errorf("held audit log checkpoint %s does not verify with %s: %w (someone changed one of them; keep both for the investigation, then remove them to pin the controller's key again)",
			filepath.Join(dir, CheckpointFile), filepath.Join(dir, KeyFile), err)
	}
	w.held, w.note = &c, note
	return w, nil
}

// Size is the size of the held checkpoint (0: none), for Hello.AuditLogSize.
func (w *Witness) Size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held == nil {
		return 0
	}
	return w.held.Size
}

// Held returns the held checkpoint's signed note (nil: none).
func (w *Witness) Held() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.note
}

// Offer checks a checkpoint the controller sent and, if it extends the one
// held (or none is held), keeps it and returns it. Otherwise it returns an
// error wrapping ErrRefused (and auditlog.ErrInconsistent when the logs
// contradict each other) and keeps the one held.
func (w *Witness) Offer(ac *controlproto.AuditCheckpoint) (auditlog.Checkpoint, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.key != "" && ac.Key != w.key {
		return auditlog.Checkpoint{}, fmt.Errorf("%w: it is signed by key %q, not the pinned %q: the controller's audit log was replaced", ErrRefused, clip(ac.Key), w.key)
	}
	c, err := auditlog.OpenCheckpoint([]byte(ac.Checkpoint), ac.Key)
	if err != nil {
		return auditlog.Checkpoint{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if w.held != nil {
		if c.Size > w.held.Size && ac.Since != w.held.Size {
			return auditlog.Checkpoint{}, fmt.Errorf("%w: its proof starts at %d records, this gateway holds %d", ErrRefused, ac.Since, w.held.Size)
		}
		if err := auditlog.Consistent(*w.held, c, ac.Proof); err != nil {
			return auditlog.Checkpoint{}, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if c.Size == w.held.Size {
			return c, nil // the same checkpoint again
		}
	}
	if w.key == "" {
		if err := atomicfile.WriteFile(filepath.Join(w.dir, KeyFile), []byte(ac.Key+"\n"), 0o600); err != nil {
			return auditlog.Checkpoint{}, fmt.Errorf("pin the audit log key: %w", err)
		}
		w.key = ac.Key
	}
	if err := atomicfile.WriteFile(filepath.Join(w.dir, CheckpointFile), []byte(ac.Checkpoint), 0o600); err != nil {
		return auditlog.Checkpoint{}, fmt.Errorf("keep the audit log checkpoint: %w", err)
	}
	w.held, w.note = &c, []byte(ac.Checkpoint)
	return c, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// AcknowledgedSuffix starts the suffix of the files [Acknowledge] sets
// aside; the time follows.
const AcknowledgedSuffix = ".acknowledged-"

// Acknowledge is the operator's explicit acceptance of a controller whose
// audit log went back (a restore from a backup): it renames the held
// checkpoint and the pinned key to NAME.acknowledged-TIME in dir, where they
// stay as evidence of what this gateway had witnessed, so that the next
// start pins the controller's log again. It returns the checkpoint it set
// aside (nil: none was held) and the new file names.
//
// The gateway must be stopped: a running one holds the checkpoint in
// memory too and goes on refusing until it restarts. A held checkpoint
// that does not verify with the pinned key is an error (Open's): that is
// not a restore to acknowledge but an investigation.
func Acknowledge(dir string, now time.Time) (*auditlog.Checkpoint, []string, error) {
	w, err := Open(dir)
	if err != nil {
		return nil, nil, err
	}
	suffix := AcknowledgedSuffix + now.UTC().Format("20060102T150405Z")
	var moved []string
	for _, name := range []string{CheckpointFile, KeyFile} {
		from := filepath.Join(dir, name)
		to := from + suffix
		if err := os.Rename(from, to); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, moved, fmt.Errorf("acknowledge the audit log roll back: %w", err)
		}
		moved = append(moved, to)
	}
	return w.held, moved, nil
}
