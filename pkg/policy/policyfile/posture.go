package policyfile

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cordonhq/cordon/pkg/posture"
)

// PostureCheck is one named device posture check of the policy. A check
// written as a mapping defines what it requires of the device's
// (self-reported) posture report; the controller evaluates it
// ([Policy.EvaluatePosture]) and the passing checks become the session's
// Posture, which rules' "when: {posture: [...]}" conditions test.
//
// A check written as a string alone ("disk-encrypted: full-disk
// encryption on", the form before checks had requirements) is a
// description only: nothing the controller can verify, so no device ever
// passes it (fail closed), and [Policy.Warnings] says so.
type PostureCheck struct {
	Name        string
	Pos         Pos
	Description string
	// Defined is false for the description-only form.
	Defined bool

	DiskEncryption bool // the root filesystem is on dm-crypt
	Firewall       bool // host firewall filters input
	ScreenLock     bool // the screen locks automatically
	// OS, if set, lists the accepted os-release IDs ("debian", "ubuntu").
	OS []string
	// MinOSVersion is the lowest accepted VERSION_ID per OS ID; an OS not
	// in it has no version requirement.
	MinOSVersion map[string]string
	// MinClientVersion is the lowest accepted Cordon client version.
	MinClientVersion string
	// MaxReportAge, if set, fails a device whose last report reached the
	// controller longer ago than this.
	MaxReportAge time.Duration
	// AllowUnknown names the boolean requirements ("disk_encryption",
	// "firewall", "screen_lock") that pass when the device cannot tell.
	AllowUnknown []string
}

// Posture check requirement names, as written in the policy and in
// AllowUnknown.
const (
	reqDiskEncryption = "disk_encryption"
	reqFirewall       = "firewall"
	reqScreenLock     = "screen_lock"
)

func (p *parser) postureChecks(n *yaml.Node, pol *Policy) {
	if !p.want(n, yaml.MappingNode, "posture_checks", "a mapping of check-name: {requirements} (or check-name: description)") {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := p.name(k, "posture check name")
		if name == "" {
			continue
		}
		if _, dup := pol.PostureChecks[name]; dup {
			p.errf(k, "posture check %q is defined twice; keep one", name)
			continue
		}
		c := &PostureCheck{Name: name, Pos: pos(k)}
		if v.Kind == yaml.ScalarNode {
			c.Description = p.str(v, "posture check "+name+" description")
			pol.PostureChecks[name] = c
			continue
		}
		p.postureCheck(c, v)
		pol.PostureChecks[name] = c
	}
}

// postureCheck parses the mapping form of a check.
func (p *parser) postureCheck(c *PostureCheck, n *yaml.Node) {
	what := fmt.Sprintf("posture check %q", c.Name)
	var allowNode *yaml.Node
	p.fields(n, what, map[string]func(k, v *yaml.Node){
		"description":     func(k, v *yaml.Node) { c.Description = p.str(v, "description") },
		reqDiskEncryption: func(k, v *yaml.Node) { c.DiskEncryption = p.boolean(v, reqDiskEncryption) },
		reqFirewall:       func(k, v *yaml.Node) { c.Firewall = p.boolean(v, reqFirewall) },
		reqScreenLock:     func(k, v *yaml.Node) { c.ScreenLock = p.boolean(v, reqScreenLock) },
		"os": func(k, v *yaml.Node) {
			for _, e := range seqOrNil(v) {
				if s := p.name(e, "os"); s != "" {
					c.OS = append(c.OS, s)
				}
			}
			p.strsShape(v, what+" os")
			if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
				p.errf(v, "%s: os is an empty list, which no device matches; list os-release IDs like [debian, ubuntu] or remove it", what)
			}
		},
		"min_os_version": func(k, v *yaml.Node) {
			if !p.want(v, yaml.MappingNode, what+" min_os_version", `a mapping of os: version, e.g. {debian: "12"}`) {
				return
			}
			c.MinOSVersion = map[string]string{}
			for i := 0; i+1 < len(v.Content); i += 2 {
				ok, ov := v.Content[i], v.Content[i+1]
				osID := p.name(ok, "os")
				ver := p.str(ov, what+" min_os_version "+osID)
				if osID == "" || ver == "" {
					continue
				}
				if _, dup := c.MinOSVersion[osID]; dup {
					p.errf(ok, "%s: min_os_version for %q is given twice; keep one", what, osID)
					continue
				}
				if _, err := parseVersion(ver); err != nil {
					p.errf(ov, "%s: min_os_version %q: %v; write a dotted version like \"12\" or \"22.04\"", what, ver, err)
					continue
				}
				c.MinOSVersion[osID] = ver
			}
		},
		"min_client_version": func(k, v *yaml.Node) {
			c.MinClientVersion = p.str(v, "min_client_version")
			if _, err := parseVersion(c.MinClientVersion); c.MinClientVersion != "" && err != nil {
				p.errf(v, "%s: min_client_version %q: %v; write a dotted version like \"0.1.0\"", what, c.MinClientVersion, err)
				c.MinClientVersion = ""
			}
		},
		"max_report_age": func(k, v *yaml.Node) { c.MaxReportAge = p.duration(v, "max_report_age") },
		"allow_unknown": func(k, v *yaml.Node) {
			allowNode = v
			for _, e := range seqOrNil(v) {
				s := p.str(e, "allow_unknown entry")
				switch s {
				case reqDiskEncryption, reqFirewall, reqScreenLock:
					c.AllowUnknown = append(c.AllowUnknown, s)
				case "":
				default:
					p.errf(e, "%s: allow_unknown %q is not a yes/no requirement; use disk_encryption, firewall or screen_lock", what, s)
				}
			}
			p.strsShape(v, what+" allow_unknown")
		},
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	c.Defined = true
	for _, a := range c.AllowUnknown {
		if !c.requires(a) {
			p.errf(allowNode, "%s: allow_unknown names %s, which the check does not require; add %s: true or remove it from allow_unknown", what, a, a)
		}
	}
	for osID := range c.MinOSVersion {
		if len(c.OS) > 0 && !slices.Contains(c.OS, osID) {
			p.errf(n, "%s: min_os_version names %q, which os does not accept; add it to os or remove its minimum", what, osID)
		}
	}
	if !hasRequirementKey(n) {
		p.errAt(c.Pos, "%s requires nothing; add a requirement (disk_encryption, firewall, screen_lock, os, min_os_version, min_client_version, max_report_age)", what)
	}
}

// hasRequirementKey reports whether mapping n has a key other than
// description (a wrong one was reported already).
func hasRequirementKey(n *yaml.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "description" {
			return true
		}
	}
	return false
}

