package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/cordonhq/cordon/deploy/check/image"
)

const dir = "../../k8s"

var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// decodeAll decodes every YAML document of data strictly.
func decodeAll(name string, data []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if gvk.Version == "" || gvk.Kind == "" {
			return nil, fmt.Errorf("%s: document %d has no apiVersion or kind", name, i)
		}
		objs = append(objs, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// manifests decodes every manifest in deploy/k8s.
func manifests(t *testing.T) []runtime.Object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var all []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(f, data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		all = append(all, objs...)
	}
	return all
}

func find[T runtime.Object](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok {
			if m, ok := o.(interface{ GetName() string }); ok && m.GetName() == name {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %T named %s in %s", zero, name, dir)
	return zero
}

func TestManifests(t *testing.T) {
	objs := manifests(t)
	for _, o := range objs {
		m := o.(interface {
			GetNamespace() string
			GetName() string
		})
		if _, ns := o.(*corev1.Namespace); !ns && m.GetNamespace() != "cordon" {
			t.Errorf("%T %s is in namespace %q, want cordon", o, m.GetName(), m.GetNamespace())
		}
	}
	find[*corev1.Namespace](t, objs, "cordon")

	// The controller.
	sts := find[*appsv1.StatefulSet](t, objs, "cordon-controller")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("controller replicas %v, want 1 (SQLite)", sts.Spec.Replicas)
	}
	svc := find[*corev1.Service](t, objs, "cordon-controller")
	if sts.Spec.ServiceName != svc.Name {
		t.Errorf("StatefulSet serviceName %q, Service %q", sts.Spec.ServiceName, svc.Name)
	}
	checkSelects(t, svc, sts.Spec.Template.Labels)
	checkPorts(t, svc, "8443/TCP", "8443/UDP", "9101/TCP")
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().IsZero() {
		t.Fatalf("controller: want one volume claim template with a size")
	}
	pod := sts.Spec.Template.Spec
	checkNonroot(t, "controller", pod)
	c := container(t, pod, "controller")
	checkMount(t, "controller", c, sts.Spec.VolumeClaimTemplates[0].Name, image.DataDir)
	if len(c.Command) != 0 {
		t.Errorf("controller: command %q replaces the image's entrypoint", c.Command)
	}
	if !slices.Contains(c.Args, "--metrics-listen=:9101") {
		t.Errorf("controller: args %q must serve health on the pod's address for the kubelet", c.Args)
	}
	if i := slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--hosts=") }); i < 0 || !strings.Contains(c.Args[i], "cordon-controller.cordon.svc") {
		t.Errorf("controller: args %q must name the Service in --hosts (the gateway dials it)", c.Args)
	}
	checkProbes(t, "controller", c, 9101)
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("controller: securityContext %+v, want no escalation, read-only root, no capabilities", sc)
	}
	var dsn bool
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "cordon-postgres" {
			dsn = e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional
		}
	}
	if !dsn {
		t.Errorf("controller: no optional reference to the Secret cordon-postgres")
	}

	// The gateway.
	dep := find[*appsv1.Deployment](t, objs, "cordon-gateway")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("gateway: want one replica, Recreate (one gateway's state on a ReadWriteOnce volume)")
	}
	gsvc := find[*corev1.Service](t, objs, "cordon-gateway")
	checkSelects(t, gsvc, dep.Spec.Template.Labels)
	checkPorts(t, gsvc, "51820/UDP")
	gpod := dep.Spec.Template.Spec
	checkNonroot(t, "gateway", gpod)
	g := container(t, gpod, "gateway")
	if !slices.Contains(g.Args, "--metrics-listen=:9102") {
		t.Errorf("gateway: args %q must serve health on the pod's address for the kubelet", g.Args)
	}
	checkProbes(t, "gateway", g, 9102)
	if !slices.Equal(g.Command, []string{image.BinDir + "/" + image.TunGateway}) {
		t.Errorf("gateway: command %q, want the capability copy %s/%s", g.Command, image.BinDir, image.TunGateway)
	}
	if !slices.Contains(g.Args, "--mode=tun") || !slices.Contains(g.Args, "--state-dir="+image.DataDir+"/gateway") || !slices.Contains(g.Args, "--controller=https://cordon-controller.cordon.svc:8443") {
		t.Errorf("gateway: args %q", g.Args)
	}
	gsc := g.SecurityContext
	if gsc == nil || gsc.Capabilities == nil || !slices.Equal(gsc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE"}) || !slices.Equal(gsc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("gateway: capabilities %+v, want drop ALL, add NET_ADMIN and NET_BIND_SERVICE only", gsc)
	} else if gsc.AllowPrivilegeEscalation != nil && !*gsc.AllowPrivilegeEscalation {
		t.Errorf("gateway: allowPrivilegeEscalation false sets no_new_privs: the file capability would not apply")
	} else if gsc.Privileged != nil && *gsc.Privileged {
		t.Errorf("gateway: privileged")
	}
	var fwd bool
	for _, s := range gpod.SecurityContext.Sysctls {
		fwd = fwd || (s.Name == "net.ipv4.ip_forward" && s.Value == "1")
	}
	if !fwd {
		t.Errorf("gateway: pod sysctls lack net.ipv4.ip_forward=1")
	}
	var uapi bool
	for _, m := range g.VolumeMounts {
		uapi = uapi || m.MountPath == image.UAPIDir
	}
	if !uapi {
		t.Errorf("gateway: nothing mounted at %s: with a read-only root wireguard-go cannot make its UAPI socket", image.UAPIDir)
	}
	var tun, state bool
	for _, v := range gpod.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/dev/net/tun" && v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathCharDev {
			tun = true
			checkMount(t, "gateway", g, v.Name, "/dev/net/tun")
		}
		if v.PersistentVolumeClaim != nil {
			find[*corev1.PersistentVolumeClaim](t, objs, v.PersistentVolumeClaim.ClaimName)
			checkMount(t, "gateway", g, v.Name, image.DataDir)
			state = true
		}
	}
	if !tun || !state {
		t.Errorf("gateway: /dev/net/tun device %v, state volume %v", tun, state)
	}
}

