// Package audit is the audit trail's schema: every event type Cordon
// records, as a constant, with its category, the outcomes it can have and
// the severity of each, and the detail fields it carries. Nothing else
// spells an event type; a test fails on a string literal elsewhere that is
// one (literals_test.go), and docs/audit-events.md is generated from the
// registry.
//
// An event type never changes its spelling once shipped: stored trails and
// the rules a hospital's SIEM matches on depend on it. Add a type, or an
// optional field, instead.
//
// The package holds the schema only, not the record: the controller's
// store.AuditEvent is the record, and agents' flow reports become audit
// events in the controller. pkg/ so that agents and tools can name types
// without importing the controller.
package audit

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Type is an audit event type, such as "admin.app.create": dot-separated,
// its first part naming the area. Use the constants; Lookup gives a type's
// Spec.
type Type string

// Category groups event types for an auditor or a SIEM: which part of the
// security program an event belongs to.
type Category string

const (
	// Authentication: people and agents proving who they are, and the
	// credentials that prove it (sign-ins, MFA, recovery codes, the IdP
	// vouching for a user, repeated-failure alerts).
	Authentication Category = "authentication"
	// Access: a request refused because its credential or permission did
	// not allow it (the admin API's authorization decisions).
	Access Category = "access"
	// Administration: a change an administrator (or the controller on its
	// own behalf, such as the bootstrap token) made to configuration,
	// accounts, credentials or policy.
	Administration Category = "administration"
	// Session: a user's access session started or ended.
	Session Category = "session"
	// Device: an agent's identity and state: enrollment, certificate
	// renewal, posture reports. Gateways count as devices here.
	Device Category = "device"
	// Flow: a gateway's decision on a connection or a DNS lookup.
	Flow Category = "flow"
	// Integrity: the audit trail's own integrity (164.312(c)): a sign that
	// records were changed, deleted or the log replaced.
	Integrity Category = "integrity"
)

// categories in the order the reference lists them.
var categories = []Category{Authentication, Access, Administration, Session, Device, Flow, Integrity}

// Severity is how much an event wants a human's attention. The set is
// small and ordered (Info < Notice < Warning < Alert), so a filter can say
// "at least Warning".
//
// A SIEM export maps them as follows (syslog severity, RFC 5424 §6.2.1;
// CEF Severity 0-10, whose bands are 0-3 low, 4-6 medium, 7-8 high,
// 9-10 very high):
//
//	Severity  syslog         CEF
//	info      6 informational 3
//	notice    5 notice        5
//	warning   4 warning       7
//	alert     1 alert         9
type Severity int

const (
	// Info: routine, expected; kept for the record (a sign-in, a flow
	// allowed, an admin change that succeeded).
	Info Severity = iota + 1
	// Notice: normal but worth a look in a review (a flow denied, a
	// session ended by policy, a user's groups changed at the IdP).
	Notice
	// Warning: something failed or was refused that may be an attack or a
	// fault (a failed sign-in, an API request refused, a certificate
	// renewal refused).
	Warning
	// Alert: act now (repeated failed sign-ins of one account or source).
	Alert
)

var severityNames = map[Severity]string{Info: "info", Notice: "notice", Warning: "warning", Alert: "alert"}

