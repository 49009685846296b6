package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/privdir"
)

// ErrNotEmpty is returned by [Restore] when the target directory holds
// anything: a restore never mixes with or overwrites a data dir.
var ErrNotEmpty = errors.New("target data dir is not empty")

// RestoreOptions configure [Restore].
type RestoreOptions struct {
	DataDir    string         // the new data dir: absent or empty; made 0700
	Identities []age.Identity // the key or passphrase the backup was encrypted to
	Progress   io.Writer      // a line per step; nil: none
}

// Result is what [Restore] restored.
type Result struct {
	Manifest *Manifest
	Audit    *ledger.Report // the restored audit log's verification; OK
}

// Restore decrypts the backup read from in into a new data dir and checks
// it whole: every file against the manifest, the database's audit log
// against the manifest's size and root and then by the ledger's Verify.
// On any error it removes what it wrote (and the directory, if it made
// it): the controller must not start on a partial restore.
func Restore(ctx context.Context, o RestoreOptions, in io.Reader) (res *Result, err error) {
	progress := progressTo(o.Progress)
	made, err := prepareTarget(o.DataDir)
	if err != nil {
		return nil, err
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range written {
			os.Remove(p)
		}
		for _, extra := range []string{"-wal", "-shm"} {
			os.Remove(filepath.Join(o.DataDir, sqlite.FileName+extra))
		}
		os.Remove(filepath.Join(o.DataDir, server.SIEMDir)) // only if empty
		if made {
			os.Remove(o.DataDir)
		}
	}()

	dec, err := age.Decrypt(in, o.Identities...)
	if err != nil {
		return nil, fmt.Errorf("restore: decrypt: %w (is it the key or passphrase the backup was made for?)", err)
	}
	tr := tar.NewReader(dec)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("restore: read manifest: %w", err)
	}
	if h.Name != manifestName {
		return nil, fmt.Errorf("restore: the first entry is %q, not the manifest: not a Cordon backup", h.Name)
	}
	m, err := parseManifest(tr)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	progress("backup of %s by cordon-controller %s: schema version %d, audit log %d records, %d files",
		m.Time.Format("2006-01-02T15:04:05Z"), m.Build, m.SchemaVersion, m.Audit.Size, len(m.Files))
	if m.SchemaVersion > sqlite.SchemaVersion() {
		return nil, fmt.Errorf("restore: the backup's schema version %d is newer than this cordon-controller's %d: restore with the version that made it (%s)", m.SchemaVersion, sqlite.SchemaVersion(), m.Build)
	}

	want := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		want[f.Name] = f
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("restore: read archive: %w", err)
		}
		f, ok := want[h.Name]
		if !ok {
			return nil, fmt.Errorf("restore: %q is not in the manifest, or is there twice: the backup was altered", h.Name)
		}
		delete(want, h.Name)
		if h.Typeflag != tar.TypeReg || h.Size != f.Size {
			return nil, fmt.Errorf("restore: %q: a regular file of %d bytes in the archive, the manifest says %d: the backup was altered", h.Name, h.Size, f.Size)
		}
		p := filepath.Join(o.DataDir, filepath.FromSlash(f.Name))
		if dir := path.Dir(f.Name); dir != "." {
			if err := os.Mkdir(filepath.Join(o.DataDir, dir), privdir.Mode); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("restore: %w", err)
			}
		}
		written = append(written, p)
		if err := writeChecked(p, f, ctxReader{ctx, tr}); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		progress("restored %s (%d bytes, mode %#o)", f.Name, f.Size, f.Mode)
	}
	// The age stream authenticates its last chunk at its end.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, fmt.Errorf("restore: decrypt: %w: the backup was altered or truncated", err)
	}
	for name := range want {
		return nil, fmt.Errorf("restore: %s is in the manifest but not in the archive: the backup was truncated", name)
	}
	if err := syncDir(o.DataDir); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}

	rep, err := verify(ctx, o.DataDir, m)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	progress("audit log verified: %d records, %d checkpoints, %d unsigned (signed at start)", rep.Records, rep.Checkpoints, rep.Unsigned)
	return &Result{Manifest: m, Audit: rep}, nil
}

// prepareTarget makes dir (0700) or checks that it is an empty directory,
// and reports whether it made it.
func prepareTarget(dir string) (made bool, err error) {
	if dir == "" {
		return false, errors.New("restore: no target data dir")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return false, fmt.Errorf("restore: %w", err)
		}
		if err := os.Mkdir(dir, privdir.Mode); err != nil {
			return false, fmt.Errorf("restore: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("restore: %w", err)
	case len(entries) > 0:
		return false, fmt.Errorf("restore: %s: %w (it holds %s): restore into a new directory, or move this one away first", dir, ErrNotEmpty, entries[0].Name())
	}
	if err := privdir.Ensure(dir, nil); err != nil {
		return false, fmt.Errorf("restore: %w", err)
	}
	return false, nil
}

// writeChecked writes the file f from r to p, created with f's mode
// before any byte is written, and checks its size and SHA-256.
func writeChecked(p string, f File, r io.Reader) error {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.Mode)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Chmod(f.Mode); err != nil { // the umask only clears bits; say what we mean
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, f.Size))
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	if n != f.Size {
		return fmt.Errorf("%s: %d of %d bytes: the backup was truncated", f.Name, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, f.SHA256) {
		return fmt.Errorf("%s: SHA-256 %s, the manifest says %s: the backup was altered", f.Name, got, f.SHA256)
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

// verify opens the restored database: the audit log must be the one the
// manifest describes and pass the ledger's verification with the
// restored signing key. The database is migrated to this build's schema
// when the backup's is older.
func verify(ctx context.Context, dir string, m *Manifest) (*ledger.Report, error) {
	st, err := sqlite.Open(ctx, filepath.Join(dir, sqlite.FileName))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	got, err := auditStateOf(ctx, st)
	if err != nil {
		return nil, err
	}
	if got.Size != m.Audit.Size || got.Root != m.Audit.Root {
		return nil, fmt.Errorf("the restored audit log has %d records, root %s; the manifest says %d, root %s: the backup was altered", got.Size, got.Root, m.Audit.Size, m.Audit.Root)
	}
	key, err := ledger.LoadKey(dir)
	if err != nil {
		return nil, err
	}
	led := ledger.New(ledger.Config{Store: st, State: state.New(state.Config{Store: st}), Key: key})
	rep, err := led.Verify(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify the audit log: %w", err)
	}
	if !rep.OK() {
		return nil, fmt.Errorf("the restored audit log does not verify: %s", strings.Join(rep.Problems, "; "))
	}
	return rep, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops reading once ctx ends (an operator's Ctrl-C during a
// large file).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
