package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/ca"
)

// syncBuffer is a log sink Run may write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the controller on a loopback port with dataDir until the test
// ends; it returns the bound address and what the controller logged.
func start(t *testing.T, dataDir string, opts ...func(*Config)) (string, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := Config{DataDir: dataDir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Announce: io.Discard, Ready: func(a net.Addr) { ready <- a }}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a.String(), logs
	case err := <-done:
		t.Fatalf("Run returned before serving: %v\n%s", err, logs)
		return "", nil
	}
}

// TestAdminAPIRequiresTLS13: the admin API refuses a client that offers at
// most TLS 1.2 (with the protocol_version alert), and serves TLS 1.3.
func TestAdminAPIRequiresTLS13(t *testing.T) {
	dir := t.TempDir()
	addr, _ := start(t, dir)
	authority, err := ca.LoadOrCreate(dir) // the CA the running controller made
	if err != nil {
		t.Fatal(err)
	}
	dial := func(max uint16) (*tls.Conn, error) {
		return tls.Dial("tcp", addr, &tls.Config{RootCAs: authority.Pool(), ServerName: "localhost", MaxVersion: max})
	}

	c, err := dial(tls.VersionTLS12)
	if err == nil {
		v := c.ConnectionState().Version
		c.Close()
		t.Fatalf("a TLS 1.2-only client was served (version %s)", tls.VersionName(v))
	}
	if !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.2-only client: %v, want the protocol version alert", err)
	}

	c, err = dial(0)
	if err != nil {
		t.Fatalf("TLS 1.3 client: %v", err)
	}
	defer c.Close()
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated %s, want TLS 1.3", tls.VersionName(v))
	}
}

// TestDataDirMadePrivate: a --data-dir that existed with group and world
// access (the CA key lives there) is made 0700 at start, and the change is
// logged with the old mode.
func TestDataDirMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	_, logs := start(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("data dir mode %04o after start, want 0700", m)
	}
	if l := logs.String(); !strings.Contains(l, "dir="+dir) || !strings.Contains(l, "mode_was=0755") || !strings.Contains(l, "mode_now=0700") {
		t.Errorf("the change was not logged:\n%s", l)
	}
}
