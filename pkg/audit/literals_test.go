package audit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// notScanned are the directories (relative to the module root, slash
// separated) whose files may spell event types, and why.
var notScanned = map[string]string{
	"pkg/audit": "the schema itself",
	// The store's conformance suite stores arbitrary type strings, known
	// or not, to pin down the store's prefix filter: the store must not
	// care what a type means.
	"controller/internal/store/storetest": "store conformance data",
}

// TestNoEventTypeLiterals: outside this package, no non-test Go file of
// the module spells an event type. It parses every file and reports a
// string literal that
//   - is a registered type ("session.end"),
//   - is the area of a type joined to something else ("admin." + verb),
//   - is the Type of an AuditEvent composite literal, or
//   - is converted to an audit.Type (audit.Type("x.y")).
//
// Tests may spell types: pinning the stored spelling is their job.
func TestNoEventTypeLiterals(t *testing.T) {
	root := moduleRoot(t)
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if _, skip := notScanned[rel]; skip {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module (bench/...)
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, p := range typeLiterals(t, rel, src) {
			t.Errorf("%s: use a pkg/audit constant (and register the type there if it is new)", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("scanned only %d files under %s: is the walk broken?", files, root)
	}
}

// The checker finds each kind of misuse it promises to, and nothing in a
// clean file.
func TestTypeLiteralsChecker(t *testing.T) {
	bad := `package x
func f(verb string) {
	_ = store.AuditEvent{Type: "posture.report"}
	_ = store.AuditEvent{Type: "made.up"}
	_ = "flow." + verb
	_ = audit.Type("other.thing")
	g("admin.app.create")
}`
	got := typeLiterals(t, "x.go", []byte(bad))
	want := []string{
		`x.go:3:29: "posture.report"`,
		`x.go:4:29: "made.up"`,
		`x.go:5:6: "flow."`,
		`x.go:6:17: "other.thing"`,
		`x.go:7:4: "admin.app.create"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	clean := `package x
func f() {
	_ = store.AuditEvent{Type: audit.SessionEnd}
	_ = adminapi.AuditQuery{Type: "admin."}
	_ = "cordonctl audit list --type auth.login"
	_ = "gateway." + "x" // not an area of any type
}`
	if got := typeLiterals(t, "y.go", []byte(clean)); len(got) != 0 {
		t.Errorf("clean file flagged: %v", got)
	}
}

// typeLiterals returns "file:line:col: literal" for each string literal
// in src that is used as an event type.
func typeLiterals(t *testing.T, name string, src []byte) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	areas := map[string]bool{}
	for _, s := range All() {
		area, _, _ := strings.Cut(string(s.Type), ".")
		areas[area+"."] = true
	}
	var out []string
	flag := func(lit *ast.BasicLit) {
		out = append(out, fset.Position(lit.Pos()).String()+": "+lit.Value)
	}
	str := func(e ast.Expr) (*ast.BasicLit, string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return nil, "", false
		}
		v, err := strconv.Unquote(lit.Value)
		return lit, v, err == nil
	}
	flagged := map[*ast.BasicLit]bool{}
	once := func(lit *ast.BasicLit) {
		if !flagged[lit] {
			flagged[lit] = true
			flag(lit)
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if _, v, ok := str(n); ok {
				if _, known := Lookup(Type(v)); known {
					once(n)
				}
			}
		case *ast.BinaryExpr:
			if n.Op != token.ADD {
				break
			}
			for _, e := range []ast.Expr{n.X, n.Y} {
				if lit, v, ok := str(e); ok && areas[v] {
					once(lit)
				}
			}
		case *ast.CompositeLit:
			if typeName(n.Type) != "AuditEvent" {
				break
			}
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Type" {
					if lit, _, ok := str(kv.Value); ok {
						once(lit)
					}
				}
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Type" && len(n.Args) == 1 {
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "audit" {
					if lit, _, ok := str(n.Args[0]); ok {
						once(lit)
					}
				}
			}
		}
		return true
	})
	return out
}

func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}
