// Package policyfile is Cordon's policy language: one declarative YAML file
// holding groups, segments, apps, allow and deny rules with conditions, and
// tests, read through one strict entry point ([Parse]) that rejects unknown
// fields and reports every error as "file:line:column: what is wrong, what
// would be right".
//
// A parsed [Policy] is checked whole (names resolve, no group cycles, PHI
// apps are reached only with MFA and a posture check or a written waiver),
// then its tests run against both evaluators: the plain reference evaluator
// ([Policy.Evaluate]) and the compiled form the gateway enforces
// ([Policy.Compile] into [policy.Compiled]). A policy whose tests fail is
// refused.
//
// The controller is the only parser; gateways receive the compiled wire
// form. cordonctl uses this package offline for validate and explain.
package policyfile

import (
	"net/netip"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Pos is a position in the policy file, 1-based.
type Pos struct {
	Line, Col int
}

// Classification is an app's data classification.
type Classification string

// Classifications.
const (
	ClassPHI      Classification = "phi"
	ClassInternal Classification = "internal"
	ClassPublic   Classification = "public"
)

// Policy is a parsed, checked policy file. Maps are keyed by name; the
// sorted name lists give a deterministic order.
type Policy struct {
	Version       int
	Groups        map[string]*Group
	PostureChecks map[string]*PostureCheck // by name; see posture.go
	Segments      map[string]*Segment
	Apps          map[string]*App
	Rules         []*Rule // allow rules, in file order
	Denies        []*Rule // deny rules, in file order
	Tests         []*Test

	GroupNames, SegmentNames, AppNames []string // sorted

	// derived
	groupUsers map[string]map[string]bool // group → users, transitive
	groupIdP   map[string][]IdPRef        // group → IdP refs, transitive
	userGroups map[string][]string        // user → groups (local members only), sorted
	warnings   []*Error                   // see Warnings

	postureOnce   sync.Once // postureSorted: the check names, sorted
	postureSorted []string
}

// IdPRef names an IdP group by the value of a claim in the user's ID token
// (e.g. claim "groups", value "Radiology"). Users whose token carries it
// belong to the Cordon group.
type IdPRef struct {
	Claim string `json:"claim"`
	Value string `json:"value"`
}

// Group is a named set of users: local users, other groups, IdP groups.
type Group struct {
	Name        string
	Pos         Pos
	Description string
	Members     []string
	Groups      []string
	IdP         []IdPRef
}

// Segment is a set of prefixes behind named gateways.
type Segment struct {
	Name        string
	Pos         Pos
	Description string
	Prefixes    []netip.Prefix
	Gateways    []string
}

// Service is a protocol and its port ranges ("tcp/443", "udp/5000-5010",
// "icmp"). No ranges means every port.
type Service struct {
	Proto policy.Proto
	Ports []policy.PortRange
}

// App is an application inside a segment.
type App struct {
	Name           string
	Pos            Pos
	Description    string
	Segment        string
	Names          []string // DNS names
	Addrs          []netip.Prefix
	Services       []Service
	Classification Classification
	Tags           []string
	// Emergency marks the app for emergency access ("emergency: true"):
	// a break-glass session reaches the emergency apps its rules grant
	// and nothing else.
	Emergency bool
}

// SubjectKind says what a rule's "from" entry names.
type SubjectKind string

// Subject kinds.
const (
	SubjectUser  SubjectKind = "user"
	SubjectGroup SubjectKind = "group"
	SubjectTag   SubjectKind = "tag" // a device tag
)

// Subject is one "from" entry: "user:alice", "group:nurses", "tag:kiosk".
type Subject struct {
	Kind SubjectKind
	Name string
}

func (s Subject) String() string { return string(s.Kind) + ":" + s.Name }

// TargetKind says what a rule's "to" entry names.
type TargetKind string

// Target kinds.
const (
	TargetApp   TargetKind = "app"
	TargetTag   TargetKind = "tag"   // every app carrying the tag
	TargetClass TargetKind = "class" // every app of a classification
)

// Target is one "to" entry: "app:ehr", "tag:imaging", "class:phi".
type Target struct {
	Kind TargetKind
	Name string
}

func (t Target) String() string { return string(t.Kind) + ":" + t.Name }

// Rule is an allow rule or (Deny) a deny rule.
type Rule struct {
	Name        string
	Pos         Pos
	Description string
	Deny        bool
	From        []Subject
	To          []Target
	Ports       []Service // narrows the apps' services; nil: all of them
	When        policy.Conditions
	Waiver      string // written reason for reaching PHI without MFA and posture

	apps []string // resolved targets, sorted
}

// Apps returns the apps the rule's targets resolve to, sorted.
func (r *Rule) Apps() []string { return r.apps }

// Test asserts what a user on a device, in a context, may reach.
type Test struct {
	Name    string
	Pos     Pos
	User    string
	IdP     []IdPRef
	Device  TestDevice
	At      time.Time
	App     string
	Service Service // one protocol, one port
	Expect  policy.Verdict
	Reason  string // optional: the expected reason (policy.Reason's string)
}

// TestDevice is the device and session context of a test.
type TestDevice struct {
	Tags    []string
	Posture []string
	MFAAge  time.Duration // <0: no MFA in the session
	Source  netip.Addr
}
