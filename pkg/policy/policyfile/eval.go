package policyfile

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/cel-go/common/types"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Request is one question to the reference evaluator: may this user, on
// this device, in this session, at this time, open this flow?
type Request struct {
	User    string
	IdP     []IdPRef // the user's IdP group claims
	Tags    []string // the device's tags
	Session policy.Session
	At      time.Time // zero: now
	// The destination: App restricts the question to one app (any of its
	// addresses); otherwise Dst is matched against every app's addresses.
	App   string
	Dst   netip.Addr
	Proto policy.Proto
	Port  uint16
}

// Result is the reference evaluator's answer and its explanation.
type Result struct {
	Verdict policy.Verdict
	Reason  policy.Reason
	Rule    *Rule  // the deciding rule: the allow, the deny, or the allow whose condition failed
	App     string // the app the deciding rule matched
	WireID  policy.RuleID
}

// WireID is the ID of the compiled rule for rule r, app and service index
// i. The compiled policy tries rules in this ID order; the reference
// evaluator does the same, so both name the same deciding rule.
func WireID(rule, app string, i int) policy.RuleID {
	return policy.RuleID(fmt.Sprintf("%s/%s/%d", rule, app, i))
}

type candidate struct {
	r   *Rule
	app string
	id  policy.RuleID
}

// Evaluate is the reference evaluator: a plain scan over every rule, app
// and service, written to be obviously right rather than fast. The compiled
// policy must agree with it (see the differential tests).
func (pol *Policy) Evaluate(q Request) Result {
	at := q.At
	if at.IsZero() {
		at = time.Now()
	}
	groups := pol.GroupsOf(q.User, q.IdP)
	var denies, allows []candidate
	for _, r := range slices.Concat(pol.Denies, pol.Rules) {
		if !subjectMatches(r, q.User, groups, q.Tags) {
			continue
		}
		for _, name := range r.apps {
			a := pol.Apps[name]
			if q.App != "" && q.App != name {
				continue
			}
			if q.App == "" && !slices.ContainsFunc(a.Addrs, func(p netip.Prefix) bool { return p.Contains(q.Dst) }) {
				continue
			}
			for i, s := range ruleServices(a, r) {
				if !serviceMatches(s, q.Proto, q.Port) {
					continue
				}
				c := candidate{r, name, WireID(r.Name, name, i)}
				if r.Deny {
					denies = append(denies, c)
				} else {
					allows = append(allows, c)
				}
			}
		}
	}
	byID := func(a, b candidate) int { return cmp.Compare(a.id, b.id) }
	slices.SortFunc(denies, byID)
	slices.SortFunc(allows, byID)
	if len(denies) > 0 {
		d := denies[0]
		return Result{Verdict: policy.Deny, Reason: policy.ReasonDenyRule, Rule: d.r, App: d.app, WireID: d.id}
	}
	res := Result{Reason: policy.ReasonNoRule}
	for _, c := range allows {
		why := conditionsHold(&c.r.When, q, groups, c.app, at)
		if why == policy.ReasonAllowed {
			return Result{Verdict: policy.Allow, Reason: why, Rule: c.r, App: c.app, WireID: c.id}
		}
		if res.Rule == nil {
			res = Result{Reason: why, Rule: c.r, App: c.app, WireID: c.id}
		}
	}
	return res
}

func subjectMatches(r *Rule, user string, groups, tags []string) bool {
	for _, s := range r.From {
		switch s.Kind {
		case SubjectUser:
			if s.Name == user {
				return true
			}
		case SubjectGroup:
			if slices.Contains(groups, s.Name) {
				return true
			}
		case SubjectTag:
			if slices.Contains(tags, s.Name) {
				return true
			}
		}
	}
	return false
}

func serviceMatches(s Service, proto policy.Proto, port uint16) bool {
	if s.Proto != policy.ProtoAny && s.Proto != proto {
		return false
	}
	if proto != policy.ProtoTCP && proto != policy.ProtoUDP || len(s.Ports) == 0 {
		return true
	}
	for _, r := range s.Ports {
		if r.First <= port && port <= r.Last {
			return true
		}
	}
	return false
}

// conditionsHold checks c in the documented order and returns the first
// that fails, or ReasonAllowed.
func conditionsHold(c *policy.Conditions, q Request, groups []string, app string, at time.Time) policy.Reason {
	s := q.Session
	if c.MFA || c.MFAMaxAge > 0 {
		if s.MFAAt.IsZero() {
			return policy.ReasonMFARequired
		}
		if c.MFAMaxAge > 0 && at.Sub(s.MFAAt) > c.MFAMaxAge {
			return policy.ReasonMFAStale
		}
	}
	for _, want := range c.Posture {
		if !slices.Contains(s.Posture, want) {
			return policy.ReasonPosture
		}
	}
	if len(c.Windows) > 0 {
		in := false
		for _, w := range c.Windows {
			ok, err := w.Contains(at)
			in = in || (ok && err == nil)
		}
		if !in {
			return policy.ReasonOutsideHours
		}
	}
	if len(c.SourceNets) > 0 {
		in := false
		for _, p := range c.SourceNets {
			in = in || (s.PublicAddr.IsValid() && p.Contains(s.PublicAddr))
		}
		if !in {
			return policy.ReasonSourceNetwork
		}
	}
	if c.CEL != "" {
		prg, err := policy.CompileCEL(c.CEL)
		if err != nil {
			return policy.ReasonExpression
		}
		mfaAge := time.Duration(1<<62 - 1)
		if !s.MFAAt.IsZero() {
			mfaAge = at.Sub(s.MFAAt)
		}
		source := ""
		if s.PublicAddr.IsValid() {
			source = s.PublicAddr.String()
		}
		out, _, err := prg.Eval(map[string]any{
			"user": q.User, "groups": orEmpty(groups), "tags": orEmpty(q.Tags), "posture": orEmpty(s.Posture),
			"app": app, "proto": q.Proto.String(), "port": int64(q.Port), "now": at,
			"mfa_age": mfaAge, "source": source,
		})
		if err != nil || out != types.True {
			return policy.ReasonExpression
		}
	}
	return policy.ReasonAllowed
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
