package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unpack writes the image's file system under root as a container engine
// would: owners, modes and file capabilities as in the layer.
func unpack(t *testing.T, fs map[string]fsEntry, root string) {
	t.Helper()
	// Parents first: sorted paths put a directory before its entries.
	paths := make([]string, 0, len(fs))
	for p := range fs {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		e := fs[p]
		dst := filepath.Join(root, filepath.Clean("/"+p))
		if !strings.HasPrefix(dst, root+"/") {
			t.Fatalf("layer entry %q escapes the root", p)
		}
		mode := os.FileMode(e.hdr.Mode & 0o777)
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(dst, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.WriteFile(dst, e.data, 0o600); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: unexpected type %c", p, e.hdr.Typeflag)
		}
		if err := os.Lchown(dst, e.hdr.Uid, e.hdr.Gid); err != nil {
			t.Fatal(err)
		}
		if e.hdr.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if err := os.Chmod(dst, mode); err != nil {
			t.Fatal(err)
		}
		// Capabilities last: chown clears them.
		if c, ok := e.hdr.PAXRecords[xattrCaps]; ok {
			if err := unix.Setxattr(dst, "security.capability", []byte(c), 0); err != nil {
				t.Fatalf("set %s's file capability: %v", p, err)
			}
		}
	}
}

// freePort returns a loopback TCP port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// inImage is a command run from the unpacked image as its user (uid/gid
// 65532, no supplementary groups), with the image's environment.
func inImage(ctx context.Context, root string, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(root, argv[0]), argv[1:]...)
	cmd.Path = argv[0] // resolved inside the chroot
	cmd.Dir = "/"
	cmd.Env = Env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: UID, Gid: GID, Groups: []uint32{}},
		Setpgid:    true,
	}
	return cmd
}

// TestImageRunsAsNonroot unpacks the image and runs its entrypoint from
// the unpacked root, chrooted, as uid 65532: the controller starts, its
// health check (the image's own HEALTHCHECK command) passes, and it writes
// its data into the volume's directory, which nonroot owns.
func TestImageRunsAsNonroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: running the image needs root (chroot, setuid to 65532, file owners); CI runs as root")
	}
	fs := flatten(t, readImage(t, testLayout(t)))
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	unpack(t, fs, root)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The entrypoint as the image has it, with the ports moved to free
	// ones (later flags win), since this runs in the host's network.
	port, mport := freePort(t), freePort(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", mport)
	argv := append(append([]string(nil), Entrypoint...), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--metrics-listen", metrics)
	ctl := inImage(ctx, root, argv...)
	var logs bytes.Buffer
	ctl.Stdout, ctl.Stderr = &logs, &logs
	if err := ctl.Start(); err != nil {
		t.Fatalf("start the entrypoint: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- ctl.Wait() }()
	defer func() {
		ctl.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			ctl.Process.Kill()
			<-done
		}
	}()

	// The HEALTHCHECK command, its URL moved with --metrics-listen.
	health := append(append([]string(nil), Health.Test[1:len(Health.Test)-1]...), "http://"+metrics+"/healthz")
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := inImage(ctx, root, health...).CombinedOutput()
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the controller exited before it was healthy: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy in 90s: %v %s\ncontroller log:\n%s", err, out, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := inImage(ctx, root, health[0], "http://"+metrics+"/readyz").CombinedOutput(); err != nil {
		t.Errorf("healthy but not ready: %v %s", err, out)
	}

	// The data went into the volume, owned by nonroot, secrets private.
	data := filepath.Join(root, DataDir, "controller")
	st, err := os.Stat(data)
	if err != nil {
		t.Fatalf("the controller wrote no data directory in the volume: %v\n%s", err, logs.String())
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != UID || st.Mode().Perm() != 0o700 {
		t.Errorf("%s: uid %d mode %v, want 65532 0700", data, sys.Uid, st.Mode().Perm())
	}
	ents, err := os.ReadDir(data)
	if err != nil || len(ents) == 0 {
		t.Fatalf("the data directory is empty (%v)", err)
	}
	var names []string
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if sys := info.Sys().(*syscall.Stat_t); sys.Uid != UID {
			t.Errorf("%s is owned by uid %d, not nonroot", e.Name(), sys.Uid)
		}
		// Certificates are public; keys, tokens and the database not.
		public := strings.HasSuffix(e.Name(), ".pem") && !strings.Contains(e.Name(), "key")
		if !e.IsDir() && !public && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %v: only its owner may read it", e.Name(), info.Mode().Perm())
		}
		names = append(names, e.Name())
	}

	if !slices.Contains(names, "admin-token") {
		t.Errorf("the volume lacks the bootstrap admin-token (holds %q)", names)
	}

	// cordonctl and the client run from the image too.
	for _, b := range []string{"cordonctl", "cordon", "cordon-gateway", TunGateway} {
		out, err := inImage(ctx, root, BinDir+"/"+b, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), testVersion) {
			t.Errorf("%s --version as nonroot: %v %s", b, err, out)
		}
	}
}
