package policyfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/yamlsyntax"
)

// MaxFileSize is the largest policy file accepted, checked before reading
// it whole.
const MaxFileSize = 8 << 20

// Error is one problem in a policy file.
type Error struct {
	File string
	Pos  Pos
	Msg  string // what is wrong, what would be right
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// ErrorList is every problem found in a file, in file order. It is the
// error [Parse] returns.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// ParseFile reads and parses a policy file.
func ParseFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse is the one strict entry point for policy files: it parses src
// (named file in errors), checks it whole and returns the policy, or an
// [ErrorList] with every problem found. It does not run the policy's tests
// (see [Policy.RunTests] and [Validate]).
func Parse(file string, src []byte) (*Policy, error) {
	p := &parser{file: file}
	if len(src) > MaxFileSize {
		p.errAt(Pos{1, 1}, "file is %d bytes, over the %d-byte limit; split it or remove unused entries", len(src), MaxFileSize)
		return nil, p.errs
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errAt(Pos{1, 1}, "the file is empty; start with \"version: 1\"")
			return nil, p.errs
		}
		p.errAt(syntaxPos(err, src), "YAML syntax error: %s; fix the syntax (indent with spaces, quote values containing \": \" or \"#\")", yamlsyntax.Msg(err))
		return nil, p.errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errAt(pos(&extra), "a second YAML document; a policy file holds exactly one, remove the \"---\"")
	} else if !errors.Is(err, io.EOF) {
		p.errAt(syntaxPos(err, src), "YAML syntax error: %s; fix the syntax", yamlsyntax.Msg(err))
	}
	pol := p.policy(&doc)
	p.check(pol) // also on a file with errors: report everything at once
	pol.warnings = pol.postureWarnings(file)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b *Error) int {
			if a.Pos.Line != b.Pos.Line {
				return a.Pos.Line - b.Pos.Line
			}
			return a.Pos.Col - b.Pos.Col
		})
		return nil, p.errs
	}
	return pol, nil
}

// syntaxPos is the position of YAML syntax error err in src.
func syntaxPos(err error, src []byte) Pos {
	line, col := yamlsyntax.Pos(err, src)
	return Pos{line, col}
}

type parser struct {
	file string
	errs ErrorList
}

// hasValues reports whether mapping n has key with a value other than an
// empty list (whose entries, if wrong, were reported already).
func hasValues(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			return !(v.Kind == yaml.SequenceNode && len(v.Content) == 0)
		}
	}
	return false
}

func pos(n *yaml.Node) Pos { return Pos{n.Line, n.Column} }

func (p *parser) errAt(at Pos, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Pos: at, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) { p.errAt(pos(n), format, args...) }

var kindName = map[yaml.Kind]string{
	yaml.DocumentNode: "document", yaml.SequenceNode: "list", yaml.MappingNode: "mapping",
	yaml.ScalarNode: "value", yaml.AliasNode: "alias",
}

// fields walks a mapping, calling the handler for each known key and
// reporting unknown and repeated keys with the list of known ones.
func (p *parser) fields(n *yaml.Node, what string, known map[string]func(k, v *yaml.Node)) {
	if !p.want(n, yaml.MappingNode, what, "a mapping of key: value") {
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errf(k, "%s: a key must be a plain name", what)
			continue
		}
		if seen[k.Value] {
			p.errf(k, "%s: %q given twice; keep one", what, k.Value)
			continue
		}
		seen[k.Value] = true
		h, ok := known[k.Value]
		if !ok {
			names := make([]string, 0, len(known))
			for name := range known {
				names = append(names, name)
			}
			slices.Sort(names)
			hint := ""
			if s := closest(k.Value, names); s != "" {
				hint = fmt.Sprintf("did you mean %q? ", s)
			}
			p.errf(k, "unknown field %q in %s; %sknown fields: %s", k.Value, what, hint, strings.Join(names, ", "))
			continue
		}
		if v.Kind == yaml.AliasNode {
			p.errf(v, "%s: YAML aliases are not allowed in policy; write the value out", what)
			continue
		}
		h(k, v)
	}
}

// closest returns the known name nearest to s by edit distance, if close.
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (p *parser) want(n *yaml.Node, k yaml.Kind, what, right string) bool {
	if n.Kind == k {
		return true
	}
	if n.Kind == yaml.AliasNode {
		p.errf(n, "%s: YAML aliases are not allowed in policy; write the value out", what)
		return false
	}
	got := kindName[n.Kind]
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		got = "nothing"
	}
	p.errf(n, "%s is a %s; want %s", what, got, right)
	return false
}

