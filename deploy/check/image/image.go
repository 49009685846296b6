// Package image builds Cordon's container image as an OCI image layout
// with no container engine: the binaries built static from the repository,
// on an empty base (FROM scratch) with the few files the Dockerfile's base,
// distroless static nonroot, would have given them: /etc/passwd and
// /etc/group with the nonroot user (uid/gid 65532), CA certificates,
// nsswitch.conf, /tmp and nonroot's home. The data volume's directory is
// owned by nonroot, mode 0700.
//
// The Dockerfile stays the source of truth for real builds. This package
// restates its final stage as Go values (Config, the paths and owners in
// RootFS), and the tests hold the two together: a change to one that is
// not made to the other fails them.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user, paths and health check. The Dockerfile says the same.
const (
	// UID and GID are distroless's nonroot user and group.
	UID = 65532
	GID = 65532
	// User is the image's USER, numeric so that Kubernetes can check
	// runAsNonRoot without reading /etc/passwd.
	User = "65532:65532"
	// Base is the Dockerfile's final base image, whose files RootFS
	// stands in for.
	Base = "gcr.io/distroless/static-debian12:nonroot"
	// BinDir holds the binaries.
	BinDir = "/usr/local/bin"
	// DataDir is the volume: the controller's --data-dir and the
	// gateway's --state-dir go below it.
	DataDir = "/var/lib/cordon"
	// UAPIDir is where wireguard-go puts a tun-mode gateway's UAPI socket
	// (`wg show`); nonroot must be able to write it. With a read-only
	// root, mount a tmpfs there.
	UAPIDir = "/var/run/wireguard"
	// MetricsListen is where the image's controller serves /metrics,
	// /healthz and /readyz (loopback: publish it with --metrics-listen).
	MetricsListen = "127.0.0.1:9101"
	// HealthURL is what the health check asks.
	HealthURL = "http://" + MetricsListen + "/healthz"
	// TunGateway is the copy of cordon-gateway that carries the file
	// capabilities TunCaps, for tun mode as the non-root user.
	TunGateway = "cordon-gateway-tun"
	// TunCaps are its capabilities as setcap writes them: NET_ADMIN for
	// the TUN device, routes and firewall, NET_BIND_SERVICE for its DNS
	// server on port 53 (as the systemd unit's AmbientCapabilities).
	TunCaps = "cap_net_admin,cap_net_bind_service=ep"
	// ModulePath is the main module, for the version stamp.
	ModulePath = "github.com/cordonhq/cordon"
)

// Binaries are the programs in BinDir and the packages they are built
// from, in the Dockerfile's order.
var Binaries = []struct{ Name, Package string }{
	{"cordon-controller", "./controller/cmd/cordon-controller"},
	{"cordon-gateway", "./gateway/cmd/cordon-gateway"},
	{"cordon", "./client/cmd/cordon"},
	{"cordonctl", "./cordonctl/cmd/cordonctl"},
	{"cordon-healthcheck", "./internal/cmd/cordon-healthcheck"},
}

// Entrypoint is the image's ENTRYPOINT: the controller, its data in the
// volume, health and metrics on loopback. Flags given to `docker run` come
// after it and win (the flag package keeps a flag's last value).
var Entrypoint = []string{BinDir + "/cordon-controller", "--data-dir", DataDir + "/controller", "--metrics-listen", MetricsListen}

// ExposedPorts are the image's EXPOSE ports.
var ExposedPorts = []string{"8443/tcp", "8443/udp", "51820/udp", "9101/tcp"}

// Env is what distroless static sets and a scratch image must set itself.
var Env = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
}

// Health is the image's HEALTHCHECK.
var Health = v1.HealthConfig{
	Test:        []string{"CMD", BinDir + "/cordon-healthcheck", HealthURL},
	Interval:    30 * time.Second,
	Timeout:     5 * time.Second,
	StartPeriod: 20 * time.Second,
	Retries:     3,
}

// Labels are the image's OCI labels for version.
func Labels(version string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "cordon",
		"org.opencontainers.image.description": "Cordon zero-trust network overlay: controller, gateway, client and cordonctl",
		"org.opencontainers.image.version":     version,
	}
}

// Config is the image's run configuration for version.
func Config(version string) v1.Config {
	ports := map[string]struct{}{}
	for _, p := range ExposedPorts {
		ports[p] = struct{}{}
	}
	h := Health
	return v1.Config{
		User:         User,
		Entrypoint:   append([]string(nil), Entrypoint...),
		Env:          append([]string(nil), Env...),
		ExposedPorts: ports,
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels:       Labels(version),
		Healthcheck:  &h,
	}
}

// BuildBinaries builds Binaries from the repository at repo into dir,
// static and stamped with version, as the Dockerfile's build stage does.
func BuildBinaries(ctx context.Context, repo, version, dir string) error {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X " + ModulePath + "/internal/buildinfo.version=" + version, "-o", dir + string(filepath.Separator)}
	for _, b := range Binaries {
		args = append(args, b.Package)
	}
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build the image's binaries in %s: %w\n%s", repo, err, out)
	}
	return nil
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Distroless's /etc/passwd and /etc/group (static-debian12), which the
// nonroot user and the group names come from.
const (
	Passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	Group = "root:x:0:\n" +
		"nobody:x:65534:\n" +
		"tty:x:5:\n" +
		"staff:x:50:\n" +
		"nonroot:x:65532:\n"
	NSSwitch = "hosts: files dns\n"
)

