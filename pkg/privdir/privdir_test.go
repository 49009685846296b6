package privdir_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/privdir"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestEnsure: a missing directory is created 0700; an existing one open to
// group or others is made 0700 and the change is logged with the old
// mode; its content is kept; a private one is left alone, silently.
func TestEnsure(t *testing.T) {
	root := t.TempDir()

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	fresh := filepath.Join(root, "a", "b")
	if err := privdir.Ensure(fresh, log); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, fresh); m != 0o700 || logs.Len() != 0 {
		t.Fatalf("new dir mode %04o, logged %q; want 0700, nothing logged", m, logs.String())
	}

	for _, was := range []os.FileMode{0o755, 0o750, 0o701, 0o777} {
		logs.Reset()
		dir := filepath.Join(root, "open", was.String())
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, was); err != nil {
			t.Fatal(err)
		}
		if err := privdir.Ensure(dir, log); err != nil {
			t.Fatal(err)
		}
		if m := mode(t, dir); m != 0o700 {
			t.Errorf("%04o: mode after Ensure %04o, want 0700", was, m)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "ca.key")); err != nil || string(b) != "secret" {
			t.Errorf("%04o: content changed: %q %v", was, b, err)
		}
		if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "dir="+dir) ||
			!strings.Contains(got, fmt.Sprintf("mode_was=%04o", was)) || !strings.Contains(got, "mode_now=0700") {
			t.Errorf("%04o: log %q does not say which dir and what mode it had", was, got)
		}
	}

	logs.Reset()
	private := filepath.Join(root, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := privdir.Ensure(private, log); err != nil || mode(t, private) != 0o700 || logs.Len() != 0 {
		t.Fatalf("private dir: %v, mode %04o, logged %q", err, mode(t, private), logs.String())
	}
}

// TestEnsureNotADirectory: a file where the directory should be is refused
// with what to do, and left as it is.
func TestEnsureNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := privdir.Ensure(file, nil)
	if err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "point the flag at a directory") {
		t.Fatalf("Ensure on a file: %v", err)
	}
	if m := mode(t, file); m != 0o644 {
		t.Fatalf("file mode changed to %04o", m)
	}
}
