// Package ledger is the controller's side of the verifiable audit log
// (pkg/auditlog): it signs checkpoints of the log the store keeps, checks
// the whole stored log against them (Verify), writes export bundles
// (Export) and proves to gateways and auditors that a newer checkpoint
// extends an older one (Prove).
//
// # Checkpoints
//
// [Ledger.Run] is the one goroutine that signs: every Interval (2 s) it
// reads the log's size and, if the log grew since the latest checkpoint,
// signs the new tree with the controller's Ed25519 key (KeyFile, 0600 in
// the data dir, never in the database), stores the checkpoint through the
// state owner and hands it to Publish (the control server, which sends it
// to gateways). Nothing grows, nothing is signed. On stop it signs once
// more, so a clean shutdown leaves no record unsigned.
//
// Before signing it checks that the new tree extends the latest stored
// checkpoint (a consistency proof over the stored hashes). If it does not
// (the database was truncated, rolled back or had its hashes rewritten)
// the ledger signs nothing more, logs an error and records one
// audit.log.inconsistent alert: the controller never signs two
// checkpoints that contradict each other.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/secretfile"
	"golang.org/x/mod/sumdb/tlog"
)

// KeyFile holds the seed of the checkpoint signing key in the data dir.
const KeyFile = "audit-log.key"

// DefaultInterval is how often the ledger signs while records arrive.
const DefaultInterval = 2 * time.Second

// LoadKey returns the checkpoint signing key, making it on first start.
func LoadKey(dataDir string) (*auditlog.Key, error) {
	path := filepath.Join(dataDir, KeyFile)
	seed, err := secretfile.LoadOrCreate(path, auditlog.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("audit log signing key: %w (restore the file from a backup: a new key cannot extend checkpoints the old one signed)", err)
	}
	return auditlog.NewKey(seed)
}

// Config wires a Ledger.
type Config struct {
	Store    store.Store      // required: reads the log
	State    *state.State     // required: stores checkpoints, records alerts
	Key      *auditlog.Key    // required
	Now      func() time.Time // default time.Now
	Publish  func(Signed)     // each new checkpoint, after it is stored; must not block. Nil: nobody.
	Interval time.Duration    // default DefaultInterval
	Logger   *slog.Logger
}

// Signed is a checkpoint and its signed note.
type Signed struct {
	auditlog.Checkpoint
	Note []byte
}

// Ledger signs and checks the audit log.
type Ledger struct {
	st       store.Store
	state    *state.State
	key      *auditlog.Key
	now      func() time.Time
	publish  func(Signed)
	interval time.Duration
	log      *slog.Logger

	latest atomic.Pointer[Signed] // the latest stored checkpoint; nil: none yet

	mu        sync.Mutex // serializes signing
	loaded    bool       // latest was read from the store
	lastAlert string     // kind and held size of the alert recorded last
}