// checkProbes: startup and liveness GET /healthz, readiness /readyz, on
// the container's port named metrics, which is port.
func checkProbes(t *testing.T, who string, c corev1.Container, port int32) {
	t.Helper()
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		want := "/healthz"
		if name == "readiness" {
			want = "/readyz"
		}
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s: %s probe %+v, want GET %s on port metrics", who, name, p, want)
		}
	}
	if got := namedPort(c, "metrics"); got != port {
		t.Errorf("%s: port metrics is %d, want %d", who, got, port)
	}
}

func checkNonroot(t *testing.T, who string, pod corev1.PodSpec) {
	t.Helper()
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != image.UID ||
		sc.FSGroup == nil || *sc.FSGroup != image.GID {
		t.Errorf("%s: pod securityContext %+v, want runAsNonRoot, runAsUser %d, fsGroup %d", who, sc, image.UID, image.GID)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a service account token it never uses", who)
	}
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func checkMount(t *testing.T, who string, c corev1.Container, volume, path string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume && m.MountPath == path {
			return
		}
	}
	t.Errorf("%s: volume %s not mounted at %s", who, volume, path)
}

func namedPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func checkSelects(t *testing.T, svc *corev1.Service, labels map[string]string) {
	t.Helper()
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("Service %s selects nothing", svc.Name)
	}
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("Service %s selects %s=%s, the pods have %q", svc.Name, k, v, labels[k])
		}
	}
}

func checkPorts(t *testing.T, svc *corev1.Service, want ...string) {
	t.Helper()
	var got []string
	for _, p := range svc.Spec.Ports {
		got = append(got, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("Service %s ports %q, want %q", svc.Name, got, want)
	}
}

// TestStrictDecodingCatchesMistakes: the decoder the test above relies on
// fails on an unknown field, a wrong type and a misspelt kind, so that
// test is not passing on fields it never read.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(dir, "20-gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"unknown field": {"      automountServiceAccountToken: false", "      automountServiceAcountToken: false"},
		"wrong type":    {"  replicas: 1", "  replicas: one"},
		"unknown kind":  {"kind: Deployment", "kind: Deploymnet"},
		"nested field":  {"              add: [NET_ADMIN, NET_BIND_SERVICE]", "              add: [NET_ADMIN, NET_BIND_SERVICE]\n              ambient: [NET_ADMIN]"},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(orig), edit[0]) {
				t.Fatalf("20-gateway.yaml no longer holds %q: update this test", edit[0])
			}
			if _, err := decodeAll("edited", []byte(strings.Replace(string(orig), edit[0], edit[1], 1))); err == nil {
				t.Fatalf("a manifest with a %s decoded", name)
			}
		})
	}
}
