package state_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// readPrefixes name the store methods that only read.
var readPrefixes = []string{"Get", "List", "Snapshot", "Active", "AdminTokenByHash", "Close", "Read", "Scan", "Latest", "AuditLogSize", "Search"}

// storeWrites is every store.Store method that writes.
func storeWrites() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[store.Store]()
	for i := range t.NumMethod() {
		name := t.Method(i).Name
		read := false
		for _, p := range readPrefixes {
			read = read || strings.HasPrefix(name, p)
		}
		if !read {
			out[name] = true
		}
	}
	return out
}

// TestOnlyStateWritesTheStore fails when code outside the state owner (and
// the store itself) calls a store method that writes: every change must go
// through a state method, so that it commits with its audit record. Calls
// on the state (a receiver named state, State or owner) are its methods of
// the same names, not the store's.
func TestOnlyStateWritesTheStore(t *testing.T) {
	writes := storeWrites()
	if !writes["AppendAudit"] || !writes["CreateSegment"] || !writes["Update"] || writes["GetUser"] {
		t.Fatalf("store write methods %v: the read prefixes are wrong", writes)
	}
	root := filepath.Join("..", "..") // controller/
	fset := token.NewFileSet()
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch filepath.ToSlash(rel) {
			case "internal/store", "internal/state":
				return filepath.SkipDir
			case "apitest":
				// Test support: seeds the fixture tokens and identities
				// that tests start from.
				return filepath.SkipDir
			case "internal/loadtest":
				// The load harness (build tag loadtest) seeds a fresh
				// database in bulk before its controller starts: a
				// benchmark fixture, not a change anyone made.
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !writes[sel.Sel.Name] {
				return true
			}
			recv := exprText(sel.X)
			// The state's methods and the admin API client's share names
			// with the store's.
			if strings.Contains(strings.ToLower(recv), "state") || strings.HasSuffix(recv, "owner") || strings.HasSuffix(recv, "api") {
				return true
			}
			found = append(found, fset.Position(call.Pos()).String()+": "+recv+"."+sel.Sel.Name)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s writes the store outside the state owner: add a state method (one transaction with its audit record)", f)
	}
}

func exprText(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprText(x.X) + "." + x.Sel.Name
	case *ast.CallExpr:
		return exprText(x.Fun) + "()"
	}
	return "?"
}