func (p *parser) str(n *yaml.Node, what string) string {
	if !p.want(n, yaml.ScalarNode, what, "a string") {
		return ""
	}
	if n.Tag == "!!null" {
		p.errf(n, "%s is empty; give a value", what)
		return ""
	}
	return n.Value
}

func (p *parser) strs(n *yaml.Node, what string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		p.errf(n, "%s is a single value; write a list: [%s]", what, n.Value)
		return nil
	}
	if !p.want(n, yaml.SequenceNode, what, "a list like [a, b]") {
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		if s := p.str(c, what+" entry"); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.errf(n, "%s is %q; write true or false", what, n.Value)
		return false
	}
	return n.Value == "true"
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (p *parser) name(n *yaml.Node, what string) string {
	s := p.str(n, what)
	if s != "" && !nameRE.MatchString(s) {
		p.errf(n, "%s %q is not a valid name; use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", what, s)
	}
	return s
}

// policy walks the document.
func (p *parser) policy(doc *yaml.Node) *Policy {
	pol := &Policy{
		Groups: map[string]*Group{}, PostureChecks: map[string]*PostureCheck{},
		Segments: map[string]*Segment{}, Apps: map[string]*App{},
	}
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	var versionSeen bool
	p.fields(root, "the policy", map[string]func(k, v *yaml.Node){
		"version": func(k, v *yaml.Node) {
			versionSeen = true
			if v.Kind != yaml.ScalarNode || v.Value != "1" {
				p.errf(v, "version %q is not supported; write \"version: 1\"", v.Value)
				return
			}
			pol.Version = 1
		},
		"groups": func(k, v *yaml.Node) {
			p.namedMap(v, "groups", "group", func(n string, at Pos, v *yaml.Node) { pol.Groups[n] = p.group(n, at, v) })
		},
		"segments": func(k, v *yaml.Node) {
			p.namedMap(v, "segments", "segment", func(n string, at Pos, v *yaml.Node) { pol.Segments[n] = p.segment(n, at, v) })
		},
		"apps": func(k, v *yaml.Node) {
			p.namedMap(v, "apps", "app", func(n string, at Pos, v *yaml.Node) { pol.Apps[n] = p.app(n, at, v) })
		},
		"posture_checks": func(k, v *yaml.Node) { p.postureChecks(v, pol) },
		"rules":          func(k, v *yaml.Node) { pol.Rules = p.rules(v, "rules", false) },
		"deny":           func(k, v *yaml.Node) { pol.Denies = p.rules(v, "deny", true) },
		"tests":          func(k, v *yaml.Node) { pol.Tests = p.tests(v) },
	})
	if !versionSeen && root.Kind == yaml.MappingNode {
		p.errf(root, "the policy has no version; start the file with \"version: 1\"")
	}
	return pol
}

func (p *parser) namedMap(n *yaml.Node, what, one string, each func(name string, at Pos, v *yaml.Node)) {
	if !p.want(n, yaml.MappingNode, what, "a mapping of name: {...}") {
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := p.name(k, one+" name")
		if name == "" {
			continue
		}
		if seen[name] {
			p.errf(k, "%s %q is defined twice; merge the two", one, name)
			continue
		}
		seen[name] = true
		each(name, pos(k), v)
	}
}

