// Package backup makes and restores the controller's backups: everything
// of its data dir a controller on another machine needs, in one file
// encrypted with age (filippo.io/age), so the backup holds no key in
// clear.
//
// # What a backup holds
//
// A consistent copy of the SQLite database (state and audit log, taken by
// [sqlite.Copy] while the controller runs), the CA certificate and key,
// the server certificate and key, the audit log's checkpoint signing key,
// the control channel's stateless reset key and, when present, the OIDC
// token key, the bootstrap admin token and the SIEM sinks' cursors. The
// file is an age-encrypted tar whose first entry is the [Manifest]: every
// file's name, size, mode and SHA-256, the schema version and the audit
// log's size and root hash.
//
// # Restore
//
// [Restore] writes into an empty (or new) directory only, checks each file
// against the manifest as it arrives, then opens the restored database and
// runs the audit log's verification ([ledger.Ledger.Verify]) with the
// restored signing key. Anything wrong removes what it wrote and returns
// an error: a half-restored directory is never left for a controller to
// start on.
package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/internal/buildinfo"
)

// required are the files without which a backup cannot run a controller
// that agents trust and whose audit log verifies.
var required = []string{sqlite.FileName, ca.CertFile, ledger.KeyFile}

// dataFiles are the data dir's files a backup holds besides the database
// and the SIEM cursors, with the modes restore gives them. Those not
// required are copied when present.
func dataFiles() map[string]fs.FileMode {
	m := map[string]fs.FileMode{
		ledger.KeyFile:        0o600,
		server.ResetKeyFile:   0o600,
		server.AdminTokenFile: 0o600,
		oidc.TokenKeyFile:     0o600,
	}
	for name, mode := range ca.Files {
		m[name] = mode
	}
	return m
}

// maxKeyFile bounds a key or certificate file read into memory.
const maxKeyFile = 1 << 20

// Options configure [Create].
type Options struct {
	DataDir    string          // the running controller's --data-dir
	Recipients []age.Recipient // whom the backup is encrypted to; at least one
	Progress   io.Writer       // a line per step; nil: none
	Now        func() time.Time
}