// Entry is one file system entry of the image: what the tests expect of
// each path, and what RootFS writes.
type Entry struct {
	Path     string // absolute
	Mode     os.FileMode
	UID, GID int
	Dir      bool
	Src      string // file to copy the content from, if not Data
	Data     []byte
	// Caps is the security.capability xattr (see TunCapsXattr).
	Caps []byte
}

// Entries lists the image's file system, parents before children, with
// the binaries from binDir and the CA bundle from caCerts.
func Entries(binDir, caCerts string) []Entry {
	dir := func(p string, mode os.FileMode, uid int) Entry {
		return Entry{Path: p, Mode: mode | os.ModeDir, UID: uid, GID: uid, Dir: true}
	}
	file := func(p string, data string) Entry {
		return Entry{Path: p, Mode: 0o644, Data: []byte(data)}
	}
	es := []Entry{
		dir("/etc", 0o755, 0),
		file("/etc/passwd", Passwd),
		file("/etc/group", Group),
		file("/etc/nsswitch.conf", NSSwitch),
		dir("/etc/ssl", 0o755, 0),
		dir("/etc/ssl/certs", 0o755, 0),
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Src: caCerts},
		dir("/home", 0o755, 0),
		dir("/home/nonroot", 0o700, UID),
		dir("/tmp", 0o777|os.ModeSticky, 0),
		dir("/usr", 0o755, 0),
		dir("/usr/local", 0o755, 0),
		dir(BinDir, 0o755, 0),
	}
	for _, b := range Binaries {
		es = append(es, Entry{Path: BinDir + "/" + b.Name, Mode: 0o755, Src: filepath.Join(binDir, b.Name)})
	}
	es = append(es,
		Entry{Path: BinDir + "/" + TunGateway, Mode: 0o755, Src: filepath.Join(binDir, "cordon-gateway"), Caps: TunCapsXattr()},
		dir("/var", 0o755, 0),
		dir("/var/lib", 0o755, 0),
		dir(DataDir, 0o700, UID),
		dir("/var/run", 0o755, 0),
		dir(UAPIDir, 0o755, UID),
	)
	return es
}

// Capability numbers (linux/capability.h).
const (
	CapNetBindService = 10
	CapNetAdmin       = 12
)

// TunCapsXattr is the security.capability xattr that setcap TunCaps
// writes: struct vfs_cap_data, revision 2, the effective flag,
// CAP_NET_ADMIN and CAP_NET_BIND_SERVICE permitted, nothing inheritable.
func TunCapsXattr() []byte {
	const revision2, effective = 0x02000000, 0x1
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], revision2|effective)
	binary.LittleEndian.PutUint32(b[4:], 1<<CapNetAdmin|1<<CapNetBindService) // permitted, caps 0-31
	return b
}

// xattrCaps is the PAX record a tar entry carries security.capability in.
const xattrCaps = "SCHILY.xattr.security.capability"

// epoch is every entry's modification time, so that a build is
// reproducible.
var epoch = time.Unix(0, 0).UTC()

// RootFS writes the image's file system as one uncompressed tar layer.
func RootFS(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		name := strings.TrimPrefix(e.Path, "/")
		hdr := &tar.Header{
			Name: name, Mode: int64(e.Mode.Perm()), Uid: e.UID, Gid: e.GID,
			ModTime: epoch, Format: tar.FormatPAX,
		}
		if e.Mode&os.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		if e.UID == UID {
			hdr.Uname, hdr.Gname = "nonroot", "nonroot"
		} else {
			hdr.Uname, hdr.Gname = "root", "root"
		}
		data := e.Data
		if e.Dir {
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		} else {
			hdr.Typeflag = tar.TypeReg
			if e.Src != "" {
				b, err := os.ReadFile(e.Src)
				if err != nil {
					return nil, fmt.Errorf("read %s for %s: %w", e.Src, e.Path, err)
				}
				data = b
			}
			hdr.Size = int64(len(data))
		}
		if e.Caps != nil {
			hdr.PAXRecords = map[string]string{xattrCaps: string(e.Caps)}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header for %s: %w", e.Path, err)
		}
		if !e.Dir {
			if _, err := tw.Write(data); err != nil {
				return nil, fmt.Errorf("tar %s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close the layer's tar: %w", err)
	}
	return buf.Bytes(), nil
}

// Image is the image of the layer rootfs (RootFS's tar) for version.
func Image(rootfs []byte, version string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(rootfs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make the layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "cordon deploy/check image build", Comment: "binaries, users, CA certificates, data volume",
	}})
	if err != nil {
		return nil, fmt.Errorf("add the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = runtime.GOARCH, "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config = Config(version)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set the config: %w", err)
	}
	return img, nil
}

// WriteLayout writes img as an OCI image layout in dir (created, must not
// exist), tagged version.
func WriteLayout(dir string, img v1.Image, version string) error {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s exists: the layout is written to a new directory (remove it first)", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("start the layout in %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
	})); err != nil {
		return fmt.Errorf("write the image into %s: %w", dir, err)
	}
	return nil
}

// Build builds the binaries from repo and writes the image layout to out.
func Build(ctx context.Context, repo, version, caCerts, out string) (v1.Image, error) {
	bin, err := os.MkdirTemp("", "cordon-image-bin-")
	if err != nil {
		return nil, fmt.Errorf("make a build directory: %w", err)
	}
	defer os.RemoveAll(bin)
	if err := BuildBinaries(ctx, repo, version, bin); err != nil {
		return nil, err
	}
	rootfs, err := RootFS(Entries(bin, caCerts))
	if err != nil {
		return nil, err
	}
	img, err := Image(rootfs, version)
	if err != nil {
		return nil, err
	}
	if err := WriteLayout(out, img, version); err != nil {
		return nil, err
	}
	return img, nil
}
