package audit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var typeRE = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)+$`)

// Every registered Spec is complete and consistent.
func TestSpecsValid(t *testing.T) {
	all := All()
	if len(all) != len(specs) {
		t.Fatalf("All returned %d specs, registry has %d", len(all), len(specs))
	}
	for _, s := range all {
		if !typeRE.MatchString(string(s.Type)) {
			t.Errorf("%s: type is not dot-separated lower-case words", s.Type)
		}
		if !slices.Contains(categories, s.Category) {
			t.Errorf("%s: unknown category %q", s.Type, s.Category)
		}
		if s.Doc == "" {
			t.Errorf("%s: no Doc", s.Type)
		}
		if len(s.Outcomes) == 0 {
			t.Errorf("%s: no outcomes", s.Type)
		}
		var seen []Outcome
		for _, o := range s.Outcomes {
			if slices.Contains(seen, o.Outcome) {
				t.Errorf("%s: outcome %s listed twice", s.Type, o.Outcome)
			}
			seen = append(seen, o.Outcome)
			if _, ok := severityNames[o.Severity]; !ok {
				t.Errorf("%s: outcome %s has no valid severity (%d)", s.Type, o.Outcome, o.Severity)
			}
		}
		var names []string
		for _, f := range s.Fields {
			if f.Name == "" || f.Doc == "" {
				t.Errorf("%s: field %q without a name or Doc", s.Type, f.Name)
			}
			if slices.Contains(names, f.Name) {
				t.Errorf("%s: field %s listed twice", s.Type, f.Name)
			}
			names = append(names, f.Name)
			for _, o := range f.Required {
				if !slices.Contains(seen, o) {
					t.Errorf("%s: field %s required on outcome %s, which the type does not have", s.Type, f.Name, o)
				}
			}
		}
	}
}

// Every Type constant in the package is registered, and every registered
// type is a constant: the constants are the schema's names.
func TestConstantsRegistered(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "events.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []Type
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			v := sp.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Type" {
				continue
			}
			for _, val := range v.Values {
				s, err := strconv.Unquote(val.(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				consts = append(consts, Type(s))
			}
		}
	}
	for _, c := range consts {
		if _, ok := Lookup(c); !ok {
			t.Errorf("constant %q has no Spec", c)
		}
	}
	for _, s := range All() {
		if !slices.Contains(consts, s.Type) {
			t.Errorf("Spec %q has no constant in events.go", s.Type)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     Type
		outcome string
		details map[string]string
		want    []string // substrings of the error; none: valid
	}{
		{"valid", AdminAppCreate, "success", map[string]string{"segment": "clinical", "classification": "phi"}, nil},
		{"optional field absent", AdminTokenCreate, "success", map[string]string{"name": "ci", "role": "auditor", "expires_at": "x"}, nil},
		{"empty value counts as present", AuthIdPLink, "success", map[string]string{"source": "10.0.0.1", "idp_subject": "s", "email": "", "comment": "c"}, nil},
		{"required only on failure", AuthLogin, "failure", map[string]string{"source": "10.0.0.1", "reason": "wrong password"}, nil},
		{"unknown type", "admin.app.teleport", "success", nil, []string{`"admin.app.teleport" is not registered`}},
		{"outcome not allowed", AdminAppDelete, "failure", nil, []string{`outcome "failure" not allowed (want one of success)`}},
		{"missing required", AdminAppCreate, "success", map[string]string{"segment": "clinical"}, []string{`"classification" required on outcome success`}},
		{"unknown key", AdminAppDelete, "success", map[string]string{"why": "x"}, []string{`"why" is not a field`}},
		{"every problem", AuthLogin, "success", map[string]string{"why": "x"}, []string{`"source" required`, `"device" required`, `"method" required`, `"why" is not a field`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.typ, tc.outcome, tc.details)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("valid, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// Severities are ordered and map onto syslog and CEF monotonically: a
// SIEM's "at least" filter means the same in every scale.
func TestSeverityOrder(t *testing.T) {
	order := []Severity{Info, Notice, Warning, Alert}
	for i := 1; i < len(order); i++ {
		lo, hi := order[i-1], order[i]
		if lo >= hi || lo.Syslog() <= hi.Syslog() || lo.CEF() >= hi.CEF() {
			t.Errorf("%s (syslog %d, CEF %d) is not below %s (syslog %d, CEF %d)", lo, lo.Syslog(), lo.CEF(), hi, hi.Syslog(), hi.CEF())
		}
	}
	if len(severityNames) != len(order) {
		t.Errorf("%d severity names for %d severities", len(severityNames), len(order))
	}
}

func TestSpecSeverity(t *testing.T) {
	s, ok := Lookup(AuthLogin)
	if !ok {
		t.Fatal("auth.login not registered")
	}
	if sev, ok := s.Severity(Failure); !ok || sev != Warning {
		t.Errorf("auth.login failure: %v %v, want warning", sev, ok)
	}
	if _, ok := s.Severity(Deny); ok {
		t.Error("auth.login has a deny outcome")
	}
	if s.MaxSeverity() != Warning {
		t.Errorf("auth.login max severity %v, want warning", s.MaxSeverity())
	}
}
