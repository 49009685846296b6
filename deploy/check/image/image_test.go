package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// testVersion is stamped into the test build; the tests look for it in
// the label and in --version.
const testVersion = "v0.0.0-imagetest"

// repoRoot is the Cordon repository, three levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the repository root %s has no go.mod: %v", root, err)
	}
	return root
}

var (
	buildOnce   sync.Once
	builtLayout string
	builtErr    error
)

// testLayout builds the image once per test binary (go build of five
// binaries is the slow part) and returns its layout directory.
func testLayout(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cordon-image-test-")
		if err != nil {
			builtErr = err
			return
		}
		builtLayout = filepath.Join(dir, "oci")
		_, builtErr = Build(context.Background(), repoRoot(t), testVersion, "/etc/ssl/certs/ca-certificates.crt", builtLayout)
	})
	if builtErr != nil {
		t.Fatalf("build the image: %v", builtErr)
	}
	return builtLayout
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtLayout != "" {
		os.RemoveAll(filepath.Dir(builtLayout))
	}
	os.Exit(code)
}

// readImage reads the one image of the layout at dir.
func readImage(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read the layout %s: %v", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("layout has %d manifests, want 1", len(m.Manifests))
	}
	if got := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != testVersion {
		t.Errorf("layout ref name %q, want %q", got, testVersion)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// fsEntry is one tar entry of the image's flattened file system.
type fsEntry struct {
	hdr  *tar.Header
	data []byte
}

// flatten reads the image's file system as its tar entries by path.
func flatten(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]fsEntry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the image's file system: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(hdr.Name, "/")] = fsEntry{hdr, data}
	}
	return out
}

// TestImageConfig: the built image runs what the Dockerfile says, as
// nonroot, with the health check and the version label.
func TestImageConfig(t *testing.T) {
	img := readImage(t, testLayout(t))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532 (numeric, for runAsNonRoot)", c.User)
	}
	if want := []string{"/usr/local/bin/cordon-controller", "--data-dir", "/var/lib/cordon/controller", "--metrics-listen", "127.0.0.1:9101"}; !slices.Equal(c.Entrypoint, want) {
		t.Errorf("Entrypoint %q, want %q", c.Entrypoint, want)
	}
	if len(c.Cmd) != 0 {
		t.Errorf("Cmd %q, want none", c.Cmd)
	}
	if got := slices.Sorted(maps.Keys(c.Volumes)); !slices.Equal(got, []string{"/var/lib/cordon"}) {
		t.Errorf("Volumes %q", got)
	}
	if got := slices.Sorted(maps.Keys(c.ExposedPorts)); !slices.Equal(got, []string{"51820/udp", "8443/tcp", "8443/udp", "9101/tcp"}) {
		t.Errorf("ExposedPorts %q", got)
	}
	if c.Labels["org.opencontainers.image.version"] != testVersion || c.Labels["org.opencontainers.image.title"] != "cordon" {
		t.Errorf("Labels %v lack the version %s and title", c.Labels, testVersion)
	}
	if c.Healthcheck == nil || !slices.Equal(c.Healthcheck.Test, []string{"CMD", "/usr/local/bin/cordon-healthcheck", "http://127.0.0.1:9101/healthz"}) {
		t.Errorf("Healthcheck %+v", c.Healthcheck)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("not an OCI image with one layer: %+v", m)
	}
}