func (p *parser) idpRefs(n *yaml.Node, what string) []IdPRef {
	if !p.want(n, yaml.SequenceNode, what, "a list of {claim: groups, value: NAME}") {
		return nil
	}
	var out []IdPRef
	for _, c := range n.Content {
		var r IdPRef
		p.fields(c, what+" entry", map[string]func(k, v *yaml.Node){
			"claim": func(k, v *yaml.Node) { r.Claim = p.str(v, "claim") },
			"value": func(k, v *yaml.Node) { r.Value = p.str(v, "value") },
		})
		if c.Kind == yaml.MappingNode && (r.Claim == "" || r.Value == "") {
			p.errf(c, "%s entry needs both claim and value, e.g. {claim: groups, value: Radiology}", what)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (p *parser) group(name string, at Pos, n *yaml.Node) *Group {
	g := &Group{Name: name, Pos: at}
	what := fmt.Sprintf("group %q", name)
	p.fields(n, what, map[string]func(k, v *yaml.Node){
		"description": func(k, v *yaml.Node) { g.Description = p.str(v, "description") },
		"members": func(k, v *yaml.Node) {
			for _, c := range seqOrNil(v) {
				if u := p.name(c, "user name"); u != "" {
					g.Members = append(g.Members, u)
				}
			}
			p.strsShape(v, what+" members")
		},
		"groups": func(k, v *yaml.Node) {
			for _, c := range seqOrNil(v) {
				if s := p.name(c, "group name"); s != "" {
					g.Groups = append(g.Groups, s)
				}
			}
			p.strsShape(v, what+" groups")
		},
		"idp": func(k, v *yaml.Node) { g.IdP = p.idpRefs(v, what+" idp") },
	})
	return g
}

// seqOrNil returns a sequence's items, nil for anything else (the caller
// reports the shape through strsShape).
func seqOrNil(n *yaml.Node) []*yaml.Node {
	if n.Kind == yaml.SequenceNode {
		return n.Content
	}
	return nil
}

func (p *parser) strsShape(n *yaml.Node, what string) {
	if n.Kind != yaml.SequenceNode {
		p.strs(n, what)
	}
}

func (p *parser) prefixes(n *yaml.Node, what string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range seqOrNil(n) {
		s := p.str(c, what+" entry")
		if s == "" {
			continue
		}
		pf, err := parsePrefixOrAddr(s)
		if err != nil {
			p.errf(c, "%s: %q is not an address or prefix; write 10.20.0.10 or 10.20.0.0/24", what, s)
			continue
		}
		if pf.Masked() != pf {
			p.errf(c, "%s: %q has host bits set; write %s", what, s, pf.Masked())
			continue
		}
		out = append(out, pf)
	}
	p.strsShape(n, what)
	return out
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (p *parser) segment(name string, at Pos, n *yaml.Node) *Segment {
	s := &Segment{Name: name, Pos: at}
	what := fmt.Sprintf("segment %q", name)
	p.fields(n, what, map[string]func(k, v *yaml.Node){
		"description": func(k, v *yaml.Node) { s.Description = p.str(v, "description") },
		"prefixes":    func(k, v *yaml.Node) { s.Prefixes = p.prefixes(v, what+" prefixes") },
		"gateways": func(k, v *yaml.Node) {
			for _, c := range seqOrNil(v) {
				if g := p.name(c, "gateway name"); g != "" {
					s.Gateways = append(s.Gateways, g)
				}
			}
			p.strsShape(v, what+" gateways")
		},
	})
	if n.Kind == yaml.MappingNode && len(s.Prefixes) == 0 && !hasValues(n, "prefixes") {
		p.errAt(at, "%s has no prefixes; add prefixes: [10.20.0.0/24]", what)
	}
	return s
}

// ParseService parses "tcp/443", "tcp/8000-8099", "udp", "icmp" or "any".
func ParseService(s string) (Service, error) {
	protoS, portsS, hasPorts := strings.Cut(s, "/")
	proto, err := policy.ParseProto(protoS)
	if err != nil {
		return Service{}, err
	}
	sv := Service{Proto: proto}
	if !hasPorts {
		return sv, nil
	}
	if proto != policy.ProtoTCP && proto != policy.ProtoUDP {
		return sv, fmt.Errorf("%s has no ports; write %q alone", proto, protoS)
	}
	for part := range strings.SplitSeq(portsS, ",") {
		r, err := policy.ParsePortRange(part)
		if err != nil {
			return sv, err
		}
		sv.Ports = append(sv.Ports, r)
	}
	return sv, nil
}

func (s Service) String() string {
	if len(s.Ports) == 0 || (len(s.Ports) == 1 && s.Ports[0] == policy.AllPorts) {
		return s.Proto.String()
	}
	parts := make([]string, len(s.Ports))
	for i, r := range s.Ports {
		parts[i] = r.String()
	}
	return s.Proto.String() + "/" + strings.Join(parts, ",")
}

func (p *parser) services(n *yaml.Node, what string) []Service {
	var out []Service
	for _, c := range seqOrNil(n) {
		s := p.str(c, what+" entry")
		if s == "" {
			continue
		}
		sv, err := ParseService(s)
		if err != nil {
			p.errf(c, "%s: %q: %v; write tcp/443, tcp/8000-8099, udp/53 or icmp", what, s, err)
			continue
		}
		out = append(out, sv)
	}
	p.strsShape(n, what)
	return out
}

var dnsRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$`)

func (p *parser) app(name string, at Pos, n *yaml.Node) *App {
	a := &App{Name: name, Pos: at, Classification: ClassPHI}
	what := fmt.Sprintf("app %q", name)
	p.fields(n, what, map[string]func(k, v *yaml.Node){
		"description": func(k, v *yaml.Node) { a.Description = p.str(v, "description") },
		"segment":     func(k, v *yaml.Node) { a.Segment = p.name(v, "segment") },
		"names": func(k, v *yaml.Node) {
			for _, c := range seqOrNil(v) {
				s := strings.ToLower(p.str(c, "DNS name"))
				if s != "" && !dnsRE.MatchString(s) {
					p.errf(c, "%q is not a DNS name; write e.g. ehr.hospital.internal", s)
					continue
				}
				if s != "" {
					a.Names = append(a.Names, strings.TrimSuffix(s, "."))
				}
			}
			p.strsShape(v, what+" names")
		},
		"addresses": func(k, v *yaml.Node) { a.Addrs = p.prefixes(v, what+" addresses") },
		"ports":     func(k, v *yaml.Node) { a.Services = p.services(v, what+" ports") },
		"classification": func(k, v *yaml.Node) {
			switch c := Classification(p.str(v, "classification")); c {
			case ClassPHI, ClassInternal, ClassPublic:
				a.Classification = c
			case "":
			default:
				p.errf(v, "classification %q is unknown; use phi, internal or public", c)
			}
		},
		"tags": func(k, v *yaml.Node) {
			for _, c := range seqOrNil(v) {
				if t := p.name(c, "tag"); t != "" {
					a.Tags = append(a.Tags, t)
				}
			}
			p.strsShape(v, what+" tags")
		},
		"emergency": func(k, v *yaml.Node) { a.Emergency = p.boolean(v, what+" emergency") },
	})
	if n.Kind == yaml.MappingNode {
		if a.Segment == "" {
			p.errAt(at, "%s has no segment; add segment: NAME", what)
		}
		if len(a.Addrs) == 0 && !hasValues(n, "addresses") {
			p.errAt(at, "%s has no addresses; add addresses: [10.20.0.10]", what)
		}
		if len(a.Services) == 0 && !hasValues(n, "ports") {
			p.errAt(at, "%s has no ports; add ports: [tcp/443]", what)
		}
	}
	return a
}

func (p *parser) rules(n *yaml.Node, what string, deny bool) []*Rule {
	if !p.want(n, yaml.SequenceNode, what, "a list of rules, each starting with \"- name: ...\"") {
		return nil
	}
	var out []*Rule
	for _, c := range n.Content {
		out = append(out, p.rule(c, what, deny))
	}
	return out
}

func (p *parser) rule(n *yaml.Node, list string, deny bool) *Rule {
	r := &Rule{Pos: pos(n), Deny: deny}
	what := "rule"
	if deny {
		what = "deny rule"
	}
	known := map[string]func(k, v *yaml.Node){
		"name":        func(k, v *yaml.Node) { r.Name = p.name(v, what+" name") },
		"description": func(k, v *yaml.Node) { r.Description = p.str(v, "description") },
		"from":        func(k, v *yaml.Node) { r.From = p.subjects(v) },
		"to":          func(k, v *yaml.Node) { r.To = p.targets(v) },
		"ports":       func(k, v *yaml.Node) { r.Ports = p.services(v, what+" ports") },
	}
	if !deny {
		known["when"] = func(k, v *yaml.Node) { p.conditions(v, &r.When) }
		known["waiver"] = func(k, v *yaml.Node) {
			r.Waiver = strings.TrimSpace(p.str(v, "waiver"))
			if len(r.Waiver) < 20 {
				p.errf(v, "waiver reason is too short to justify reaching PHI without MFA and posture; write who approved it and why (20 characters or more)")
			}
		}
	}
	p.fields(n, what+" in "+list, known)
	if n.Kind == yaml.MappingNode {
		if r.Name == "" {
			p.errf(n, "%s has no name; add name: NAME", what)
		}
		if len(r.From) == 0 && !hasValues(n, "from") {
			p.errf(n, "%s %q has no from; add from: [group:NAME]", what, r.Name)
		}
		if len(r.To) == 0 && !hasValues(n, "to") {
			p.errf(n, "%s %q has no to; add to: [app:NAME]", what, r.Name)
		}
	}
	return r
}

func (p *parser) subjects(n *yaml.Node) []Subject {
	var out []Subject
	for _, c := range seqOrNil(n) {
		s := p.str(c, "from entry")
		kind, name, ok := strings.Cut(s, ":")
		k := SubjectKind(kind)
		if s == "" {
			continue
		}
		if !ok || (k != SubjectUser && k != SubjectGroup && k != SubjectTag) || !nameRE.MatchString(name) {
			p.errf(c, "from entry %q is not understood; write user:NAME, group:NAME or tag:NAME (a device tag)", s)
			continue
		}
		out = append(out, Subject{k, name})
	}
	p.strsShape(n, "from")
	return out
}

func (p *parser) targets(n *yaml.Node) []Target {
	var out []Target
	for _, c := range seqOrNil(n) {
		s := p.str(c, "to entry")
		kind, name, ok := strings.Cut(s, ":")
		k := TargetKind(kind)
		if s == "" {
			continue
		}
		if !ok || (k != TargetApp && k != TargetTag && k != TargetClass) || !nameRE.MatchString(name) {
			p.errf(c, "to entry %q is not understood; write app:NAME, tag:NAME (an app tag) or class:phi|internal|public", s)
			continue
		}
		if k == TargetClass && name != string(ClassPHI) && name != string(ClassInternal) && name != string(ClassPublic) {
			p.errf(c, "classification %q is unknown; write class:phi, class:internal or class:public", name)
			continue
		}
		out = append(out, Target{k, name})
	}
	p.strsShape(n, "to")
	return out
}

func (p *parser) duration(n *yaml.Node, what string) time.Duration {
	s := p.str(n, what)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.errf(n, "%s %q is not a positive duration; write e.g. 12h or 30m", what, s)
		return 0
	}
	return d
}

func (p *parser) conditions(n *yaml.Node, c *policy.Conditions) {
	p.fields(n, "when", map[string]func(k, v *yaml.Node){
		"mfa":         func(k, v *yaml.Node) { c.MFA = p.boolean(v, "mfa") },
		"mfa_max_age": func(k, v *yaml.Node) { c.MFAMaxAge = p.duration(v, "mfa_max_age"); c.MFA = true },
		"posture": func(k, v *yaml.Node) {
			for _, e := range seqOrNil(v) {
				if s := p.name(e, "posture check"); s != "" {
					c.Posture = append(c.Posture, s)
				}
			}
			p.strsShape(v, "posture")
		},
		"hours": func(k, v *yaml.Node) {
			for _, e := range seqOrNil(v) {
				s := p.str(e, "hours entry")
				if s == "" {
					continue
				}
				w, err := ParseWindow(s)
				if err != nil {
					p.errf(e, "time window %q: %v; write e.g. \"Mon-Fri 06:00-20:00 America/New_York\"", s, err)
					continue
				}
				c.Windows = append(c.Windows, w)
			}
			p.strsShape(v, "hours")
		},
		"source": func(k, v *yaml.Node) { c.SourceNets = p.prefixes(v, "source") },
		"cel": func(k, v *yaml.Node) {
			c.CEL = p.str(v, "cel")
			if c.CEL != "" {
				if _, err := policy.CompileCEL(c.CEL); err != nil {
					p.errf(v, "%v; write a boolean CEL expression over %s", err, celVarList())
				}
			}
		},
	})
}

func celVarList() string {
	names := make([]string, 0, len(policy.CELVariables))
	for n := range policy.CELVariables {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// ParseWindow parses "Mon-Fri 06:00-20:00 America/New_York". Days are a
// comma list of days or day ranges, or "daily".
func ParseWindow(s string) (policy.TimeWindow, error) {
	var w policy.TimeWindow
	f := strings.Fields(s)
	if len(f) != 3 {
		return w, errors.New("want three parts: days, hours, time zone")
	}
	day := func(s string) (int, error) {
		for i, n := range dayNames {
			if strings.EqualFold(n, s) {
				return i, nil
			}
		}
		return 0, fmt.Errorf("unknown day %q (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)", s)
	}
	if strings.EqualFold(f[0], "daily") {
		w.Days = 0x7f
	} else {
		for part := range strings.SplitSeq(f[0], ",") {
			a, b, isRange := strings.Cut(part, "-")
			lo, err := day(a)
			if err != nil {
				return w, err
			}
			hi := lo
			if isRange {
				if hi, err = day(b); err != nil {
					return w, err
				}
			}
			for d := lo; ; d = (d + 1) % 7 {
				w.Days |= 1 << d
				if d == hi {
					break
				}
			}
		}
	}
	a, b, ok := strings.Cut(f[1], "-")
	if !ok {
		return w, errors.New("hours must be a range like 06:00-20:00")
	}
	clock := func(s string, end bool) (uint16, error) {
		t, err := time.Parse("15:04", s)
		if err == nil {
			return uint16(t.Hour()*60 + t.Minute()), nil
		}
		if end && s == "24:00" {
			return 1440, nil
		}
		return 0, fmt.Errorf("bad time %q (use HH:MM, 24-hour)", s)
	}
	var err error
	if w.Start, err = clock(a, false); err != nil {
		return w, err
	}
	if w.End, err = clock(b, true); err != nil {
		return w, err
	}
	if w.End == 0 {
		w.End = 1440
	}
	if w.Start == w.End {
		return w, errors.New("the window is empty: start equals end")
	}
	if _, err := time.LoadLocation(f[2]); err != nil || f[2] == "Local" || !strings.Contains(f[2], "/") && f[2] != "UTC" {
		return w, fmt.Errorf("unknown IANA time zone %q", f[2])
	}
	w.Zone = f[2]
	return w, nil
}

var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

func (p *parser) tests(n *yaml.Node) []*Test {
	if !p.want(n, yaml.SequenceNode, "tests", "a list of tests, each starting with \"- name: ...\"") {
		return nil
	}
	var out []*Test
	for _, c := range n.Content {
		t := &Test{Pos: pos(c), Device: TestDevice{MFAAge: -1}}
		var expectSeen, portSeen bool
		p.fields(c, "test", map[string]func(k, v *yaml.Node){
			"name": func(k, v *yaml.Node) { t.Name = p.str(v, "test name") },
			"user": func(k, v *yaml.Node) { t.User = p.name(v, "user") },
			"idp":  func(k, v *yaml.Node) { t.IdP = p.idpRefs(v, "test idp") },
			"device": func(k, v *yaml.Node) {
				p.fields(v, "test device", map[string]func(k, v *yaml.Node){
					"tags":    func(k, v *yaml.Node) { t.Device.Tags = p.strs(v, "tags") },
					"posture": func(k, v *yaml.Node) { t.Device.Posture = p.strs(v, "posture") },
					"mfa_age": func(k, v *yaml.Node) {
						if v.Kind == yaml.ScalarNode && v.Value == "0s" {
							t.Device.MFAAge = 0
							return
						}
						t.Device.MFAAge = p.duration(v, "mfa_age")
					},
					"source": func(k, v *yaml.Node) {
						s := p.str(v, "source")
						a, err := netip.ParseAddr(s)
						if s != "" && err != nil {
							p.errf(v, "source %q is not an IP address; write e.g. 203.0.113.7", s)
						}
						t.Device.Source = a
					},
				})
			},
			"at": func(k, v *yaml.Node) {
				s := p.str(v, "at")
				at, err := time.Parse(time.RFC3339, s)
				if s != "" && err != nil {
					p.errf(v, "at %q is not a time; write RFC 3339 with a zone, e.g. 2026-03-02T09:00:00-05:00", s)
				}
				t.At = at
			},
			"app": func(k, v *yaml.Node) { t.App = p.name(v, "app") },
			"port": func(k, v *yaml.Node) {
				portSeen = true
				s := p.str(v, "port")
				sv, err := ParseService(s)
				if err == nil && len(sv.Ports) > 1 || err == nil && len(sv.Ports) == 1 && sv.Ports[0].First != sv.Ports[0].Last {
					err = errors.New("a test names one port")
				}
				if s != "" && err != nil {
					p.errf(v, "port %q: %v; write tcp/443, udp/53 or icmp", s, err)
				}
				t.Service = sv
			},
			"expect": func(k, v *yaml.Node) {
				expectSeen = true
				switch s := p.str(v, "expect"); s {
				case "allow":
					t.Expect = policy.Allow
				case "deny":
					t.Expect = policy.Deny
				default:
					p.errf(v, "expect %q is unknown; write allow or deny", s)
				}
			},
			"reason": func(k, v *yaml.Node) { t.Reason = p.str(v, "reason") },
		})
		if c.Kind == yaml.MappingNode {
			if t.Name == "" {
				p.errf(c, "test has no name; add name: \"what it shows\"")
			}
			if t.User == "" || t.App == "" || !portSeen || !expectSeen {
				p.errf(c, "test %q needs user, app, port and expect (allow or deny)", t.Name)
			}
		}
		out = append(out, t)
	}
	return out
}
