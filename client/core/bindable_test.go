package core

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The exported API must stay what gomobile binds (Java and Objective-C):
// string, bool, int, int32, int64, float64, []byte, error (as the last
// result), and this package's interfaces and struct pointers, in every
// exported function, method, struct field and interface method. CI also
// runs gobind itself (mobile/bindcheck); this test says which name broke
// it, without the toolchain.

// bindableBasic are the basic types allowed.
var bindableBasic = []string{"string", "bool", "int", "int32", "int64", "float64"}

// unbindable returns a message for each exported declaration of the Go
// files src (name → source) that uses a type gomobile cannot bind.
func unbindable(src map[string]string) ([]string, error) {
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range slices.Sorted(maps.Keys(src)) {
		f, err := parser.ParseFile(fset, name, src[name], parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	// The package's own named types: structs and interfaces may appear
	// (structs behind a pointer); any other named type may not.
	kinds := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.TYPE {
				for _, s := range g.Specs {
					ts := s.(*ast.TypeSpec)
					switch ts.Type.(type) {
					case *ast.StructType:
						kinds[ts.Name.Name] = "struct"
					case *ast.InterfaceType:
						kinds[ts.Name.Name] = "interface"
					default:
						kinds[ts.Name.Name] = "other"
					}
					if ts.Assign.IsValid() || ts.TypeParams != nil {
						kinds[ts.Name.Name] = "other"
					}
				}
			}
		}
	}
	var bad []string
	report := func(pos token.Pos, what string, e ast.Expr) {
		bad = append(bad, fmt.Sprintf("%s: %s: type %s cannot be bound by gomobile", fset.Position(pos), what, types(e)))
	}
	var ok func(e ast.Expr) bool
	ok = func(e ast.Expr) bool {
		switch e := e.(type) {
		case *ast.Ident:
			if slices.Contains(bindableBasic, e.Name) {
				return true
			}
			k := kinds[e.Name]
			return k == "interface" && ast.IsExported(e.Name)
		case *ast.StarExpr:
			id, isIdent := e.X.(*ast.Ident)
			return isIdent && kinds[id.Name] == "struct" && ast.IsExported(id.Name)
		case *ast.ArrayType:
			id, isIdent := e.Elt.(*ast.Ident)
			return e.Len == nil && isIdent && id.Name == "byte"
		}
		return false // maps, chans, funcs, other packages' types, arrays, ...
	}
	checkFunc := func(pos token.Pos, name string, ft *ast.FuncType) {
		if ft.TypeParams != nil {
			bad = append(bad, fmt.Sprintf("%s: %s: generic functions cannot be bound by gomobile", fset.Position(pos), name))
		}
		for _, p := range ft.Params.List {
			if !ok(p.Type) {
				report(pos, name+" parameter", p.Type)
			}
		}
		if ft.Results == nil {
			return
		}
		var res []ast.Expr
		for _, r := range ft.Results.List {
			for range max(len(r.Names), 1) {
				res = append(res, r.Type)
			}
		}
		if len(res) > 2 || len(res) == 2 && types(res[1]) != "error" {
			bad = append(bad, fmt.Sprintf("%s: %s: gomobile binds one result, or one and an error", fset.Position(pos), name))
		}
		for i, r := range res {
			if types(r) == "error" && i == len(res)-1 {
				continue
			}
			if !ok(r) {
				report(pos, name+" result", r)
			}
		}
	}
	for _, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				name := d.Name.Name
				if d.Recv != nil {
					recv := types(d.Recv.List[0].Type)
					if !ast.IsExported(strings.TrimPrefix(recv, "*")) {
						continue
					}
					name = recv + "." + name
				}
				checkFunc(d.Pos(), name, d.Type)
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						switch tt := s.Type.(type) {
						case *ast.StructType:
							for _, fl := range tt.Fields.List {
								for _, n := range fl.Names {
									if n.IsExported() && !ok(fl.Type) {
										report(n.Pos(), s.Name.Name+"."+n.Name, fl.Type)
									}
								}
								if len(fl.Names) == 0 {
									bad = append(bad, fmt.Sprintf("%s: %s embeds %s: gomobile binds no embedded fields", fset.Position(fl.Pos()), s.Name.Name, types(fl.Type)))
								}
							}
						case *ast.InterfaceType:
							for _, m := range tt.Methods.List {
								ft, isFunc := m.Type.(*ast.FuncType)
								if !isFunc || len(m.Names) == 0 {
									bad = append(bad, fmt.Sprintf("%s: %s embeds %s: gomobile binds only plain methods", fset.Position(m.Pos()), s.Name.Name, types(m.Type)))
									continue
								}
								checkFunc(m.Pos(), s.Name.Name+"."+m.Names[0].Name, ft)
							}
						default:
							bad = append(bad, fmt.Sprintf("%s: type %s: only structs and interfaces can be bound", fset.Position(s.Pos()), s.Name.Name))
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && s.Type != nil && !ok(s.Type) && types(s.Type) != "error" {
								report(n.Pos(), n.Name, s.Type)
							}
						}
					}
				}
			}
		}
	}
	return bad, nil
}

// types prints a type expression.
func types(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return "*" + types(e.X)
	case *ast.SelectorExpr:
		return types(e.X) + "." + e.Sel.Name
	case *ast.ArrayType:
		return "[]" + types(e.Elt)
	case *ast.MapType:
		return "map[" + types(e.Key) + "]" + types(e.Value)
	case *ast.ChanType:
		return "chan " + types(e.Value)
	case *ast.FuncType:
		return "func(...)"
	}
	return fmt.Sprintf("%T", e)
}

// TestBindableAPI fails when the package's exported API uses a type
// gomobile cannot bind.
func TestBindableAPI(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	src := map[string]string{}
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		src[n] = string(b)
	}
	if len(src) < 3 {
		t.Fatalf("read only %d source files", len(src))
	}
	bad, err := unbindable(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}
}

// TestBindableCheckerRejects: the checker itself refuses what gomobile
// refuses, so TestBindableAPI passing means something.
func TestBindableCheckerRejects(t *testing.T) {
	const src = `package core
import ("context"; "time")
type Core struct{ Tags map[string]string; ok string }
type Events interface{ Event(kind, payload string); Stream() chan string }
type Reason int
func (c *Core) Start(ctx context.Context) error { return nil }
func (c *Core) Wait(d time.Duration) {}
func (c *Core) On(f func(string)) {}
func (c *Core) Pair() (string, int) { return "", 0 }
func (c *Core) Addrs() []string { return nil }
func (c *Core) Value() Core { return Core{} }
func (c *Core) Fine(s string, b []byte, n int64, f float64, e Events) (*Core, error) { return nil, nil }
func New(n uint) *Core { return nil }
`
	bad, err := unbindable(map[string]string{"x.go": src})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Core.Tags: type map[string]string",
		"Events.Stream result: type chan string",
		"type Reason: only structs and interfaces",
		"*Core.Start parameter: type context.Context",
		"*Core.Wait parameter: type time.Duration",
		"*Core.On parameter: type func(...)",
		"*Core.Pair: gomobile binds one result, or one and an error",
		"*Core.Addrs result: type []string",
		"*Core.Value result: type Core",
		"New parameter: type uint",
	}
	joined := strings.Join(bad, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("checker did not reject %q; it said:\n%s", w, joined)
		}
	}
	if strings.Contains(joined, "Fine") || strings.Contains(joined, ".ok") {
		t.Errorf("checker rejected a bindable declaration:\n%s", joined)
	}
}
