package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
)

// dataDir makes the files a controller's first start makes.
func dataDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := ca.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.LoadKey(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBackupRestoreCommands(t *testing.T) {
	src := dataDir(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	idFile := filepath.Join(tmp, "backup.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "b.age")
	pass := "a long enough passphrase\n"
	cmd := func(stdin string, args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := dispatch(args, strings.NewReader(stdin), &o, &e)
		return code, o.String(), e.String()
	}

	for _, tc := range []struct {
		stdin string
		args  []string
		err   string
	}{
		{"", []string{"backup", "--data-dir", src}, "--out is required"},
		{"", []string{"backup", "--data-dir", src, "--out", out}, "--recipient or --passphrase-stdin"},
		{pass, []string{"backup", "--data-dir", src, "--out", out, "--passphrase-stdin", "--recipient", id.Recipient().String()}, "one of them"},
		{"", []string{"backup", "--data-dir", src, "--out", out, "--recipient", "age1nope"}, "age public key"},
		{"short\n", []string{"backup", "--data-dir", src, "--out", out, "--passphrase-stdin"}, "shorter than 12"},
		{"", []string{"restore", "--in", out}, "--identity or --passphrase-stdin"},
	} {
		if code, _, stderr := cmd(tc.stdin, tc.args...); code != 2 || !strings.Contains(stderr, tc.err) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.err)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused backup wrote %s", out)
	}

	code, stdout, stderr := cmd("", "backup", "--data-dir", src, "--out", out, "--recipient", id.Recipient().String())
	if code != 0 || !strings.Contains(stdout, "backup written") || !strings.Contains(stderr, "database copied") {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if code, _, stderr := cmd("", "backup", "--data-dir", src, "--out", out, "--recipient", id.Recipient().String()); code != 1 || !strings.Contains(stderr, "new file name") {
		t.Errorf("backup over an existing file: exit %d, %q", code, stderr)
	}

	dst := filepath.Join(tmp, "restored")
	code, stdout, stderr = cmd("", "restore", "--in", out, "--data-dir", dst, "--identity", idFile)
	authority, err := ca.LoadOrCreate(src)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || !strings.Contains(stdout, authority.Fingerprint()) {
		t.Fatalf("restore: exit %d, stdout %q (want the CA fingerprint %s), stderr %q", code, stdout, authority.Fingerprint(), stderr)
	}
	if code, _, stderr := cmd("", "restore", "--in", out, "--data-dir", dst, "--identity", idFile); code != 2 || !strings.Contains(stderr, "not empty") {
		t.Errorf("restore into the restored dir: exit %d, %q; want 2, not empty", code, stderr)
	}

	// A passphrase round trip (scrypt at age's default work factor).
	pout := filepath.Join(tmp, "p.age")
	if code, _, stderr := cmd(pass, "backup", "--data-dir", src, "--out", pout, "--passphrase-stdin"); code != 0 {
		t.Fatalf("backup with a passphrase: exit %d, %q", code, stderr)
	}
	if code, _, stderr := cmd(pass, "restore", "--in", pout, "--data-dir", filepath.Join(tmp, "p"), "--passphrase-stdin"); code != 0 {
		t.Fatalf("restore with the passphrase: exit %d, %q", code, stderr)
	}
}