// New returns a Ledger. It panics without Store, State or Key (a wiring
// bug).
func New(cfg Config) *Ledger {
	if cfg.Store == nil || cfg.State == nil || cfg.Key == nil {
		panic("ledger.New: Store, State and Key are required")
	}
	l := &Ledger{st: cfg.Store, state: cfg.State, key: cfg.Key, now: cfg.Now, publish: cfg.Publish,
		interval: cfg.Interval, log: cfg.Logger}
	if l.now == nil {
		l.now = time.Now
	}
	if l.publish == nil {
		l.publish = func(Signed) {}
	}
	if l.interval <= 0 {
		l.interval = DefaultInterval
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	return l
}

// Key is the signing key (its VerifierKey is public).
func (l *Ledger) Key() *auditlog.Key { return l.key }

// Latest returns the latest checkpoint, or nil before the first.
func (l *Ledger) Latest() *Signed { return l.latest.Load() }

// Run signs checkpoints every interval until ctx ends, then once more.
func (l *Ledger) Run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		if _, err := l.Sign(ctx); err != nil && ctx.Err() == nil {
			l.log.ErrorContext(ctx, "audit log checkpoint not signed", "err", err)
		}
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := l.Sign(fctx); err != nil {
				l.log.Error("audit log: final checkpoint not signed", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// ErrInconsistent is wrapped when the stored log does not extend the
// latest stored checkpoint: the ledger then signs nothing.
var ErrInconsistent = auditlog.ErrInconsistent

// Sign signs and stores a checkpoint of the log if it grew since the
// latest one, and returns it; nil if there was nothing new to sign.
func (l *Ledger) Sign(ctx context.Context) (*Signed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.loaded {
		if err := l.loadLocked(ctx); err != nil {
			return nil, err
		}
	}
	n, err := l.st.AuditLogSize(ctx)
	if err != nil {
		return nil, err
	}
	prev := l.latest.Load()
	if prev != nil && n < prev.Size {
		return nil, l.alertLocked(ctx, "shrunk", prev, n, tlog.Hash{}, fmt.Sprintf("the log has %d records, fewer than the %d its latest checkpoint (signed %s) covers: records were deleted from its end", n, prev.Size, prev.Time.Format(time.RFC3339)))
	}
	if n == 0 || prev != nil && n == prev.Size {
		return nil, nil
	}
	r := l.reader(ctx)
	root, err := tlog.TreeHash(n, r)
	if errors.Is(err, store.ErrNotFound) {
		return nil, l.alertLocked(ctx, "hashes", prev, n, tlog.Hash{}, fmt.Sprintf("the log's tree hashes at size %d are missing (%v): records were added or removed outside the controller", n, err))
	}
	if err != nil {
		return nil, fmt.Errorf("audit log tree hash at size %d: %w", n, err)
	}
	if prev != nil {
		proof, err := tlog.ProveTree(n, prev.Size, r)
		if err == nil {
			err = tlog.CheckTree(proof, n, root, prev.Size, prev.Root)
		}
		if err != nil {
			return nil, l.alertLocked(ctx, "fork", prev, n, root, fmt.Sprintf("the log of %d records does not extend its latest checkpoint of %d (signed %s): records were changed, or the database was rolled back or replaced (%v)", n, prev.Size, prev.Time.Format(time.RFC3339), err))
		}
	}
	c, note, err := l.key.Sign(n, root, l.now())
	if err != nil {
		return nil, err
	}
	if err := l.state.PutCheckpoint(ctx, store.Checkpoint{Size: n, Time: c.Time, Note: note}); err != nil {
		return nil, err
	}
	s := &Signed{Checkpoint: c, Note: note}
	l.latest.Store(s)
	l.lastAlert = ""
	l.publish(*s)
	return s, nil
}

// loadLocked reads the latest stored checkpoint. One not signed by our key
// is alerted and set aside: the database was replaced, or the key was.
func (l *Ledger) loadLocked(ctx context.Context) error {
	sc, err := l.st.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		l.loaded = true
		return nil
	}
	if err != nil {
		return err
	}
	c, err := auditlog.OpenCheckpoint(sc.Note, l.key.VerifierKey())
	if err != nil {
		l.loaded = true // signing goes on: gateways and auditors holding earlier checkpoints judge the log
		l.alertLocked(ctx, "key", nil, sc.Size, tlog.Hash{}, fmt.Sprintf("the latest stored checkpoint (size %d) does not verify with this controller's key %s: the database or the key file was replaced (%v)", sc.Size, l.key.VerifierKey(), err))
		return nil
	}
	l.latest.Store(&Signed{Checkpoint: c, Note: sc.Note})
	l.loaded = true
	return nil
}

// alertLocked logs and records an audit.log.inconsistent alert, and
// returns it as an error. It records one per kind of problem and held
// checkpoint: the alert is itself a record, so one per attempt would grow
// the log at every interval.
func (l *Ledger) alertLocked(ctx context.Context, kind string, held *Signed, gotSize int64, gotRoot tlog.Hash, reason string) error {
	err := fmt.Errorf("%w: %s", ErrInconsistent, reason)
	key := kind
	if held != nil {
		key += fmt.Sprint(" ", held.Size)
	}
	if key == l.lastAlert {
		return err
	}
	l.lastAlert = key
	l.log.ErrorContext(ctx, "AUDIT LOG INCONSISTENT: run cordonctl audit verify", "reason", reason)
	heldText := "none"
	if held != nil {
		heldText = sizeRoot(held.Size, held.Root)
	}
	ev := store.AuditEvent{Type: audit.AuditLogInconsistent, Outcome: string(audit.Raised), Subject: l.key.Origin(),
		Details: map[string]string{"reason": reason, "held": heldText, "got": sizeRoot(gotSize, gotRoot)}}
	if rerr := l.state.Record(ctx, state.Origin{Actor: "controller"}, ev); rerr != nil {
		l.log.ErrorContext(ctx, "audit event lost", "event", ev.Type, "err", rerr)
	}
	return err
}

func sizeRoot(n int64, h tlog.Hash) string {
	if h == (tlog.Hash{}) {
		return fmt.Sprintf("size %d", n)
	}
	return fmt.Sprintf("size %d root %s", n, h)
}

// reader makes the store's hashes a tlog.HashReader.
func (l *Ledger) reader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) { return l.st.ReadAuditHashes(ctx, ix) })
}

// Prove returns the consistency proof that the tree of size n contains the
// tree of size m (tlog.ProveTree); empty when m is 0 or equals n.
func (l *Ledger) Prove(ctx context.Context, n, m int64) (tlog.TreeProof, error) {
	if m == 0 || m == n {
		return tlog.TreeProof{}, nil
	}
	if m > n {
		return nil, fmt.Errorf("no proof that a log of %d records contains one of %d", n, m)
	}
	p, err := tlog.ProveTree(n, m, l.reader(ctx))
	if err != nil {
		return nil, fmt.Errorf("audit log consistency proof %d → %d: %w", m, n, err)
	}
	return p, nil
}
