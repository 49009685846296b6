package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // IANA zones for time windows, even on gateways without /usr/share/zoneinfo

	"github.com/gaissmai/bart"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
)

// Conditions narrow an allow rule to a session context: every condition set
// must hold for the rule to admit a flow. The zero value has no conditions.
// Conditions are evaluated per new flow from the device's [Session] and the
// clock, so a session change or the passing of time never needs a recompile.
type Conditions struct {
	MFA        bool           `json:"mfa,omitempty"`         // the user completed MFA in this session
	MFAMaxAge  time.Duration  `json:"mfa_max_age,omitempty"` // and no longer ago than this (0: any age)
	Posture    []string       `json:"posture,omitempty"`     // named posture checks the device must pass, all of them
	Windows    []TimeWindow   `json:"windows,omitempty"`     // at least one must contain the current time
	SourceNets []netip.Prefix `json:"source_nets,omitempty"` // the device's public address must be in one
	CEL        string         `json:"cel,omitempty"`         // a CEL expression over the request (see [CELVariables])
}

// IsZero reports whether c sets no condition.
func (c *Conditions) IsZero() bool {
	return c == nil || (!c.MFA && c.MFAMaxAge == 0 && len(c.Posture) == 0 && len(c.Windows) == 0 &&
		len(c.SourceNets) == 0 && c.CEL == "")
}

// TimeWindow is a weekly recurring window in an IANA time zone, such as
// "Mon-Fri 06:00-20:00 America/New_York". Minutes count from local
// midnight. A window whose End is not after its Start runs past midnight:
// it starts on a listed day and ends on the following day.
type TimeWindow struct {
	Days  uint8  `json:"days"`  // bit d set: time.Weekday(d) is listed
	Start uint16 `json:"start"` // minute of the day, inclusive, 0-1439
	End   uint16 `json:"end"`   // minute of the day, exclusive, 1-1440
	Zone  string `json:"zone"`  // IANA name, e.g. "America/New_York"
}

var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// String formats the window the way the policy file writes it.
func (w TimeWindow) String() string {
	var days []string
	for i := range 7 {
		d := (i + 1) % 7 // Monday first, as people write it
		if w.Days&(1<<d) != 0 {
			days = append(days, dayNames[d])
		}
	}
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", strings.Join(days, ","),
		w.Start/60, w.Start%60, w.End/60, w.End%60, w.Zone)
}

// ContainsAt reports whether the window contains t (t is converted to the
// window's zone, loaded with time.LoadLocation).
func (w TimeWindow) contains(t time.Time, loc *time.Location) bool {
	t = t.In(loc)
	m := uint16(t.Hour()*60 + t.Minute())
	d := uint(t.Weekday())
	listed := func(d uint) bool { return w.Days&(1<<d) != 0 }
	if w.Start < w.End {
		return listed(d) && w.Start <= m && m < w.End
	}
	return (listed(d) && m >= w.Start) || (listed((d+6)%7) && m < w.End)
}

// Contains reports whether the window contains t. It loads the zone each
// call; the compiled policy loads it once.
func (w TimeWindow) Contains(t time.Time) (bool, error) {
	loc, err := time.LoadLocation(w.Zone)
	if err != nil {
		return false, err
	}
	return w.contains(t, loc), nil
}

// Session is what the controller knows about a device's current session,
// the context conditions are evaluated against. It is kept beside the
// compiled policy (a session changes far more often than policy) and is
// read-only once handed to [Compiled.DecideSession].
type Session struct {
	MFAAt      time.Time  `json:"mfa_at,omitzero"`      // when the user last completed MFA; zero: not in this session
	Posture    []string   `json:"posture,omitempty"`    // posture checks the device passes, sorted
	PublicAddr netip.Addr `json:"public_addr,omitzero"` // the device's public (underlay) address
	Groups     []string   `json:"groups,omitempty"`     // the user's groups, for CEL
	Tags       []string   `json:"tags,omitempty"`       // the device's tags, for CEL
	// ID is the session's ID, for flow records. The gateway sets it from
	// controlproto.GatewayPeer.SessionID; it decides nothing.
	ID string `json:"-"`
}

// CELVariables documents the variables a rule's CEL expression sees.
var CELVariables = map[string]string{
	"user":    "string: the user name",
	"groups":  "list(string): the user's groups",
	"tags":    "list(string): the device's tags",
	"posture": "list(string): posture checks the device passes",
	"app":     "string: the app's name",
	"proto":   "string: tcp, udp, icmp",
	"port":    "int: destination port (0 for icmp)",
	"now":     "timestamp: the time of the decision",
	"mfa_age": "duration: time since MFA (a very long duration without MFA)",
	"source":  "string: the device's public address, empty when unknown",
}

