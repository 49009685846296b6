// Package packaging builds Cordon's .deb and .rpm packages with nfpm
// (github.com/goreleaser/nfpm/v2), from the repository as it is: the four
// binaries (version stamped through internal/buildinfo, as the Makefile
// does), the systemd units of deploy/systemd, a sysusers.d file for the
// cordon user, a tmpfiles.d file for its directories, man pages generated
// from the commands themselves (internal/gendocs) and shell completions
// from cobra.
//
// It is a module of its own (packaging/go.mod) so that nfpm and its
// dependency tree (about forty modules: archive, signing and compression
// libraries) never enter the product's go.mod or binaries.
//
// One package, "cordon", holds all four binaries: installing it starts
// nothing, so the same package serves a controller host, a gateway and an
// IT-managed desktop; the operator enables the unit the host needs.
package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Name is the package's name.
const Name = "cordon"

// Binaries are the four commands, by their main package, as the Makefile
// builds them.
var Binaries = map[string]string{
	"cordon-controller": "./controller/cmd/cordon-controller",
	"cordon-gateway":    "./gateway/cmd/cordon-gateway",
	"cordon":            "./client/cmd/cordon",
	"cordonctl":         "./cordonctl/cmd/cordonctl",
}

// completed are the cobra commands whose shell completions ship.
var completed = []string{"cordonctl", "cordon"}

// buildinfoVar is the variable the version is stamped into.
const buildinfoVar = "github.com/cordonhq/cordon/internal/buildinfo.version"

// Options say what to build.
type Options struct {
	Repo    string    // the repository's root
	Version string    // stamped into the binaries, e.g. v1.2.3 or git describe's output
	BinDir  string    // already built binaries (make build); empty: build them
	WorkDir string    // scratch space (staged files)
	OutDir  string    // where the packages are written
	Formats []string  // deb, rpm
	Arch    string    // GOARCH; empty: this machine's
	Date    time.Time // file times and the man pages' date (reproducible builds); zero: now
	Log     *slog.Logger
}

// Build builds the packages and returns their paths.
func Build(ctx context.Context, o Options) ([]string, error) {
	if o.Repo == "" || o.Version == "" || o.WorkDir == "" || o.OutDir == "" || len(o.Formats) == 0 {
		return nil, errors.New("packaging: Repo, Version, WorkDir, OutDir and Formats are required")
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.Date.IsZero() {
		o.Date = time.Now().UTC().Truncate(time.Second)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	pkgVersion, err := PackageVersion(o.Version)
	if err != nil {
		return nil, err
	}
	st := &stage{o: o, dir: o.WorkDir}
	if err := st.binaries(ctx); err != nil {
		return nil, err
	}
	if err := st.manPages(ctx); err != nil {
		return nil, err
	}
	if err := st.completions(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create the output directory: %w", err)
	}
	var out []string
	for _, format := range o.Formats {
		p, err := st.pack(format, pkgVersion)
		if err != nil {
			return nil, err
		}
		o.Log.Info("package written", "format", format, "path", p)
		out = append(out, p)
	}
	return out, nil
}

var (
	versionRE   = regexp.MustCompile(`^v?([0-9]+\.[0-9]+[0-9A-Za-z.+~]*)(-.*)?$`) // MAJOR.MINOR at least: a commit hash may start with a digit
	describedRE = regexp.MustCompile(`^-[0-9]+-g[0-9a-f]+`)                       // git describe: commits past the tag
)

// PackageVersion turns a build version into one dpkg and rpm both accept
// and order sensibly: v1.2.3 is 1.2.3, v1.2.3-rc1 is 1.2.3~rc1 (before
// 1.2.3), v1.2.3-4-gabcdef0 is 1.2.3+4.gabcdef0 (after it), and a bare commit (git describe in a tree with no tag, "dev")
// is 0.0.0~git.<commit>.
func PackageVersion(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" || strings.ContainsAny(v, " \t\n/") {
		return "", fmt.Errorf("version %q: want e.g. v1.2.3 or a git describe output", v)
	}
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return "0.0.0~git." + strings.NewReplacer("-", ".", "_", ".").Replace(v), nil
	}
	out := m[1]
	if m[2] != "" {
		sep := "~"
		if describedRE.MatchString(m[2]) {
			sep = "+"
		}
		out += sep + strings.NewReplacer("-", ".", "_", ".").Replace(strings.TrimPrefix(m[2], "-"))
	}
	return out, nil
}

// stage is the scratch directory the package is assembled from.
type stage struct {
	o   Options
	dir string
	bin string // the binaries
}