// requires reports whether the check requires the yes/no property req.
func (c *PostureCheck) requires(req string) bool {
	switch req {
	case reqDiskEncryption:
		return c.DiskEncryption
	case reqFirewall:
		return c.Firewall
	case reqScreenLock:
		return c.ScreenLock
	}
	return false
}

// postureWarnings are the description-only checks, which no device passes.
func (pol *Policy) postureWarnings(file string) []*Error {
	var out []*Error
	for _, name := range slices.Sorted(maps.Keys(pol.PostureChecks)) {
		c := pol.PostureChecks[name]
		if !c.Defined {
			out = append(out, &Error{File: file, Pos: c.Pos, Msg: fmt.Sprintf(
				"posture check %q is a description only, so no device passes it (fail closed); define what it requires, e.g. %s: {description: %q, disk_encryption: true}",
				name, name, c.Description)})
		}
	}
	return out
}

// Warnings are problems that do not refuse the policy but change what it
// does: today, posture checks written as a description only (no device
// passes them). In file order.
func (pol *Policy) Warnings() []*Error { return pol.warnings }

// PostureFinding is one posture check a device fails, and what to do.
type PostureFinding struct {
	Check string
	Fix   string // every failed requirement's fix, joined with "; "
}

// EvaluatePosture evaluates every posture check of the policy against a
// device's report r, received by the controller at receivedAt, at time now.
// It returns the checks the device passes, sorted, and a finding for each
// one it fails, sorted by check. A nil report fails every check.
//
// Unknown (the device could not tell) fails a yes/no requirement unless
// the check lists it under allow_unknown. The report is self-reported:
// this decides what the device claims, not what is true.
func (pol *Policy) EvaluatePosture(r *posture.Report, receivedAt, now time.Time) (pass []string, findings []PostureFinding) {
	for _, name := range pol.postureNames() {
		fixes := pol.PostureChecks[name].evaluate(r, receivedAt, now)
		if len(fixes) == 0 {
			pass = append(pass, name)
			continue
		}
		findings = append(findings, PostureFinding{Check: name, Fix: strings.Join(fixes, "; ")})
	}
	return pass, findings
}

// PassingPosture is the sorted list of checks EvaluatePosture passes,
// without composing fix texts: the form map computation needs for every
// device and gateway.
func (pol *Policy) PassingPosture(r *posture.Report, receivedAt, now time.Time) []string {
	var pass []string
	for _, name := range pol.postureNames() {
		if pol.PostureChecks[name].passes(r, receivedAt, now) {
			pass = append(pass, name)
		}
	}
	return pass
}

// passes is evaluate without explanations, allocation-free: it must agree
// with evaluate (TestEvaluatePosture and FuzzParse compare them).
func (c *PostureCheck) passes(r *posture.Report, receivedAt, now time.Time) bool {
	if !c.Defined || r == nil {
		return false
	}
	yesNo := func(req string, want bool, got posture.State) bool {
		return !want || got == posture.Yes || got == posture.Unknown && slices.Contains(c.AllowUnknown, req)
	}
	if !yesNo(reqDiskEncryption, c.DiskEncryption, r.DiskEncryption.State) ||
		!yesNo(reqFirewall, c.Firewall, r.Firewall.State) ||
		!yesNo(reqScreenLock, c.ScreenLock, r.ScreenLock.State) {
		return false
	}
	if len(c.OS) > 0 && !slices.Contains(c.OS, r.OS) {
		return false
	}
	if min, ok := c.MinOSVersion[r.OS]; ok && !versionAtLeast(r.OSVersion, min) {
		return false
	}
	if c.MinClientVersion != "" && !versionAtLeast(r.ClientVersion, c.MinClientVersion) {
		return false
	}
	return c.MaxReportAge == 0 || now.Sub(receivedAt) <= c.MaxReportAge
}

