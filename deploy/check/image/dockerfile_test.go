package image

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// dockerfileStages parses the repository's Dockerfile with BuildKit's own
// parser.
func dockerfileStages(t *testing.T) []instructions.Stage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse the Dockerfile: %v", err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("read the Dockerfile's instructions: %v", err)
	}
	if len(stages) != 2 {
		t.Fatalf("the Dockerfile has %d stages, want 2 (build, final)", len(stages))
	}
	return stages
}

// TestDockerfileMatchesBuild: the Dockerfile's final stage declares what
// this package builds (users, paths, entrypoint, health check, labels,
// ports, volume), and its build stage builds the same binaries and the
// same tun-mode copy. Change one, change the other.
func TestDockerfileMatchesBuild(t *testing.T) {
	stages := dockerfileStages(t)
	build, final := stages[0], stages[1]
	if final.BaseName != Base {
		t.Errorf("final base %q, want %q: RootFS stands in for that base's files (passwd, group, CA certificates); update both", final.BaseName, Base)
	}
	// Labels are expanded as BuildKit does, with the build argument.
	lex := shell.NewLex('\\')
	env := shell.EnvsFromSlice([]string{"VERSION=" + testVersion})
	want := Config(testVersion)
	var (
		user       string
		entrypoint []string
		volumes    []string
		ports      []string
		labels     = map[string]string{}
		health     *instructions.HealthCheckCommand
		copies     []*instructions.CopyCommand
	)
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("ENTRYPOINT is in shell form; the image has no shell")
			}
			entrypoint = c.CmdLine
		case *instructions.CmdCommand:
			t.Errorf("the final stage sets CMD %q; the image sets none", c.CmdLine)
		case *instructions.VolumeCommand:
			volumes = append(volumes, c.Volumes...)
		case *instructions.ExposeCommand:
			ports = append(ports, c.Ports...)
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				v, _, err := lex.ProcessWord(kv.Value, env)
				if err != nil {
					t.Errorf("LABEL %s: %v", kv.Key, err)
				}
				labels[kv.Key] = v
			}
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.CopyCommand:
			copies = append(copies, c)
		case *instructions.ArgCommand:
		default:
			t.Errorf("the final stage has %T (%s) that the engine-less build does not know of: add it to package image and this test", c, c.Name())
		}
	}
	if user != want.User {
		t.Errorf("Dockerfile USER %q, build %q", user, want.User)
	}
	if !slices.Equal(entrypoint, want.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %q, build %q", entrypoint, want.Entrypoint)
	}
	if got, exp := slices.Sorted(slices.Values(volumes)), slices.Sorted(maps.Keys(want.Volumes)); !slices.Equal(got, exp) {
		t.Errorf("Dockerfile VOLUME %q, build %q", got, exp)
	}
	if got, exp := slices.Sorted(slices.Values(ports)), slices.Sorted(maps.Keys(want.ExposedPorts)); !slices.Equal(got, exp) {
		t.Errorf("Dockerfile EXPOSE %q, build %q", got, exp)
	}
	if !maps.Equal(labels, want.Labels) {
		t.Errorf("Dockerfile LABEL %q, build %q", labels, want.Labels)
	}
	if health == nil {
		t.Errorf("Dockerfile has no HEALTHCHECK")
	} else {
		h, w := health.Health, want.Healthcheck
		if !slices.Equal(h.Test, w.Test) || h.Interval != w.Interval || h.Timeout != w.Timeout || h.StartPeriod != w.StartPeriod || h.Retries != w.Retries {
			t.Errorf("Dockerfile HEALTHCHECK %+v, build %+v", h, w)
		}
	}
	// The binaries land in BinDir as they are; the data directory in
	// /var/lib, owned by nonroot.
	var binCopy, dataCopy, uapiCopy bool
	for _, c := range copies {
		switch {
		case c.From == build.Name && slices.Equal(c.SourcePaths, []string{"/out/"}) && c.DestPath == BinDir+"/" && c.Chown == "":
			binCopy = true
		case c.From == build.Name && slices.Equal(c.SourcePaths, []string{"/data/"}) && c.DestPath == filepath.Dir(DataDir)+"/" && c.Chown == User:
			dataCopy = true
		case c.From == build.Name && slices.Equal(c.SourcePaths, []string{"/run-wg/"}) && c.DestPath == filepath.Dir(UAPIDir)+"/" && c.Chown == User:
			uapiCopy = true
		default:
			t.Errorf("COPY %+v is not one the engine-less build makes", c)
		}
	}
	if !binCopy || !dataCopy || !uapiCopy {
		t.Errorf("the final stage must COPY --from=%s /out/ %s/, COPY --from=%s --chown=%s /data/ %s/ and /run-wg/ %s/ (binaries %v, data %v, UAPI %v)",
			build.Name, BinDir, build.Name, User, filepath.Dir(DataDir), filepath.Dir(UAPIDir), binCopy, dataCopy, uapiCopy)
	}

	// The build stage: the same packages built static with the version
	// stamped, the tun copy given its capability, the data directory 0700.
	var runs []string
	for _, c := range build.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			runs = append(runs, strings.Join(r.CmdLine, " "))
		}
	}
	all := strings.Join(runs, "\n")
	for _, frag := range []string{
		"CGO_ENABLED=0 go build",
		"-X " + ModulePath + "/internal/buildinfo.version=${VERSION}",
		"cp /out/cordon-gateway /out/" + TunGateway,
		"setcap " + TunCaps + " /out/" + TunGateway,
		"mkdir -p /data/" + filepath.Base(DataDir) + " /run-wg/" + filepath.Base(UAPIDir) + " && chmod 0700 /data/" + filepath.Base(DataDir) + " && chmod 0755 /run-wg/" + filepath.Base(UAPIDir),
	} {
		if !strings.Contains(all, frag) {
			t.Errorf("the build stage's RUN lines lack %q:\n%s", frag, all)
		}
	}
	for _, b := range Binaries {
		if !strings.Contains(all, " "+b.Package) {
			t.Errorf("the Dockerfile does not build %s (%s)", b.Name, b.Package)
		}
	}
}

// TestDockerignoreKeepsSecretsOut: the build context leaves out VCS data,
// built binaries and local state.
func TestDockerignoreKeepsSecretsOut(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatalf("no .dockerignore: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	for _, p := range []string{".git", "bin/", "**/*.test", "**/*.db", "**/*.key", "**/admin-token"} {
		if !slices.Contains(lines, p) {
			t.Errorf(".dockerignore lacks %q", p)
		}
	}
}
