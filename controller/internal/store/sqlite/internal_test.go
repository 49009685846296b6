package sqlite

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

func TestAddrExhausted(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.maxOffset = 3
	if err := s.CreateUser(ctx, store.User{Name: "u"}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"100.64.0.1", "100.64.0.2", "100.64.0.3"} {
		d, err := s.CreateDevice(ctx, store.Device{ID: string(rune('a' + i)), User: "u"})
		if err != nil {
			t.Fatal(err)
		}
		if d.OverlayAddr != netip.MustParseAddr(want) {
			t.Fatalf("device %d at %v, want %s", i, d.OverlayAddr, want)
		}
	}
	_, err = s.CreateDevice(ctx, store.Device{ID: "x", User: "u"})
	if !errors.Is(err, store.ErrAddrExhausted) {
		t.Fatalf("full pool: %v", err)
	}
	if _, err := s.GetDevice(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("device stored without an address: %v", err)
	}
	if err := s.DeleteDevice(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	d, err := s.CreateDevice(ctx, store.Device{ID: "x", User: "u"})
	if err != nil || d.OverlayAddr != netip.MustParseAddr("100.64.0.2") {
		t.Fatalf("after a release: %v %v", d.OverlayAddr, err)
	}
}

func TestMaxOffset(t *testing.T) {
	if got := maxOffset(); got != 1<<22-1 {
		t.Fatalf("maxOffset = %d", got)
	}
	if got := offsetAddr(int64(maxOffset())); got != netip.MustParseAddr("100.127.255.255") {
		t.Fatalf("last address = %v", got)
	}
}

// BenchmarkCreateDeviceFullPool measures allocation with 100,000 addresses
// leased and a few freed low down: the allocator must stay an index probe,
// not a scan.
func BenchmarkCreateDeviceFullPool(b *testing.B) {
	ctx := b.Context()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "cordon.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateUser(ctx, store.User{Name: "nurse"}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
		INSERT INTO overlay_leases (addr) SELECT i FROM n`); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := s.CreateDevice(ctx, store.Device{ID: fmt.Sprintf("d%08d", i), User: "nurse"}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
