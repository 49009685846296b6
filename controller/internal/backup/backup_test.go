package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/secretfile"
)

// controller is a data dir as a running controller keeps it: the
// database open with its state owner and ledger, the CA, the keys, a
// SIEM cursor.
type controller struct {
	dir   string
	st    *sqlite.Store
	owner *state.State
	led   *ledger.Ledger
}

func newController(t testing.TB) *controller {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, err := ca.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authority.ServerCertificate([]string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if _, err := secretfile.LoadOrCreate(filepath.Join(dir, server.ResetKeyFile), 32); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, server.SIEMDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, server.SIEMDir, "soc.cursor"), []byte(`{"seq":3}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ledger.LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	owner := state.New(state.Config{Store: st})
	c := &controller{dir: dir, st: st, owner: owner, led: ledger.New(ledger.Config{Store: st, State: owner, Key: key})}
	if _, err := owner.CreateSegment(ctx, state.Origin{Actor: "admin:alice"}, store.Segment{Name: "clinical", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	c.record(t, 20)
	if _, err := c.led.Sign(ctx); err != nil {
		t.Fatal(err)
	}
	c.record(t, 3) // unsigned yet, as between two of the ledger's ticks
	return c
}

func (c *controller) record(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		if err := c.owner.Record(context.Background(), state.Origin{Actor: "user:nurse"},
			store.AuditEvent{Type: audit.AuthLogin, Outcome: "success", Subject: fmt.Sprint("nurse-", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func x25519(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func backup(t *testing.T, c *controller, r age.Recipient) ([]byte, *Manifest) {
	t.Helper()
	var out bytes.Buffer
	m, err := Create(context.Background(), Options{DataDir: c.dir, Recipients: []age.Recipient{r}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), m
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := newController(t)
	id := x25519(t)
	b, m := backup(t, c, id.Recipient())

	size, err := c.st.AuditLogSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Audit.Size != size || m.Audit.Checkpoint != size-3 || m.Audit.Root == "" || m.SchemaVersion != sqlite.SchemaVersion() {
		t.Errorf("manifest audit %+v, schema %d; want size %d, checkpoint %d, schema %d", m.Audit, m.SchemaVersion, size, size-3, sqlite.SchemaVersion())
	}
	// No key in clear: not the CA's PEM, not the signing key's bytes.
	for _, name := range []string{"ca-key.pem", ledger.KeyFile, server.ResetKeyFile} {
		secret, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, secret) {
			t.Errorf("the backup holds %s in clear", name)
		}
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(b, []byte("manifest.json")) {
		t.Error("the backup is not encrypted")
	}

	var progress bytes.Buffer
	to := filepath.Join(t.TempDir(), "restored")
	res, err := Restore(ctx, RestoreOptions{DataDir: to, Identities: []age.Identity{id}, Progress: &progress}, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Audit.OK() || res.Audit.Records != size || res.Audit.Unsigned != 3 {
		t.Errorf("restored audit report: %d records, %d unsigned, problems %q; want %d, 3, none", res.Audit.Records, res.Audit.Unsigned, res.Audit.Problems, size)
	}
	if !strings.Contains(progress.String(), "audit log verified") {
		t.Errorf("progress %q says nothing of the verification", progress.String())
	}

	// Every file is back, byte for byte, with its mode; the dir is 0700.
	if fi, err := os.Stat(to); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("restored dir: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	wantModes := map[string]fs.FileMode{"ca.pem": 0o644, "server.pem": 0o644, "ca-key.pem": 0o600, "server-key.pem": 0o600,
		ledger.KeyFile: 0o600, server.ResetKeyFile: 0o600, "siem/soc.cursor": 0o600, sqlite.FileName: 0o600}
	for name, mode := range wantModes {
		p := filepath.Join(to, filepath.FromSlash(name))
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s not restored: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
		if name == sqlite.FileName {
			continue
		}
		orig, _ := os.ReadFile(filepath.Join(c.dir, filepath.FromSlash(name)))
		got, _ := os.ReadFile(p)
		if !bytes.Equal(orig, got) {
			t.Errorf("%s differs from the original", name)
		}
	}
	if len(m.Files) != len(wantModes) {
		t.Errorf("manifest lists %d files, want %d: %+v", len(m.Files), len(wantModes), m.Files)
	}

	// The restored controller's state: it opens, holds the segment, and
	// its ledger signs on from the backup's checkpoint.
	st, err := sqlite.Open(ctx, filepath.Join(to, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.GetSegment(ctx, "clinical"); err != nil {
		t.Errorf("segment not restored: %v", err)
	}
	key, err := ledger.LoadKey(to)
	if err != nil {
		t.Fatal(err)
	}
	led := ledger.New(ledger.Config{Store: st, State: state.New(state.Config{Store: st}), Key: key})
	if s, err := led.Sign(ctx); err != nil || s == nil || s.Size != size {
		t.Errorf("restored ledger signs %+v, %v; want a checkpoint of %d", s, err, size)
	}
}

func TestPassphrase(t *testing.T) {
	c := newController(t)
	r, err := age.NewScryptRecipient("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10) // the default (2^18) takes a second; the scheme is the same
	b, _ := backup(t, c, r)
	ctx := context.Background()
	wrong, _ := age.NewScryptIdentity("incorrect horse")
	if _, err := Restore(ctx, RestoreOptions{DataDir: filepath.Join(t.TempDir(), "x"), Identities: []age.Identity{wrong}}, bytes.NewReader(b)); err == nil {
		t.Error("restore with a wrong passphrase: no error")
	}
	right, _ := age.NewScryptIdentity("correct horse battery staple")
	if _, err := Restore(ctx, RestoreOptions{DataDir: filepath.Join(t.TempDir(), "y"), Identities: []age.Identity{right}}, bytes.NewReader(b)); err != nil {
		t.Errorf("restore with the passphrase: %v", err)
	}
}

// rewrite decrypts a backup, lets edit change its entries, and encrypts
// it again to id: a backup altered by someone who holds the public key
// (anyone may encrypt to it).
func rewrite(t *testing.T, b []byte, id *age.X25519Identity, edit func(name string, body []byte) []byte) []byte {
	t.Helper()
	dec, err := age.Decrypt(bytes.NewReader(b), id)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	enc, err := age.Encrypt(&out, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	tr, tw := tar.NewReader(dec), tar.NewWriter(enc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		body = edit(h.Name, body)
		if body == nil {
			continue
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Every refused restore says why and leaves nothing behind: the target
// is as it was (absent, or empty).
func TestRefused(t *testing.T) {
	ctx := context.Background()
	c := newController(t)
	id := x25519(t)
	b, m := backup(t, c, id.Recipient())

	flipped := bytes.Clone(b)
	flipped[len(flipped)/2] ^= 1
	changeCA := rewrite(t, b, id, func(name string, body []byte) []byte {
		if name == "ca.pem" {
			body = bytes.Clone(body)
			body[40] ^= 1
		}
		return body
	})
	dropKey := rewrite(t, b, id, func(name string, body []byte) []byte {
		if name == ledger.KeyFile {
			return nil
		}
		return body
	})
	// A database whose audit log is not the manifest's: one from another
	// controller, with its hashes in the manifest.
	other := newController(t)
	otherB, _ := backup(t, other, id.Recipient())
	var otherDB []byte
	rewrite(t, otherB, id, func(name string, body []byte) []byte {
		if name == sqlite.FileName {
			otherDB = body
		}
		return body
	})
	swapDB := rewrite(t, b, id, func(name string, body []byte) []byte {
		switch name {
		case sqlite.FileName:
			return otherDB
		case manifestName:
			return bytes.Replace(body, []byte(fileOf(m, sqlite.FileName).SHA256), []byte(sha256Hex(otherDB)), 1)
		}
		return body
	})
	swapDB = fixSize(t, swapDB, id, m, len(otherDB))

	notEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(notEmpty, "cordon.db"), []byte("live"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		backup []byte
		id     age.Identity
		target string
		want   string
	}{
		{"tampered ciphertext", flipped, id, "", "decrypt"},
		{"truncated", b[:len(b)-100], id, "", ""},
		{"wrong key", b, x25519(t), "", "decrypt"},
		{"file changed inside", changeCA, id, "", "SHA-256"},
		{"file missing", dropKey, id, "", "not in the archive"},
		{"database swapped", swapDB, id, "", "audit log"},
		{"target not empty", b, id, notEmpty, "not empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = filepath.Join(t.TempDir(), "restored")
			}
			_, err := Restore(ctx, RestoreOptions{DataDir: target, Identities: []age.Identity{tc.id}}, bytes.NewReader(tc.backup))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v, want an error with %q", err, tc.want)
			}
			if tc.target != "" {
				if got, _ := os.ReadFile(filepath.Join(notEmpty, "cordon.db")); string(got) != "live" {
					t.Error("the non-empty target's file was changed")
				}
				return
			}
			if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused restore left %s behind (%v)", target, err)
			}
		})
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileOf(m *Manifest, name string) File {
	for _, f := range m.Files {
		if f.Name == name {
			return f
		}
	}
	return File{}
}

// fixSize sets the database's size in the manifest of b to n.
func fixSize(t *testing.T, b []byte, id *age.X25519Identity, m *Manifest, n int) []byte {
	t.Helper()
	old := fileOf(m, sqlite.FileName).Size
	return rewrite(t, b, id, func(name string, body []byte) []byte {
		if name == manifestName {
			return bytes.Replace(body, fmt.Appendf(nil, `"size": %d,`, old), fmt.Appendf(nil, `"size": %d,`, n), 1)
		}
		return body
	})
}

// A backup taken while the controller writes (audit records appended and
// checkpoints signed from other goroutines, as its handlers and ledger
// do) holds one committed state: every one restores and verifies.
func TestBackupWhileWriting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := newController(t)
	id := x25519(t)
	startLogins := countAudit(t, c.st, audit.AuthLogin)
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			err := c.owner.Record(ctx, state.Origin{Actor: "gateway:gw-1"},
				store.AuditEvent{Type: audit.AuthLogin, Outcome: "success", Subject: fmt.Sprint("n", i)},
				store.AuditEvent{Type: audit.AuthLogin, Outcome: "failure", Subject: fmt.Sprint("n", i)})
			if err != nil && ctx.Err() == nil {
				errc <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, err := c.owner.CreateSegment(ctx, state.Origin{Actor: "admin:alice"},
				store.Segment{Name: fmt.Sprint("s", i), CIDRs: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/24")}})
			if err != nil && ctx.Err() == nil {
				errc <- err
				return
			}
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := c.led.Sign(ctx); err != nil && ctx.Err() == nil {
				errc <- err
				return
			}
		}
	})
	var sizes []int64
	for i := range 4 {
		b, m := backup(t, c, id.Recipient())
		res, err := Restore(context.Background(), RestoreOptions{DataDir: filepath.Join(t.TempDir(), fmt.Sprint(i)), Identities: []age.Identity{id}}, bytes.NewReader(b))
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		if res.Audit.Records != m.Audit.Size {
			t.Errorf("backup %d: %d records restored, manifest %d", i, res.Audit.Records, m.Audit.Size)
		}
		// Every change is in the copy with its audit record, or neither.
		segs, logins := restoredCounts(t, filepath.Join(t.TempDir(), fmt.Sprint(i)), b, id)
		if logins%2 != startLogins%2 {
			t.Errorf("backup %d: %d sign-in records: a transaction of two was split", i, logins)
		}
		if segs.stored != segs.recorded {
			t.Errorf("backup %d: %d segments stored, %d recorded as created", i, segs.stored, segs.recorded)
		}
		sizes = append(sizes, m.Audit.Size)
	}
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if sizes[0] == sizes[len(sizes)-1] {
		t.Errorf("the log did not grow while backups ran (sizes %v): the test proves nothing", sizes)
	}
}

type segmentCounts struct{ stored, recorded int }

// restoredCounts restores b into dir and counts its segments, the
// segment creations and the sign-ins its audit log records.
func restoredCounts(t *testing.T, dir string, b []byte, id age.Identity) (segmentCounts, int) {
	t.Helper()
	ctx := context.Background()
	if _, err := Restore(ctx, RestoreOptions{DataDir: dir, Identities: []age.Identity{id}}, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	segs, err := st.ListSegments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return segmentCounts{stored: len(segs), recorded: countAudit(t, st, audit.AdminSegmentCreate)}, countAudit(t, st, audit.AuthLogin)
}

// countAudit counts the records of type typ in st.
func countAudit(t *testing.T, st store.Store, typ audit.Type) int {
	t.Helper()
	ctx := context.Background()
	size, err := st.AuditLogSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = st.ScanAuditLog(ctx, 1, size, func(e store.AuditEvent, _ tlog.Hash, _ bool) error {
		if e.Type == typ {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
