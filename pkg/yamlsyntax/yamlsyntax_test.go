package yamlsyntax

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Each syntax error is placed on the line of the problem, where yaml.v3
// names another.
func TestPos(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		yamlLine  string // what yaml.v3 says, for the record
		line, col int
	}{
		{"unclosed list", "sinks:\n  - name: a\n    format: ocsf\n    address: [1, 2\n    transport: tcp\n", "line 3", 4, 5},
		{"badly indented key", "sinks:\n  - name: a\n    format: ocsf\n   transport: tcp\n", "line 1", 4, 4},
		{"unclosed quote", "a: 1\nb: \"x\n", "line 2", 2, 1},
		{"tab indent", "a:\n\tb: 1\n", "line 2", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			err := yaml.Unmarshal([]byte(tc.src), &v)
			if err == nil || !Is(err) || !strings.Contains(err.Error(), tc.yamlLine) {
				t.Fatalf("yaml.v3 says %v, want a syntax error at %s", err, tc.yamlLine)
			}
			if line, col := Pos(err, []byte(tc.src)); line != tc.line || col != tc.col {
				t.Errorf("Pos = %d:%d, want %d:%d (%v)", line, col, tc.line, tc.col, err)
			}
			var se *Error
			if w := Wrap(err, []byte(tc.src)); !errors.As(w, &se) || se.Line != tc.line || strings.HasPrefix(se.Msg, "yaml:") {
				t.Errorf("Wrap = %v", w)
			}
		})
	}
	typeErr := yaml.Unmarshal([]byte("a: [1]\n"), &struct{ A int }{})
	if typeErr == nil || Is(typeErr) || Wrap(typeErr, nil) != typeErr {
		t.Errorf("a type error (%v) is not a syntax error and stays as it is", typeErr)
	}
}

// Any input: a syntax error is placed on a line of the input, never a
// panic.
func FuzzPos(f *testing.F) {
	f.Add("sinks:\n  - name: a\n    address: [1, 2\n    transport: tcp\n")
	f.Add("a:\n\tb: 1\n")
	f.Add("a: \"x\n")
	f.Add("- [\n- {a: ")
	f.Fuzz(func(t *testing.T, src string) {
		var v any
		err := yaml.Unmarshal([]byte(src), &v)
		if err == nil || !Is(err) {
			return
		}
		line, col := Pos(err, []byte(src))
		if lines := strings.Count(src, "\n") + 1; line < 1 || line > lines || col < 1 {
			t.Fatalf("Pos = %d:%d for %d lines (%v)", line, col, lines, err)
		}
	})
}
