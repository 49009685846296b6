// Package yamlsyntax says where a YAML syntax error is. gopkg.in/yaml.v3
// reports only a line, and for the parser's errors ("did not find expected
// key", "... ',' or ']'") not the line of the problem but the line before
// the start of the mapping or list it was in (a 0-based line number): an
// unclosed "[" on line 4 is reported on line 3, a badly indented key on
// line 5 on line 2. Every YAML file Cordon reads (policy files, the
// controller's SIEM and OIDC configurations) reports its syntax errors
// through here, so an admin is sent to the right line.
package yamlsyntax

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var lineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Pos is the line and column (1-based) of the syntax error err that
// decoding src gave, pointing at the first character of the line; 1, 1
// when err names no line. For the parser's errors the problem's line is
// searched: the shortest prefix of src, from the mapping's start on, that
// fails with the same message.
func Pos(err error, src []byte) (line, col int) {
	m := lineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 1, 1
	}
	line, _ = strconv.Atoi(m[1])
	lines := bytes.Split(src, []byte("\n"))
	if strings.HasPrefix(m[2], "did not find expected") {
		line = problemLine(lines, line+1, m[2])
	}
	// yaml.v3 also breaks lines at a lone "\r"; a line it names past the
	// last "\n" is the last one.
	line = min(max(line, 1), len(lines))
	col = len(lines[line-1]) - len(bytes.TrimLeft(lines[line-1], " \t")) + 1
	return line, col
}

// problemLine is the first line n ≥ from such that lines 1..n alone fail
// to parse with msg (binary search: a prefix that holds the problem keeps
// failing with it); from when none does.
func problemLine(lines [][]byte, from int, msg string) int {
	fails := func(n int) bool {
		var doc yaml.Node
		err := yaml.Unmarshal(bytes.Join(lines[:n], []byte("\n")), &doc)
		if err == nil {
			return false
		}
		m := lineRE.FindStringSubmatch(err.Error())
		return m != nil && m[2] == msg
	}
	lo, hi := max(from, 1), len(lines) // the whole file fails
	if lo > hi || !fails(hi) {
		return from
	}
	for lo < hi {
		if mid := (lo + hi) / 2; fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// Msg is the syntax error's message without yaml.v3's "yaml: line N: ".
func Msg(err error) string {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		return m[2]
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// Is reports whether err is a yaml.v3 syntax error (one that names a
// line in its text), as opposed to a type error (*yaml.TypeError, whose
// lines are right) or a caller's own.
func Is(err error) bool { return lineRE.MatchString(err.Error()) }

// Error is a syntax error at a position of a file.
type Error struct {
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("line %d, column %d: YAML syntax error: %s; fix the syntax (indent with spaces, quote values containing \": \" or \"#\")", e.Line, e.Col, e.Msg)
}

// Wrap returns err as an *Error at the problem's position when it is a
// syntax error from decoding src, and err unchanged otherwise.
func Wrap(err error, src []byte) error {
	if err == nil || !Is(err) {
		return err
	}
	line, col := Pos(err, src)
	return &Error{Line: line, Col: col, Msg: Msg(err)}
}