func (s *stage) ldflags() string {
	return "-s -w -X " + buildinfoVar + "=" + s.o.Version
}

// goBuild builds the four commands into dir.
func (s *stage) goBuild(ctx context.Context, dir string, tags ...string) error {
	args := []string{"build", "-trimpath", "-ldflags", s.ldflags(), "-o", dir + string(filepath.Separator)}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	for _, name := range slices.Sorted(maps.Keys(Binaries)) {
		args = append(args, Binaries[name])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = s.o.Repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+s.o.Arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *stage) binaries(ctx context.Context) error {
	if s.o.BinDir != "" {
		s.bin = s.o.BinDir
		for name := range Binaries {
			if _, err := os.Stat(filepath.Join(s.bin, name)); err != nil {
				return fmt.Errorf("binary %s: %w (run make build, or leave the binary directory empty to build them here)", name, err)
			}
		}
		return nil
	}
	s.bin = filepath.Join(s.dir, "bin")
	s.o.Log.Info("building the binaries", "version", s.o.Version)
	return s.goBuild(ctx, s.bin)
}

// manPages builds the commands with -tags gendocs (the shipped binaries
// have no page generator) and has each write its pages, gzipped.
func (s *stage) manPages(ctx context.Context) error {
	gd := filepath.Join(s.dir, "gendocs")
	s.o.Log.Info("building the man page generators")
	if s.o.Arch != runtime.GOARCH {
		return fmt.Errorf("man pages: the generators run here, so the package's architecture (%s) must be this machine's (%s)", s.o.Arch, runtime.GOARCH)
	}
	if err := s.goBuild(ctx, gd, "gendocs"); err != nil {
		return err
	}
	raw := filepath.Join(s.dir, "man.raw")
	for _, name := range slices.Sorted(maps.Keys(Binaries)) {
		cmd := exec.CommandContext(ctx, filepath.Join(gd, name), "__gendocs", raw)
		// A clean environment: defaults read from $CORDON_* must not leak
		// into the pages; "~" makes the client's per-user default read
		// ~/.local/state/cordon.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=~", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(s.o.Date.Unix(), 10)}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("man pages of %s: %w\n%s", name, err, out)
		}
	}
	pages, err := os.ReadDir(raw)
	if err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	for _, p := range pages {
		sect := strings.TrimPrefix(filepath.Ext(p.Name()), ".")
		if sect != "1" && sect != "8" {
			return fmt.Errorf("man page %s: no section 1 or 8", p.Name())
		}
		b, err := os.ReadFile(filepath.Join(raw, p.Name()))
		if err != nil {
			return err
		}
		if err := writeGzip(filepath.Join(s.dir, "man", "man"+sect, p.Name()+".gz"), b); err != nil {
			return fmt.Errorf("man page %s: %w", p.Name(), err)
		}
	}
	return nil
}

