package secretfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	a, err := LoadOrCreate(p, 32)
	if err != nil || len(a) != 32 {
		t.Fatalf("create: %v, %d bytes", err, len(a))
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := LoadOrCreate(p, 32)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("second load: %v, same key %v", err, bytes.Equal(a, b))
	}
	if _, err := LoadOrCreate(p, 16); err == nil || !strings.Contains(err.Error(), "32 bytes, want 16") {
		t.Fatalf("wrong length: %v", err)
	}
	if bytes.Equal(a, make([]byte, 32)) {
		t.Fatal("key is all zero")
	}
}
