// Package deptest holds only tests that keep the tree's shape: which parts
// may import which (dependencies point one way), and that every package
// says what it is for (like Tailscale's tstest/deptest and pkgdoc_test).
package deptest

import (
	"bufio"
	"bytes"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cordonhq/cordon"

// rules: no package under from may depend, directly or not, on a package
// under any of to. Test files are not covered: tests may use other parts'
// published harnesses (cordonctl's tests run against controller/apitest).
var rules = []struct {
	from string
	to   []string
}{
	{"gateway", []string{"controller", "client", "cordonctl"}},
	{"client", []string{"controller", "gateway", "cordonctl"}},
	{"cordonctl", []string{"controller", "gateway", "client"}},
	{"pkg", []string{"controller", "gateway", "client", "cordonctl"}},
}

// goList runs go list in the module root and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("find the go command: %v", err)
	}
	root, err := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find the module root: %v", err)
	}
	cmd := exec.Command(goTool, append([]string{"list"}, args...)...)
	cmd.Dir = strings.TrimSpace(string(root))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// under reports whether import path p is dir (relative to the module) or
// inside it.
func under(p, dir string) bool {
	d := module + "/" + dir
	return p == d || strings.HasPrefix(p, d+"/")
}

// graph maps each of the module's packages to its direct non-test imports
// inside the module.
type graph map[string][]string

func moduleGraph(t *testing.T) graph {
	t.Helper()
	g := graph{}
	lines := goList(t, "-deps", "-f", `{{if .Module}}{{if eq .Module.Path "`+module+`"}}{{.ImportPath}}{{range .Imports}} {{.}}{{end}}{{end}}{{end}}`, "./...")
	for _, l := range lines {
		f := strings.Fields(l)
		var own []string
		for _, imp := range f[1:] {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				own = append(own, imp)
			}
		}
		g[f[0]] = own
	}
	return g
}

// violations returns, for every package under a rule's from, the first
// import chain that reaches a forbidden package.
func violations(g graph) []string {
	var out []string
	for _, pkg := range slices.Sorted(maps.Keys(g)) {
		for _, r := range rules {
			if !under(pkg, r.from) {
				continue
			}
			if chain := forbiddenChain(g, pkg, r.to); chain != nil {
				out = append(out, strings.Join(chain, " → ")+" (nothing under "+r.from+"/ may import "+strings.Join(r.to, "/, ")+"/)")
			}
		}
	}
	return out
}

// forbiddenChain does a breadth-first search from pkg and returns the
// shortest import chain to a package under one of to, or nil.
func forbiddenChain(g graph, pkg string, to []string) []string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range g[p] {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = p
			if slices.ContainsFunc(to, func(d string) bool { return under(imp, d) }) {
				var chain []string
				for q := imp; q != ""; q = prev[q] {
					chain = append(chain, strings.TrimPrefix(q, module+"/"))
				}
				slices.Reverse(chain)
				return chain
			}
			queue = append(queue, imp)
		}
	}
	return nil
}

func TestDependenciesPointOneWay(t *testing.T) {
	g := moduleGraph(t)
	// The rules must have something to check.
	for _, dir := range []string{"controller", "gateway", "client", "cordonctl", "pkg"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(g)), func(p string) bool { return under(p, dir) }) {
			t.Errorf("go list found no package under %s/: the rules check nothing", dir)
		}
	}
	edges := 0
	for _, imps := range g {
		edges += len(imps)
	}
	if edges == 0 {
		t.Error("go list reported no imports between the module's packages: the rules check nothing")
	}
	for _, v := range violations(g) {
		t.Error(v)
	}
}

// The checker itself finds direct and indirect forbidden imports and
// nothing else.
func TestViolations(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	tests := []struct {
		name string
		g    graph
		want []string
	}{
		{"clean", graph{
			m("gateway/internal/gateway"): {m("pkg/policy"), m("gateway/internal/flow")},
			m("gateway/internal/flow"):    {m("pkg/policy")},
			m("controller/internal/api"):  {m("pkg/policy")},
			m("pkg/policy"):               nil,
		}, nil},
		{"direct", graph{
			m("client/internal/client"):     {m("controller/internal/netmap")},
			m("controller/internal/netmap"): nil,
		}, []string{"client/internal/client → controller/internal/netmap (nothing under client/ may import controller/, gateway/, cordonctl/)"}},
		{"through pkg", graph{
			m("gateway/cmd/cordon-gateway"): {m("pkg/helper")},
			m("pkg/helper"):                 {m("client/internal/proxy")},
			m("client/internal/proxy"):      nil,
		}, []string{
			"gateway/cmd/cordon-gateway → pkg/helper → client/internal/proxy (nothing under gateway/ may import controller/, client/, cordonctl/)",
			"pkg/helper → client/internal/proxy (nothing under pkg/ may import controller/, gateway/, client/, cordonctl/)",
		}},
		{"prefix is not a directory", graph{
			m("pkg/x"):           {m("controllerish/y")},
			m("controllerish/y"): nil,
			m("gatewayfoo/z"):    {m("controller/a")},
			m("controller/a"):    nil,
		}, nil},
		{"module root", graph{
			m("pkg/x"): {module},
			module:     nil,
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := violations(tt.g); !slices.Equal(got, tt.want) {
				t.Errorf("violations:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// Every package with code says what it is for (STYLE: one job per package,
// with a package doc).
func TestPackageDocs(t *testing.T) {
	lines := goList(t, "-f", "{{.ImportPath}}\t{{len .GoFiles}}\t{{len .CgoFiles}}\t{{.Doc}}", "./...")
	checked := 0
	for _, l := range lines {
		f := strings.SplitN(l, "\t", 4)
		if len(f) < 3 {
			t.Fatalf("unexpected go list line %q", l)
		}
		if f[1] == "0" && f[2] == "0" {
			continue // only test files, like this package
		}
		checked++
		if len(f) < 4 || strings.TrimSpace(f[3]) == "" {
			t.Errorf("%s has no package doc comment: say what it is for above its package clause", f[0])
		}
	}
	if checked < 10 {
		t.Errorf("checked only %d packages: go list did not see the module", checked)
	}
}