// writeGzip writes b gzipped with no name or time in the header (the same
// bytes every build).
func writeGzip(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// completions runs cobra's completion command of each cobra binary.
func (s *stage) completions(ctx context.Context) error {
	for _, name := range completed {
		for _, shell := range []string{"bash", "zsh", "fish"} {
			cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), "completion", shell)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=~"}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || len(out) == 0 {
				return fmt.Errorf("%s completion %s: %v %s", name, shell, err, stderr.String())
			}
			p := filepath.Join(s.dir, "completion", shell, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, out, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// file is one file of the package.
type file struct {
	src, dst string
	mode     os.FileMode
	typ      string // files.Type*; "" is a plain file
	packager string // only in this format's package; "" in all
}

// contents lists what the package installs.
func (s *stage) contents() ([]file, error) {
	repo := func(p string) string { return filepath.Join(s.o.Repo, filepath.FromSlash(p)) }
	var fs []file
	for _, name := range slices.Sorted(maps.Keys(Binaries)) {
		fs = append(fs, file{src: filepath.Join(s.bin, name), dst: "/usr/bin/" + name, mode: 0o755})
	}
	for _, u := range []string{"cordon-controller.service", "cordon-gateway.service", "cordon-client.service"} {
		fs = append(fs, file{src: repo("deploy/systemd/" + u), dst: "/usr/lib/systemd/system/" + u, mode: 0o644})
	}
	fs = append(fs,
		file{src: repo("deploy/systemd/cordon-client.user.service"), dst: "/usr/lib/systemd/user/cordon-client.service", mode: 0o644},
		file{src: repo("deploy/systemd/cordon.sysusers"), dst: "/usr/lib/sysusers.d/cordon.conf", mode: 0o644},
		file{src: repo("deploy/systemd/cordon.tmpfiles"), dst: "/usr/lib/tmpfiles.d/cordon.conf", mode: 0o644},
		// Read by systemd (root) only: the unit's settings, no secrets,
		// but nobody else's business.
		file{src: repo("packaging/etc/controller.env"), dst: "/etc/cordon/controller.env", mode: 0o640, typ: files.TypeConfigNoReplace},
		file{src: repo("packaging/etc/gateway.env"), dst: "/etc/cordon/gateway.env", mode: 0o640, typ: files.TypeConfigNoReplace},
		file{src: repo("README.md"), dst: "/usr/share/doc/cordon/README.md", mode: 0o644},
		file{src: repo("docs/operations.md"), dst: "/usr/share/doc/cordon/operations.md", mode: 0o644},
		file{src: repo("deploy/prometheus/cordon-alerts.yaml"), dst: "/usr/share/cordon/prometheus/cordon-alerts.yaml", mode: 0o644},
		file{src: repo("deploy/grafana/cordon-controller.json"), dst: "/usr/share/cordon/grafana/cordon-controller.json", mode: 0o644},
	)
	for _, name := range completed {
		c := func(shell string) string { return filepath.Join(s.dir, "completion", shell, name) }
		fs = append(fs,
			file{src: c("bash"), dst: "/usr/share/bash-completion/completions/" + name, mode: 0o644},
			file{src: c("zsh"), dst: "/usr/share/zsh/vendor-completions/_" + name, mode: 0o644, packager: "deb"},
			file{src: c("zsh"), dst: "/usr/share/zsh/site-functions/_" + name, mode: 0o644, packager: "rpm"},
			file{src: c("fish"), dst: "/usr/share/fish/vendor_completions.d/" + name + ".fish", mode: 0o644},
		)
	}
	for _, sect := range []string{"1", "8"} {
		dir := filepath.Join(s.dir, "man", "man"+sect)
		pages, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("man pages: %w", err)
		}
		for _, p := range pages {
			fs = append(fs, file{src: filepath.Join(dir, p.Name()), dst: "/usr/share/man/man" + sect + "/" + p.Name(), mode: 0o644})
		}
	}
	for _, f := range fs {
		if _, err := os.Stat(f.src); err != nil {
			return nil, fmt.Errorf("package file %s: %w", f.dst, err)
		}
	}
	return fs, nil
}

// pack writes the package of one format.
func (s *stage) pack(format, version string) (string, error) {
	packager, err := nfpm.Get(format)
	if err != nil {
		return "", fmt.Errorf("package format %q: %w (deb or rpm)", format, err)
	}
	fs, err := s.contents()
	if err != nil {
		return "", err
	}
	script := func(n string) string { return filepath.Join(s.o.Repo, "packaging", "scripts", n) }
	cfg := nfpm.Config{Info: nfpm.Info{
		Name:          Name,
		Arch:          s.o.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "Cordon <cordon@cordonhq.invalid>",
		Vendor:        "Cordon",
		Homepage:      "https://github.com/cordonhq/cordon",
		License:       "Proprietary",
		Description: "Zero-trust network overlay for hospitals\n" +
			"Cordon puts PHI applications behind gateways that authorize every flow.\n" +
			"This package holds the controller (cordon-controller), the gateway\n" +
			"(cordon-gateway), the clinician's client (cordon) and the admin CLI\n" +
			"(cordonctl), their systemd units, man pages and shell completions.\n" +
			"Installing it creates the cordon system user and starts nothing.",
		MTime: s.o.Date,
		Overridables: nfpm.Overridables{
			// systemd-sysusers and -tmpfiles make the user and the
			// directories; without systemd the scripts use useradd.
			Recommends: []string{"systemd"},
			Scripts: nfpm.Scripts{
				PostInstall: script("postinstall.sh"),
				PreRemove:   script("preremove.sh"),
				PostRemove:  script("postremove.sh"),
			},
		},
	}}
	for _, f := range fs {
		cfg.Contents = append(cfg.Contents, &files.Content{
			Source: f.src, Destination: f.dst, Type: f.typ, Packager: f.packager,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: f.mode, MTime: s.o.Date},
		})
	}
	info, err := cfg.Get(format)
	if err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	info = nfpm.WithDefaults(info)
	info.Target = ""
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", fmt.Errorf("%s package contents: %w", format, err)
	}
	path := filepath.Join(s.o.OutDir, packager.ConventionalFileName(info))
	tmp, err := os.CreateTemp(s.o.OutDir, ".pkg-*")
	if err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	defer os.Remove(tmp.Name())
	if err := packager.Package(info, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	return path, nil
}
