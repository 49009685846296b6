package sqlite_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
)

// Copy reads a live store from outside it: the copy holds what was
// committed, is 0600, and the source is neither created nor replaced.
func TestCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "cordon.db")
	s, err := sqlite.Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateSegment(ctx, store.Segment{Name: "clinical", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "copy.db")
	v, err := sqlite.Copy(ctx, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if v != sqlite.SchemaVersion() {
		t.Errorf("schema version %d, want %d", v, sqlite.SchemaVersion())
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v, want 0600", fi.Mode().Perm())
	}
	c, err := sqlite.Open(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetSegment(ctx, "clinical"); err != nil {
		t.Errorf("segment not in the copy: %v", err)
	}

	if _, err := sqlite.Copy(ctx, src, dst); err == nil {
		t.Error("copy over an existing file: no error")
	}
	missing := filepath.Join(dir, "none.db")
	if _, err := sqlite.Copy(ctx, missing, filepath.Join(dir, "x.db")); err == nil || !strings.Contains(err.Error(), "data-dir") {
		t.Errorf("copy of a missing database: %v, want an error naming --data-dir", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("copy created the missing source: %v", err)
	}
}