// Create writes an encrypted backup of the data dir to out and returns
// its manifest. The controller may go on running: the database is copied
// in one read transaction. Clear copies stay in a private temporary
// directory (0700) that Create removes.
func Create(ctx context.Context, o Options, out io.Writer) (*Manifest, error) {
	if len(o.Recipients) == 0 {
		return nil, errors.New("backup: no recipient: give an age public key or a passphrase")
	}
	progress := progressTo(o.Progress)
	now := o.Now
	if now == nil {
		now = time.Now
	}
	tmp, err := os.MkdirTemp("", "cordon-backup-")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmp)

	// The small files first, read once (what is hashed is what is
	// written): a SIEM cursor read before the database copy is at most the
	// copy's log size, so after a restore the sink sends again rather than
	// skips.
	contents := map[string][]byte{}
	var files []File
	names, err := otherFiles(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for _, n := range names {
		b, err := readSmall(filepath.Join(o.DataDir, filepath.FromSlash(n.name)))
		if errors.Is(err, fs.ErrNotExist) && !slices.Contains(required, n.name) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup: %w (is --data-dir the controller's?)", err)
		}
		sum := sha256.Sum256(b)
		contents[n.name] = b
		files = append(files, File{Name: n.name, Size: int64(len(b)), Mode: n.mode, SHA256: hex.EncodeToString(sum[:])})
	}

	m := &Manifest{Format: Format, Time: now().UTC(), Build: buildinfo.Version()}
	dbCopy := filepath.Join(tmp, sqlite.FileName)
	start := time.Now()
	m.SchemaVersion, err = sqlite.Copy(ctx, filepath.Join(o.DataDir, sqlite.FileName), dbCopy)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if m.SchemaVersion != sqlite.SchemaVersion() {
		return nil, fmt.Errorf("backup: the database has schema version %d, this cordon-controller %d: back up with the cordon-controller binary the controller runs", m.SchemaVersion, sqlite.SchemaVersion())
	}
	if m.Audit, err = auditState(ctx, dbCopy); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	dbFile, err := hashFile(dbCopy, sqlite.FileName, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	progress("database copied: %d bytes, schema version %d, audit log %d records (%v)", dbFile.Size, m.SchemaVersion, m.Audit.Size, time.Since(start).Round(time.Millisecond))

	m.Files = append([]File{dbFile}, files...)

	enc, err := age.Encrypt(out, o.Recipients...)
	if err != nil {
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	tw := tar.NewWriter(enc)
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := writeEntry(tw, manifestName, 0o600, int64(len(mb)), bytes.NewReader(mb)); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if f.Name == sqlite.FileName {
			db, err := os.Open(dbCopy)
			if err != nil {
				return nil, fmt.Errorf("backup: %w", err)
			}
			err = writeEntry(tw, f.Name, f.Mode, f.Size, ctxReader{ctx, db})
			db.Close()
			if err != nil {
				return nil, err
			}
		} else if err := writeEntry(tw, f.Name, f.Mode, f.Size, bytes.NewReader(contents[f.Name])); err != nil {
			return nil, err
		}
		progress("added %s (%d bytes)", f.Name, f.Size)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: write archive: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	return m, nil
}

type namedMode struct {
	name string
	mode fs.FileMode
}

// otherFiles lists the data dir's files a backup holds besides the
// database, in a stable order: the known files and the SIEM cursors.
func otherFiles(dataDir string) ([]namedMode, error) {
	var out []namedMode
	for name, mode := range dataFiles() {
		out = append(out, namedMode{name, mode})
	}
	cursors, err := os.ReadDir(filepath.Join(dataDir, server.SIEMDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range cursors {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".cursor") {
			out = append(out, namedMode{path.Join(server.SIEMDir, e.Name()), 0o600})
		}
	}
	slices.SortFunc(out, func(a, b namedMode) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// auditState reads the audit log's size, root hash and latest checkpoint
// from the database copy at path.
func auditState(ctx context.Context, path string) (Audit, error) {
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return Audit{}, err
	}
	defer st.Close()
	return auditStateOf(ctx, st)
}

// auditStateOf reads the audit log's size, root hash and latest
// checkpoint from st.
func auditStateOf(ctx context.Context, st store.Store) (Audit, error) {
	var (
		a   Audit
		err error
	)
	if a.Size, err = st.AuditLogSize(ctx); err != nil {
		return Audit{}, fmt.Errorf("audit log size: %w", err)
	}
	if a.Size == 0 {
		return a, nil
	}
	root, err := tlog.TreeHash(a.Size, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) { return st.ReadAuditHashes(ctx, ix) }))
	if err != nil {
		return Audit{}, fmt.Errorf("audit log root at size %d: %w", a.Size, err)
	}
	a.Root = root.String()
	switch c, err := st.LatestCheckpoint(ctx); {
	case err == nil:
		a.Checkpoint = c.Size
	case !errors.Is(err, store.ErrNotFound):
		return Audit{}, fmt.Errorf("latest audit checkpoint: %w", err)
	}
	return a, nil
}

func hashFile(path, name string, mode fs.FileMode) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", path, err)
	}
	return File{Name: name, Size: n, Mode: mode, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes, not a key or certificate", path, maxKeyFile)
	}
	return b, nil
}

func writeEntry(tw *tar.Writer, name string, mode fs.FileMode, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: size, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("backup: write %s: %w", name, err)
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("backup: write %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("backup: write %s: %d of %d bytes (the file changed while it was read)", name, n, size)
	}
	return nil
}

func progressTo(w io.Writer) func(format string, args ...any) {
	if w == nil {
		return func(string, ...any) {}
	}
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}