// TestImageFileSystem: users, owners, modes and capabilities of every
// entry; the binaries static and stamped.
func TestImageFileSystem(t *testing.T) {
	fs := flatten(t, readImage(t, testLayout(t)))

	want := map[string]struct {
		mode     int64
		uid, gid int
		typ      byte
	}{
		"/etc":                               {0o755, 0, 0, tar.TypeDir},
		"/etc/passwd":                        {0o644, 0, 0, tar.TypeReg},
		"/etc/group":                         {0o644, 0, 0, tar.TypeReg},
		"/etc/nsswitch.conf":                 {0o644, 0, 0, tar.TypeReg},
		"/etc/ssl":                           {0o755, 0, 0, tar.TypeDir},
		"/etc/ssl/certs":                     {0o755, 0, 0, tar.TypeDir},
		"/etc/ssl/certs/ca-certificates.crt": {0o644, 0, 0, tar.TypeReg},
		"/home":                              {0o755, 0, 0, tar.TypeDir},
		"/home/nonroot":                      {0o700, 65532, 65532, tar.TypeDir},
		"/tmp":                               {0o1777, 0, 0, tar.TypeDir},
		"/usr":                               {0o755, 0, 0, tar.TypeDir},
		"/usr/local":                         {0o755, 0, 0, tar.TypeDir},
		"/usr/local/bin":                     {0o755, 0, 0, tar.TypeDir},
		"/usr/local/bin/cordon-controller":   {0o755, 0, 0, tar.TypeReg},
		"/usr/local/bin/cordon-gateway":      {0o755, 0, 0, tar.TypeReg},
		"/usr/local/bin/cordon-gateway-tun":  {0o755, 0, 0, tar.TypeReg},
		"/usr/local/bin/cordon":              {0o755, 0, 0, tar.TypeReg},
		"/usr/local/bin/cordonctl":           {0o755, 0, 0, tar.TypeReg},
		"/usr/local/bin/cordon-healthcheck":  {0o755, 0, 0, tar.TypeReg},
		"/var":                               {0o755, 0, 0, tar.TypeDir},
		"/var/lib":                           {0o755, 0, 0, tar.TypeDir},
		"/var/lib/cordon":                    {0o700, 65532, 65532, tar.TypeDir},
		"/var/run":                           {0o755, 0, 0, tar.TypeDir},
		"/var/run/wireguard":                 {0o755, 65532, 65532, tar.TypeDir},
	}
	if got, exp := slices.Sorted(maps.Keys(fs)), slices.Sorted(maps.Keys(want)); !slices.Equal(got, exp) {
		t.Fatalf("image holds %q\nwant %q", got, exp)
	}
	for p, w := range want {
		h := fs[p].hdr
		if h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid || h.Typeflag != w.typ {
			t.Errorf("%s: mode %#o uid %d gid %d type %c, want %#o %d %d %c", p, h.Mode, h.Uid, h.Gid, h.Typeflag, w.mode, w.uid, w.gid, w.typ)
		}
		caps, hasCaps := h.PAXRecords[xattrCaps]
		if p == "/usr/local/bin/cordon-gateway-tun" {
			if !hasCaps || !bytes.Equal([]byte(caps), TunCapsXattr()) {
				t.Errorf("%s: security.capability %x, want %s %x", p, caps, TunCaps, TunCapsXattr())
			}
		} else if hasCaps {
			t.Errorf("%s carries file capabilities %x; only cordon-gateway-tun may", p, caps)
		}
	}

	passwd := string(fs["/etc/passwd"].data)
	if !slices.Contains(strings.Split(passwd, "\n"), "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin") {
		t.Errorf("/etc/passwd lacks nonroot 65532:\n%s", passwd)
	}
	if !slices.Contains(strings.Split(string(fs["/etc/group"].data), "\n"), "nonroot:x:65532:") {
		t.Errorf("/etc/group lacks nonroot 65532")
	}
	if !bytes.Contains(fs["/etc/ssl/certs/ca-certificates.crt"].data, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("the CA bundle holds no certificate")
	}
	for _, b := range append(slices.Collect(func(yield func(string) bool) {
		for _, b := range Binaries {
			if !yield(b.Name) {
				return
			}
		}
	}), TunGateway) {
		data := fs["/usr/local/bin/"+b].data
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Errorf("%s is not an ELF binary: %v", b, err)
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked; a FROM scratch image has no loader", b)
			}
		}
		if !bytes.Contains(data, []byte(testVersion)) {
			t.Errorf("%s does not carry the version %s", b, testVersion)
		}
	}
	if !bytes.Equal(fs["/usr/local/bin/cordon-gateway"].data, fs["/usr/local/bin/cordon-gateway-tun"].data) {
		t.Errorf("cordon-gateway-tun differs from cordon-gateway")
	}
}

// TestTunCapsAsSetcapWrites: the xattr in the layer is byte for byte what
// the Dockerfile's `setcap` writes.
func TestTunCapsAsSetcapWrites(t *testing.T) {
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: setcap is not installed (apt-get install libcap2-bin); the xattr is checked only against its layout")
	}
	f := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setcap, TunCaps, f).CombinedOutput(); err != nil {
		t.Fatalf("setcap %s: %v %s", TunCaps, err, out)
	}
	got := make([]byte, 64)
	n, err := unix.Getxattr(f, "security.capability", got)
	if err != nil {
		t.Fatalf("read the xattr setcap wrote: %v", err)
	}
	if !bytes.Equal(got[:n], TunCapsXattr()) {
		t.Fatalf("setcap %s wrote %x, the image carries %x", TunCaps, got[:n], TunCapsXattr())
	}
}

// TestRootFSReproducible: the same binaries give the same layer, byte for
// byte (fixed times, fixed order).
func TestRootFSReproducible(t *testing.T) {
	dir := t.TempDir()
	for _, b := range Binaries {
		if err := os.WriteFile(filepath.Join(dir, b.Name), []byte("bin "+b.Name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	a, err := RootFS(Entries(dir, ca))
	if err != nil {
		t.Fatal(err)
	}
	b, err := RootFS(Entries(dir, ca))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two layers of the same files differ")
	}
	os.Remove(filepath.Join(dir, "cordonctl"))
	if _, err := RootFS(Entries(dir, ca)); err == nil || !strings.Contains(err.Error(), "cordonctl") {
		t.Fatalf("a missing binary gave %v, want an error naming it", err)
	}
}