// postureNames are the check names, sorted; computed once (a parsed
// policy is read-only and shared).
func (pol *Policy) postureNames() []string {
	pol.postureOnce.Do(func() { pol.postureSorted = slices.Sorted(maps.Keys(pol.PostureChecks)) })
	return pol.postureSorted
}

// evaluate returns what to fix for the device to pass c; none: it passes.
func (c *PostureCheck) evaluate(r *posture.Report, receivedAt, now time.Time) []string {
	if !c.Defined {
		return []string{"this check has no requirement the controller can verify (the policy describes it only); ask your administrator to define it"}
	}
	if r == nil {
		return []string{"no posture report from this device yet; keep 'cordon up' running, it reports when it connects"}
	}
	var fixes []string
	fail := func(format string, args ...any) { fixes = append(fixes, fmt.Sprintf(format, args...)) }
	yesNo := func(req string, want bool, got posture.Check, fixNo, what string) {
		if !want {
			return
		}
		switch got.State {
		case posture.Yes:
		case posture.Unknown:
			if slices.Contains(c.AllowUnknown, req) {
				return
			}
			fail("%s could not be determined on this device (%s); %s, or ask IT", what, orUnknown(got.Detail), fixNo)
		default:
			fail("%s", fixNo)
		}
	}
	yesNo(reqDiskEncryption, c.DiskEncryption, r.DiskEncryption, "encrypt the root filesystem (LUKS/dm-crypt; usually a re-install with full-disk encryption, ask IT)", "disk encryption")
	yesNo(reqFirewall, c.Firewall, r.Firewall, "turn on the firewall (an nftables input chain with a drop policy or filtering rules)", "the firewall state")
	yesNo(reqScreenLock, c.ScreenLock, r.ScreenLock, "turn on the automatic screen lock, then lock the screen once (e.g. Super+L) so the device sees a screen locker at work", "the screen lock")
	if len(c.OS) > 0 && !slices.Contains(c.OS, r.OS) {
		fail("use a supported operating system (%s); this device runs %s", strings.Join(c.OS, ", "), orUnknown(r.OS))
	} else if min, ok := c.MinOSVersion[r.OS]; ok && !versionAtLeast(r.OSVersion, min) {
		fail("update %s to version %s or later (this device runs %s)", r.OS, min, orUnknown(r.OSVersion))
	}
	if c.MinClientVersion != "" && !versionAtLeast(r.ClientVersion, c.MinClientVersion) {
		fail("update the Cordon client to %s or later (this one is %s)", c.MinClientVersion, orUnknown(r.ClientVersion))
	}
	if c.MaxReportAge > 0 && now.Sub(receivedAt) > c.MaxReportAge {
		fail("the device's last posture report is older than %s; keep 'cordon up' running and connected so it reports", c.MaxReportAge)
	}
	return fixes
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// parseVersion checks a dotted version ("22.04", "0.1.0", "v1.2.3-rc1":
// a suffix after "-", "+", "~" or " " is ignored) and returns its numeric
// parts.
func parseVersion(s string) ([]int, error) {
	var out []int
	rest, ok := versionCore(s)
	if !ok {
		return nil, fmt.Errorf("no version number")
	}
	for rest != "" {
		part, tail, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || len(part) > 9 {
			return nil, fmt.Errorf("part %q is not a number", part)
		}
		out = append(out, n)
		rest = tail
		if len(out) > 8 {
			return nil, fmt.Errorf("more than 8 parts")
		}
	}
	return out, nil
}

// versionCore is s without a leading "v" and a trailing suffix.
func versionCore(s string) (string, bool) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+~ "); i >= 0 {
		s = s[:i]
	}
	return s, s != ""
}

// nextPart returns the leading numeric part of a version and the rest
// after its dot; ok is false when the part is not a number.
func nextPart(s string) (n int, rest string, ok bool) {
	part, rest, _ := strings.Cut(s, ".")
	if part == "" || len(part) > 9 {
		return 0, "", false
	}
	for _, c := range []byte(part) {
		if c < '0' || c > '9' {
			return 0, "", false
		}
		n = n*10 + int(c-'0')
	}
	return n, rest, true
}

// versionAtLeast reports whether version have is min or later, comparing
// numeric parts (missing parts are 0); a version that does not parse is
// not (fail closed). It does not allocate.
func versionAtLeast(have, min string) bool {
	h, okH := versionCore(have)
	m, okM := versionCore(min)
	if !okH || !okM {
		return false
	}
	for h != "" || m != "" {
		a, b := 0, 0
		var ok bool
		if h != "" {
			if a, h, ok = nextPart(h); !ok {
				return false
			}
		}
		if m != "" {
			if b, m, ok = nextPart(m); !ok {
				return false
			}
		}
		if a != b {
			return a > b
		}
	}
	return true
}
