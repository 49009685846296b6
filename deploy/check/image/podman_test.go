package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podman runs podman with the runtime and limits this machine needs and
// returns its combined output. crun refuses hybrid cgroup hierarchies, so
// runc is used when present; the sandboxed CI host refuses podman's
// default RLIMIT_NOFILE/NPROC (above its own hard limits), so run
// commands pass small ones (podmanRunFlags).
func podman(ctx context.Context, args ...string) (string, error) {
	var pre []string
	if _, err := exec.LookPath("runc"); err == nil {
		pre = []string{"--runtime", "runc"}
	}
	out, err := exec.CommandContext(ctx, "podman", append(pre, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

var podmanRunFlags = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// TestPodmanRunsImage loads the engine-less build into a real container
// engine (podman from Debian's packages, as root) and runs it as a user
// would: the controller starts as nonroot from a fresh named volume,
// which the engine fills from the image so nonroot can write it; the
// HEALTHCHECK command passes inside the container; and the tun-mode
// gateway copy starts only with --cap-add NET_ADMIN.
func TestPodmanRunsImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("SKIPPED LOUDLY: podman is not installed (apt-get install podman runc; .ci/run does): the image is checked without an engine only")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: podman runs rootful here (needs root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := testLayout(t)
	img := readImage(t, dir)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	var rb [6]byte
	rand.Read(rb[:])
	name := "cordon-imagetest-" + hex.EncodeToString(rb[:])
	ref := "localhost/" + name + ":" + testVersion
	out, err := podman(ctx, "pull", "-q", "oci:"+dir)
	if err != nil {
		t.Fatalf("podman pull oci:%s: %v\n%s", dir, err, out)
	}
	id := lastLine(out)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		podman(c, "rm", "-f", "-t", "5", name)
		podman(c, "volume", "rm", "-f", name)
		podman(c, "rmi", "-f", id)
	})
	if out, err := podman(ctx, "tag", id, ref); err != nil {
		t.Fatalf("podman tag: %v\n%s", err, out)
	}

	// The controller, its own network namespace (nothing clashes with the
	// host's ports), a fresh named volume.
	// Hardened as in deploy/compose: read-only root, no capabilities, no
	// new privileges.
	run := append(append([]string{"run", "-d", "--name", name, "--network", "none", "-v", name + ":" + DataDir,
		"--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}, podmanRunFlags...), ref)
	if out, err := podman(ctx, run...); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	// Podman keeps HEALTHCHECK only for Docker-format images, so run the
	// image's health check command as the engine would: inside the
	// container, with exec.
	hc := cf.Config.Healthcheck.Test[1:]
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := podman(ctx, append([]string{"exec", name}, hc...)...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := podman(ctx, "logs", name)
			t.Fatalf("the container's health check did not pass in 90s: %v %s\nlogs:\n%s", err, out, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if out, err := podman(ctx, "exec", name, hc[0], strings.Replace(hc[1], "/healthz", "/readyz", 1)); err != nil {
		t.Errorf("healthy but not ready: %v %s", err, out)
	}
	if out, err := podman(ctx, "exec", name, hc[0], "http://127.0.0.1:1/healthz"); err == nil {
		t.Errorf("the health check passed against a closed port: %s", out)
	}
	user, err := podman(ctx, "inspect", "--format", "{{.Config.User}}", name)
	if err != nil || user != User {
		t.Errorf("container user %q (%v), want %s", user, err, User)
	}
	mnt, err := podman(ctx, "volume", "inspect", "--format", "{{.Mountpoint}}", name)
	if err != nil {
		t.Fatalf("podman volume inspect: %v %s", err, mnt)
	}
	for _, p := range []string{mnt, filepath.Join(mnt, "controller"), filepath.Join(mnt, "controller", "admin-token"), filepath.Join(mnt, "controller", "ca-key.pem")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("the volume lacks %s: %v", p, err)
			continue
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != UID || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: uid %d mode %v, want nonroot and private", p, uid, st.Mode().Perm())
		}
	}

	// The tun-mode copy: refused without NET_ADMIN (the kernel will not
	// grant its file capabilities), runs with the documented flags, and
	// with compose's: every capability dropped but its two.
	tun := []string{"run", "--rm", "--network", "none", "--entrypoint", BinDir + "/" + TunGateway}
	if out, err := podman(ctx, append(append(append(tun, podmanRunFlags...), ref), "--version")...); err == nil || !strings.Contains(out, "operation not permitted") {
		t.Errorf("%s ran without NET_ADMIN: %v %s", TunGateway, err, out)
	}
	withCap := append(append(append(tun, "--cap-add", "NET_ADMIN", "--device", "/dev/net/tun"), podmanRunFlags...), ref)
	if out, err := podman(ctx, append(withCap, "--version")...); err != nil || !strings.Contains(out, testVersion) {
		t.Errorf("%s with --cap-add NET_ADMIN --device /dev/net/tun: %v %s", TunGateway, err, out)
	}
	composeCaps := append(append(append(tun, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN,NET_BIND_SERVICE", "--device", "/dev/net/tun"), podmanRunFlags...), ref)
	if out, err := podman(ctx, append(composeCaps, "--version")...); err != nil || !strings.Contains(out, testVersion) {
		t.Errorf("%s with only NET_ADMIN and NET_BIND_SERVICE: %v %s", TunGateway, err, out)
	}
	noBind := append(append(append(tun, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--device", "/dev/net/tun"), podmanRunFlags...), ref)
	if out, err := podman(ctx, append(noBind, "--version")...); err == nil {
		t.Errorf("%s ran without NET_BIND_SERVICE in the bounding set: its file capabilities were not applied (%s)", TunGateway, out)
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}
