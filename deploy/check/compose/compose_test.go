package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cordonhq/cordon/deploy/check/image"
)

const composeFile = "../../compose/compose.yaml"

// load loads a compose file as `docker compose` would, with env as the
// only environment.
func load(t *testing.T, path string, env ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithEnv(env), cli.WithName("cordon"))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func TestComposeFile(t *testing.T) {
	p, err := load(t, composeFile, "CORDON_PUBLIC_HOST=gw.example.org", "CORDON_IMAGE=cordon:v9")
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(got, []string{"app", "controller", "gateway"}) {
		t.Fatalf("services %q, want app, controller, gateway", got)
	}
	ctl, gw, app := p.Services["controller"], p.Services["gateway"], p.Services["app"]

	// Both Cordon services run the one image, as its nonroot user, with the
	// volume at the image's data directory, read-only roots.
	for _, s := range []types.ServiceConfig{ctl, gw} {
		if s.Image != "cordon:v9" {
			t.Errorf("%s: image %q, want $CORDON_IMAGE", s.Name, s.Image)
		}
		if s.User != "" {
			t.Errorf("%s: user %q: runs as the image's nonroot user, never root", s.Name, s.User)
		}
		if !s.ReadOnly || !slices.Contains(s.Tmpfs, "/tmp") {
			t.Errorf("%s: want read_only with a /tmp tmpfs", s.Name)
		}
		if !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: cap_drop %q, want ALL", s.Name, s.CapDrop)
		}
		var data bool
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume {
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %q is not declared", s.Name, v.Source)
				}
			}
			if v.Type == types.VolumeTypeVolume && v.Target == image.DataDir && !v.ReadOnly {
				data = true
			}
		}
		if !data {
			t.Errorf("%s: no named volume at %s", s.Name, image.DataDir)
		}
	}
	if ctl.Volumes[0].Source == gw.Volumes[0].Source {
		t.Errorf("controller and gateway share the volume %q: the gateway must never see the controller's keys", ctl.Volumes[0].Source)
	}

	// The controller: the image's entrypoint, no capabilities, no new
	// privileges, its own name in its certificate for the gateway.
	if len(ctl.Entrypoint) != 0 {
		t.Errorf("controller: entrypoint %q overrides the image's", ctl.Entrypoint)
	}
	if len(ctl.CapAdd) != 0 || !slices.Contains(ctl.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("controller: cap_add %q security_opt %q", ctl.CapAdd, ctl.SecurityOpt)
	}
	if i := slices.Index(ctl.Command, "--hosts"); i < 0 || !strings.HasPrefix(ctl.Command[i+1], "controller,") || !strings.Contains(ctl.Command[i+1], "gw.example.org") {
		t.Errorf("controller: command %q must put controller and $CORDON_PUBLIC_HOST in --hosts", ctl.Command)
	}
	if ctl.HealthCheck != nil && ctl.HealthCheck.Disable {
		t.Errorf("controller: the image's health check is disabled")
	}
	wantPorts := map[string]bool{"8443/tcp": false, "8443/udp": false}
	for _, pc := range ctl.Ports {
		wantPorts[pc.Published+"/"+pc.Protocol] = pc.Target == 8443
	}
	for k, ok := range wantPorts {
		if !ok {
			t.Errorf("controller: port %s not published to 8443", k)
		}
	}

	// The gateway in tun mode: the capability copy of the binary, exactly
	// NET_ADMIN, the TUN device, forwarding; no-new-privileges would keep
	// the file capability from working.
	if !slices.Equal(gw.Entrypoint, []string{image.BinDir + "/" + image.TunGateway}) {
		t.Errorf("gateway: entrypoint %q, want %s/%s", gw.Entrypoint, image.BinDir, image.TunGateway)
	}
	if !slices.Equal(gw.CapAdd, []string{"NET_ADMIN", "NET_BIND_SERVICE"}) {
		t.Errorf("gateway: cap_add %q, want exactly NET_ADMIN, NET_BIND_SERVICE (cordon-gateway-tun's %s)", gw.CapAdd, image.TunCaps)
	}
	if len(gw.Devices) != 1 || gw.Devices[0].Source != "/dev/net/tun" || gw.Devices[0].Target != "/dev/net/tun" {
		t.Errorf("gateway: devices %+v, want /dev/net/tun", gw.Devices)
	}
	if gw.Sysctls["net.ipv4.ip_forward"] != "1" {
		t.Errorf("gateway: sysctls %v lack net.ipv4.ip_forward=1", gw.Sysctls)
	}
	for _, o := range gw.SecurityOpt {
		if strings.HasPrefix(o, "no-new-privileges") {
			t.Errorf("gateway: security_opt %q stops the kernel granting cordon-gateway-tun its capability", o)
		}
	}
	for _, f := range []string{"--mode=tun", "--state-dir=" + image.DataDir + "/gateway", "--controller=https://controller:8443", "--endpoint=gw.example.org:51820"} {
		if !slices.Contains(gw.Command, f) {
			t.Errorf("gateway: command %q lacks %s", gw.Command, f)
		}
	}
	// A tmpfs would be root's (an engine's tmpfs mode is not always
	// honoured); a named volume is filled from the image, owned by
	// nonroot.
	if !slices.ContainsFunc(gw.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == image.UAPIDir
	}) {
		t.Errorf("gateway: read-only root without a named volume at %s: wireguard-go cannot make its UAPI socket", image.UAPIDir)
	}
	// Its health check asks its own /readyz (the image's default asks the
	// controller's port).
	if !slices.Contains(gw.Command, "--metrics-listen=127.0.0.1:9102") {
		t.Errorf("gateway: command %q lacks --metrics-listen=127.0.0.1:9102", gw.Command)
	}
	if h := gw.HealthCheck; h == nil || h.Disable || !slices.Equal(h.Test, []string{"CMD", image.BinDir + "/cordon-healthcheck", "http://127.0.0.1:9102/readyz"}) {
		t.Errorf("gateway: healthcheck %+v, want cordon-healthcheck of http://127.0.0.1:9102/readyz", h)
	}
	if d, ok := gw.DependsOn["controller"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("gateway: must wait for a healthy controller (depends_on %+v)", gw.DependsOn)
	}
	if _, ok := gw.Networks["apps"]; !ok {
		t.Errorf("gateway: not on the apps network")
	}

	// The app: only on the internal apps network, so only the gateway
	// reaches it.
	if _, ok := app.Networks["edge"]; ok || len(app.Networks) != 1 {
		t.Errorf("app: networks %v, want apps only", app.Networks)
	}
	if n := p.Networks["apps"]; !n.Internal {
		t.Errorf("the apps network is not internal: the app would be reachable around the gateway")
	}
	if len(app.Ports) != 0 {
		t.Errorf("app publishes ports %v: it must be reachable only through the gateway", app.Ports)
	}
}

// TestComposeRejectsMistakes: the loader this test relies on does fail on
// an unknown key and a wrong type, so the test above is not passing on a
// file it did not read.
func TestComposeRejectsMistakes(t *testing.T) {
	orig, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"unknown key": {"    cap_add: [NET_ADMIN", "    cap_addd: [NET_ADMIN"},
		"wrong type":  {"    user: \"65534:65534\"\n    read_only: true", "    user: \"65534:65534\"\n    read_only: [yes]"},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(orig), edit[0]) {
				t.Fatalf("%s no longer holds %q: update this test", composeFile, edit[0])
			}
			dir := t.TempDir()
			bad := filepath.Join(dir, "compose.yaml")
			if err := os.WriteFile(bad, []byte(strings.Replace(string(orig), edit[0], edit[1], 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := load(t, bad); err == nil {
				t.Fatalf("a compose file with a %s loaded", name)
			}
		})
	}
}