var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("user", cel.StringType),
		cel.Variable("groups", cel.ListType(cel.StringType)),
		cel.Variable("tags", cel.ListType(cel.StringType)),
		cel.Variable("posture", cel.ListType(cel.StringType)),
		cel.Variable("app", cel.StringType),
		cel.Variable("proto", cel.StringType),
		cel.Variable("port", cel.IntType),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("mfa_age", cel.DurationType),
		cel.Variable("source", cel.StringType),
	)
	if err != nil {
		panic(err)
	}
	return env
}()

// celCostLimit bounds the work one expression may do per decision.
const celCostLimit = 10_000

// CompileCEL type-checks a condition expression; it must yield a bool.
func CompileCEL(expr string) (cel.Program, error) {
	ast, iss := celEnv.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("cel: %s", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("cel: expression yields %s, want bool", ast.OutputType())
	}
	return celEnv.Program(ast, cel.CostLimit(celCostLimit))
}

// cond is the compiled form of [Conditions].
type cond struct {
	mfa     bool
	maxAge  time.Duration
	posture []string
	windows []TimeWindow
	locs    []*time.Location
	src     *bart.Lite // nil: any source
	prg     cel.Program
}

func compileCond(c *Conditions) (*cond, error) {
	if c.IsZero() {
		return nil, nil
	}
	k := &cond{mfa: c.MFA || c.MFAMaxAge > 0, maxAge: c.MFAMaxAge, windows: slices.Clone(c.Windows)}
	k.posture = slices.Clone(c.Posture)
	slices.Sort(k.posture)
	k.posture = slices.Compact(k.posture)
	for _, w := range c.Windows {
		if w.Start >= 1440 || w.End > 1440 || w.End == 0 || w.Start == w.End || w.Days&0x80 != 0 || w.Days == 0 {
			return nil, fmt.Errorf("bad time window %s", w)
		}
		loc, err := time.LoadLocation(w.Zone)
		if err != nil || w.Zone == "" || w.Zone == "Local" {
			return nil, fmt.Errorf("time window %s: unknown time zone %q", w, w.Zone)
		}
		k.locs = append(k.locs, loc)
	}
	if len(c.SourceNets) > 0 {
		k.src = new(bart.Lite)
		for _, p := range c.SourceNets {
			if !p.IsValid() {
				return nil, fmt.Errorf("invalid source network")
			}
			k.src.Insert(p.Masked())
		}
	}
	if c.CEL != "" {
		prg, err := CompileCEL(c.CEL)
		if err != nil {
			return nil, err
		}
		k.prg = prg
	}
	return k, nil
}

// check evaluates the conditions; it returns ReasonAllowed or the first
// condition that failed, in a fixed order: MFA, MFA age, posture, time,
// source network, expression. Only the expression allocates.
func (k *cond) check(s *Session, now time.Time, req *celRequest) Reason {
	if k == nil {
		return ReasonAllowed
	}
	if s == nil {
		s = &noSession
	}
	if k.mfa {
		if s.MFAAt.IsZero() {
			return ReasonMFARequired
		}
		if k.maxAge > 0 && now.Sub(s.MFAAt) > k.maxAge {
			return ReasonMFAStale
		}
	}
	for _, p := range k.posture {
		if _, ok := slices.BinarySearch(s.Posture, p); !ok {
			return ReasonPosture
		}
	}
	if len(k.windows) > 0 {
		in := false
		for i := range k.windows {
			if k.windows[i].contains(now, k.locs[i]) {
				in = true
				break
			}
		}
		if !in {
			return ReasonOutsideHours
		}
	}
	if k.src != nil && (!s.PublicAddr.IsValid() || !k.src.Contains(s.PublicAddr)) {
		return ReasonSourceNetwork
	}
	if k.prg != nil {
		req.s, req.now = s, now
		out, _, err := k.prg.Eval(req)
		if err != nil || out != types.True {
			return ReasonExpression
		}
	}
	return ReasonAllowed
}

var noSession Session

// celRequest is the activation a CEL expression reads.
type celRequest struct {
	s     *Session
	peer  *Peer
	app   string
	proto Proto
	port  uint16
	now   time.Time
}

var _ interpreter.Activation = (*celRequest)(nil)

func (r *celRequest) ResolveName(name string) (any, bool) {
	switch name {
	case "user":
		if r.peer != nil {
			return r.peer.User, true
		}
		return "", true
	case "groups":
		return orEmpty(r.s.Groups), true
	case "tags":
		return orEmpty(r.s.Tags), true
	case "posture":
		return orEmpty(r.s.Posture), true
	case "app":
		return r.app, true
	case "proto":
		return r.proto.String(), true
	case "port":
		return int64(r.port), true
	case "now":
		return r.now, true
	case "mfa_age":
		if r.s.MFAAt.IsZero() {
			return time.Duration(1<<62 - 1), true
		}
		return r.now.Sub(r.s.MFAAt), true
	case "source":
		if r.s.PublicAddr.IsValid() {
			return r.s.PublicAddr.String(), true
		}
		return "", true
	}
	return nil, false
}

func (r *celRequest) Parent() interpreter.Activation { return nil }

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