// String is the severity's name: info, notice, warning or alert.
func (s Severity) String() string {
	if n, ok := severityNames[s]; ok {
		return n
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Syslog is the RFC 5424 severity number (0 emergency .. 7 debug).
func (s Severity) Syslog() int {
	switch s {
	case Notice:
		return 5
	case Warning:
		return 4
	case Alert:
		return 1
	}
	return 6
}

// CEF is the ArcSight CEF Severity (0 lowest .. 10 highest).
func (s Severity) CEF() int {
	switch s {
	case Notice:
		return 5
	case Warning:
		return 7
	case Alert:
		return 9
	}
	return 3
}

// Outcome is how the recorded action ended. Which outcomes a type can have
// is in its Spec.
type Outcome string

const (
	Success Outcome = "success" // done as asked
	Failure Outcome = "failure" // refused or failed; details say why
	Allow   Outcome = "allow"   // a flow or lookup was let through
	Deny    Outcome = "deny"    // a flow or lookup was refused
	Cut     Outcome = "cut"     // an open flow was closed (policy or a condition changed)
	Invalid Outcome = "invalid" // the agent sent something that could not be read
	Raised  Outcome = "alert"   // an alert was raised
	Ended   Outcome = "end"     // a flow left the gateway's connection table
	Cleared Outcome = "cleared" // the condition an alert was raised for is over
)

// OutcomeSpec is one outcome an event type can have and that outcome's
// severity.
type OutcomeSpec struct {
	Outcome  Outcome
	Severity Severity
}

// Field is one key of an event's Details.
type Field struct {
	Name string
	// Required lists the outcomes on which the field is always present;
	// empty means optional. "Present" means the key is there: its value
	// may be empty (an IdP that sends no email).
	Required []Outcome
	Doc      string // what the value means
}

// Spec is the schema of one event type.
type Spec struct {
	Type     Type
	Category Category
	Doc      string // when the event is recorded, what Actor and Subject are
	Outcomes []OutcomeSpec
	Fields   []Field
}

// Severity returns the severity of the event type with outcome o.
func (s Spec) Severity(o Outcome) (Severity, bool) {
	for _, x := range s.Outcomes {
		if x.Outcome == o {
			return x.Severity, true
		}
	}
	return 0, false
}

// MaxSeverity is the highest severity of any of the type's outcomes.
func (s Spec) MaxSeverity() Severity {
	var m Severity
	for _, x := range s.Outcomes {
		m = max(m, x.Severity)
	}
	return m
}

// Field returns the named field.
func (s Spec) Field(name string) (Field, bool) {
	for _, f := range s.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

var byType = func() map[Type]Spec {
	m := make(map[Type]Spec, len(specs))
	for _, s := range specs {
		if _, dup := m[s.Type]; dup {
			panic("audit: type registered twice: " + string(s.Type))
		}
		m[s.Type] = s
	}
	return m
}()

// Lookup returns the Spec of t.
func Lookup(t Type) (Spec, bool) {
	s, ok := byType[t]
	return s, ok
}

// All returns every Spec, ordered by category (as listed in the package)
// and then by type. The slice is the caller's; the Specs' slices are
// shared and must not be changed.
func All() []Spec {
	out := slices.Collect(maps.Values(byType))
	slices.SortFunc(out, func(a, b Spec) int {
		return cmp.Or(
			cmp.Compare(slices.Index(categories, a.Category), slices.Index(categories, b.Category)),
			strings.Compare(string(a.Type), string(b.Type)))
	})
	return out
}

// Validate checks an event against its type's Spec: the type is
// registered, the outcome is one the type allows, every field required on
// that outcome is present and no other key is. It returns every problem
// found, joined.
func Validate(t Type, outcome string, details map[string]string) error {
	s, ok := Lookup(t)
	if !ok {
		return fmt.Errorf("audit event type %q is not registered in pkg/audit", t)
	}
	var problems []string
	o := Outcome(outcome)
	if _, ok := s.Severity(o); !ok {
		problems = append(problems, fmt.Sprintf("outcome %q not allowed (want one of %s)", outcome, s.outcomeList()))
	}
	for _, f := range s.Fields {
		if slices.Contains(f.Required, o) {
			if _, ok := details[f.Name]; !ok {
				problems = append(problems, fmt.Sprintf("detail %q required on outcome %s is missing", f.Name, o))
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(details)) {
		if _, ok := s.Field(k); !ok {
			problems = append(problems, fmt.Sprintf("detail %q is not a field of the type", k))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("audit event %s: %s", t, strings.Join(problems, "; "))
	}
	return nil
}

func (s Spec) outcomeList() string {
	names := make([]string, len(s.Outcomes))
	for i, o := range s.Outcomes {
		names[i] = string(o.Outcome)
	}
	return strings.Join(names, ", ")
}
