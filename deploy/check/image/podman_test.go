package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ref, name := podmanImage(t, ctx)
	img := readImage(t, testLayout(t))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

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

// podmanImage loads the test layout into podman under a unique name and
// returns its reference and a name prefix for containers and volumes;
// everything is removed when t ends.
func podmanImage(t *testing.T, ctx context.Context) (ref, name string) {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("SKIPPED LOUDLY: podman is not installed (apt-get install podman runc; .ci/run does): the image is checked without an engine only")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: podman runs rootful here (needs root)")
	}
	dir := testLayout(t)
	var rb [6]byte
	rand.Read(rb[:])
	name = "cordon-imagetest-" + hex.EncodeToString(rb[:])
	ref = "localhost/" + name + ":" + testVersion
	out, err := podman(ctx, "pull", "-q", "oci:"+dir)
	if err != nil {
		t.Fatalf("podman pull oci:%s: %v\n%s", dir, err, out)
	}
	id := lastLine(out)
	t.Cleanup(func() { podmanCleanup(name, id) })
	if out, err := podman(ctx, "tag", id, ref); err != nil {
		t.Fatalf("podman tag: %v\n%s", err, out)
	}
	return ref, name
}

// podmanCleanup removes the containers and volumes named prefix* and the
// image id.
func podmanCleanup(prefix, id string) {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := podman(c, "ps", "-a", "-q", "--filter", "name="+prefix); err == nil && out != "" {
		// Dependent containers (another's network) first: newest first.
		ids := strings.Fields(out)
		slices.Reverse(ids)
		for _, cid := range ids {
			podman(c, "rm", "-f", "-t", "5", cid)
		}
	}
	if out, err := podman(c, "volume", "ls", "-q", "--filter", "name="+prefix); err == nil && out != "" {
		podman(c, append([]string{"volume", "rm", "-f"}, strings.Fields(out)...)...)
	}
	podman(c, "rmi", "-f", id)
}

// TestPodmanTunGateway runs a tun-mode gateway from the image as the
// documentation says: cordon-gateway-tun as uid 65532 with a read-only
// root, every capability dropped but NET_ADMIN and NET_BIND_SERVICE, the
// TUN device and forwarding. It enrolls with a controller container (whose
// network namespace it shares: this machine has no bridge networking to
// spare), creates its TUN device, installs its firewall, serves DNS on
// port 53, and the controller lists it up.
func TestPodmanTunGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref, name := podmanImage(t, ctx)
	ctl, gw := name+"-ctl", name+"-gw"

	run := append(append([]string{"run", "-d", "--name", ctl, "--network", "none", "--sysctl", "net.ipv4.ip_forward=1",
		"-v", ctl + ":" + DataDir}, podmanRunFlags...), ref)
	if out, err := podman(ctx, run...); err != nil {
		t.Fatalf("podman run the controller: %v\n%s", err, out)
	}
	ctlctl := func(args ...string) (string, error) {
		return podman(ctx, append([]string{"exec", ctl, BinDir + "/cordonctl"}, args...)...)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := ctlctl("login", "--controller", "https://localhost:8443",
			"--token-file", DataDir+"/controller/admin-token", "--ca-cert", DataDir+"/controller/ca.pem")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := podman(ctx, "logs", ctl)
			t.Fatalf("cordonctl login in the controller's container: %v %s\nlogs:\n%s", err, out, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if out, err := ctlctl("segment", "create", "apps", "--cidr", "10.99.0.0/24"); err != nil {
		t.Fatalf("segment create: %v %s", err, out)
	}
	out, err := ctlctl("gateway", "token", "create", "--segment", "apps", "--name", "gw1", "--ttl", "10m")
	if err != nil {
		t.Fatalf("gateway token create: %v %s", err, out)
	}
	var token string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "cordon-enroll-") {
			token = strings.TrimSpace(l)
		}
	}
	if token == "" {
		t.Fatalf("no token in %q", out)
	}

	// The enrollment files, readable by the gateway's user.
	enroll := t.TempDir()
	if err := os.Chmod(enroll, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := podman(ctx, "cp", ctl+":"+DataDir+"/controller/ca.pem", filepath.Join(enroll, "ca.pem")); err != nil {
		t.Fatalf("podman cp ca.pem: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(enroll, "gateway-token"), []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(enroll, "ca.pem"), 0o644)

	grun := append(append([]string{"run", "-d", "--name", gw, "--network", "container:" + ctl,
		"--entrypoint", BinDir + "/" + TunGateway,
		"--read-only", "--tmpfs", "/tmp",
		"--cap-drop", "ALL", "--cap-add", "NET_ADMIN,NET_BIND_SERVICE", "--device", "/dev/net/tun",
		"-v", gw + ":" + DataDir, "-v", gw + "-run:" + UAPIDir, "-v", enroll + ":/etc/cordon/enroll:ro"}, podmanRunFlags...),
		ref, "--mode", "tun", "--state-dir", DataDir+"/gateway", "--controller", "https://localhost:8443",
		"--ca-cert", "/etc/cordon/enroll/ca.pem", "--token-file", "/etc/cordon/enroll/gateway-token",
		"--endpoint", "192.0.2.1:51820", "--listen-port", "51821")
	if out, err := podman(ctx, grun...); err != nil {
		t.Fatalf("podman run the gateway: %v\n%s", err, out)
	}
	deadline = time.Now().Add(90 * time.Second)
	for {
		out, err := ctlctl("gateway", "list")
		if err == nil && slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
			f := strings.Fields(l)
			return len(f) > 3 && f[1] == "gw1" && f[3] == "up"
		}) {
			break
		}
		state, _ := podman(ctx, "inspect", "--format", "{{.State.Status}}", gw)
		if time.Now().After(deadline) || state == "exited" {
			logs, _ := podman(ctx, "logs", gw)
			t.Fatalf("the gateway is not up (container %s): %v\n%s\ngateway log:\n%s", state, err, out, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	logs, _ := podman(ctx, "logs", gw)
	for _, want := range []string{"host firewall installed", "dns listening", "control connection up"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the gateway's log lacks %q:\n%s", want, logs)
		}
	}
	if user, err := podman(ctx, "inspect", "--format", "{{.Config.User}}", gw); err != nil || user != User {
		t.Errorf("gateway container user %q (%v), want %s", user, err, User)
	}
}
