package lastmap

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

func record(rev uint64) Record {
	return Record{
		Map:        &controlproto.GatewayMap{Revision: rev, GatewayID: "gw1", Segments: []controlproto.Segment{{Name: "clinical"}}},
		ValidUntil: t0.Add(time.Duration(rev) * time.Hour),
		SavedAt:    t0,
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrNone) {
		t.Fatalf("Load of an empty dir = %v, want ErrNone", err)
	}
	if err := s.Save(record(7)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{MapFile, KeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	// A second Open (the next process) reads it with the same key.
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if r.Map.Revision != 7 || !r.ValidUntil.Equal(record(7).ValidUntil) || r.Map.Segments[0].Name != "clinical" {
		t.Fatalf("loaded %+v", r)
	}
	for range 2 {
		if err := s2.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.Load(); !errors.Is(err, ErrNone) {
			t.Fatalf("Load after Remove = %v, want ErrNone", err)
		}
	}
}

func TestTamperedIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(record(1)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, MapFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Extend the validity by hand: one digit of the year.
	edited := []byte(string(orig))
	i := indexOf(edited, []byte("2026-12-01T09"))
	if i < 0 {
		t.Fatalf("validity not found in %s", orig)
	}
	edited[i+3] = '7'
	for name, b := range map[string][]byte{
		"edited validity": edited,
		"truncated":       orig[:len(orig)/2],
		"empty":           {},
		"not json":        []byte("garbage"),
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(); !errors.Is(err, ErrIntegrity) {
			t.Errorf("%s: Load = %v, want ErrIntegrity", name, err)
		}
	}
	// Another gateway's file (another key) does not check out either.
	other := t.TempDir()
	so, err := Open(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, MapFile), orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := so.Load(); !errors.Is(err, ErrIntegrity) {
		t.Errorf("another gateway's file: Load = %v, want ErrIntegrity", err)
	}
}

func indexOf(b, sub []byte) int {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return i
		}
	}
	return -1
}

func FuzzDecode(f *testing.F) {
	s := &Store{key: make([]byte, 32)}
	raw := []byte(`{"map":{"revision":1},"valid_until":"2026-12-01T00:00:00Z"}`)
	f.Add([]byte(`{"version":1,"mac":"` + "AAAA" + `","record":` + string(raw) + `}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"record":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := s.decode(b)
		if err == nil && (r.Map == nil || r.ValidUntil.IsZero()) {
			t.Fatalf("decode accepted a record without map or validity: %+v", r)
		}
	})
}

// TestCrashWhileSaving kills a process that saves maps in a loop at random
// points: whatever is left loads as one of the saved records (or none),
// never as a torn file.
func TestCrashWhileSaving(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var lastSeen uint64
	for round := range 12 {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "LASTMAP_CRASH_CHILD="+dir, "LASTMAP_CRASH_FROM="+strconv.FormatUint(lastSeen+1, 10))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it at a random point after its first save.
		if _, err := out.Read(make([]byte, 1)); err != nil {
			t.Fatalf("round %d: child never saved: %v", round, err)
		}
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		r, err := s.Load()
		if err != nil {
			t.Fatalf("round %d: load after kill: %v", round, err)
		}
		if r.Map.Revision <= lastSeen {
			t.Fatalf("round %d: revision %d, but the child had saved (and said so) revision %d", round, r.Map.Revision, lastSeen+1)
		}
		if want := record(r.Map.Revision).ValidUntil; !r.ValidUntil.Equal(want) {
			t.Fatalf("round %d: revision %d with validity %v, want %v (half-applied)", round, r.Map.Revision, r.ValidUntil, want)
		}
		lastSeen = r.Map.Revision
	}
	t.Logf("last revision seen: %d", lastSeen)
}

// TestMain runs crashChild instead of the tests in the process that
// TestCrashWhileSaving starts and kills.
func TestMain(m *testing.M) {
	if dir := os.Getenv("LASTMAP_CRASH_CHILD"); dir != "" {
		crashChild(dir)
	}
	os.Exit(m.Run())
}

// crashChild saves ever newer records until it is killed.
func crashChild(dir string) {
	from, _ := strconv.ParseUint(os.Getenv("LASTMAP_CRASH_FROM"), 10, 64)
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for rev := from; ; rev++ {
		r := record(rev)
		// Big enough that a write is not one page.
		for i := range 2000 {
			r.Map.Apps = append(r.Map.Apps, controlproto.App{Name: fmt.Sprintf("app-%d-%d", rev, i)})
		}
		if err := s.Save(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if rev == from {
			os.Stdout.Write([]byte("s")) // saved once: kill me any time now
		}
	}
}
