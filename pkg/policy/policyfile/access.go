package policyfile

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Entitlement is one line of an access review: who may reach which app on
// which ports, through which rule, under which conditions, and whether a
// deny rule takes it away.
type Entitlement struct {
	Who        string `json:"who"` // "user:alice", "idp:groups=Physicians", "tag:kiosk"
	Via        string `json:"via"` // the rule's subject that grants it, e.g. "group:clinicians"
	App        string `json:"app"`
	Class      string `json:"classification"`
	Ports      string `json:"ports"`
	Rule       string `json:"rule"`
	Conditions string `json:"conditions,omitempty"`
	Waiver     string `json:"waiver,omitempty"`
	DeniedBy   string `json:"denied_by,omitempty"` // a deny rule that overrides it (for the ports both cover)
}

// ConditionSummary writes a rule's conditions the way a reviewer reads them.
func ConditionSummary(c *policy.Conditions) string {
	var parts []string
	switch {
	case c.MFAMaxAge > 0:
		parts = append(parts, "MFA within "+c.MFAMaxAge.String())
	case c.MFA:
		parts = append(parts, "MFA")
	}
	if len(c.Posture) > 0 {
		parts = append(parts, "posture "+strings.Join(c.Posture, "+"))
	}
	for _, w := range c.Windows {
		parts = append(parts, "during "+w.String())
	}
	if len(c.SourceNets) > 0 {
		var s []string
		for _, p := range c.SourceNets {
			s = append(s, p.String())
		}
		parts = append(parts, "from "+strings.Join(s, ","))
	}
	if c.CEL != "" {
		parts = append(parts, "if "+c.CEL)
	}
	return strings.Join(parts, "; ")
}

// WhoCan lists everyone the policy lets reach app: local users (expanded
// through groups), IdP groups and device tags, sorted.
func (pol *Policy) WhoCan(app string) ([]Entitlement, error) {
	a, ok := pol.Apps[app]
	if !ok {
		return nil, fmt.Errorf("app %q is not in the policy%s", app, suggest(app, pol.AppNames))
	}
	var out []Entitlement
	for _, r := range pol.Rules {
		if !slices.Contains(r.apps, app) {
			continue
		}
		base := Entitlement{App: app, Class: string(a.Classification), Ports: serviceList(ruleServices(a, r)),
			Rule: r.Name, Conditions: ConditionSummary(&r.When), Waiver: r.Waiver}
		for _, s := range r.From {
			e := base
			e.Via = s.String()
			switch s.Kind {
			case SubjectUser:
				e.Who = s.String()
				e.DeniedBy = pol.deniedFor(app, s.Name, pol.GroupsOf(s.Name, nil), nil)
				out = append(out, e)
			case SubjectTag:
				e.Who = s.String()
				e.DeniedBy = pol.deniedFor(app, "", nil, []string{s.Name})
				out = append(out, e)
			case SubjectGroup:
				for _, u := range slices.Sorted(func(yield func(string) bool) {
					for u := range pol.groupUsers[s.Name] {
						if !yield(u) {
							return
						}
					}
				}) {
					e.Who = "user:" + u
					e.DeniedBy = pol.deniedFor(app, u, pol.GroupsOf(u, nil), nil)
					out = append(out, e)
				}
				for _, ref := range pol.groupIdP[s.Name] {
					e.Who = "idp:" + ref.Claim + "=" + ref.Value
					e.DeniedBy = pol.deniedFor(app, "", pol.GroupsOf("", []IdPRef{ref}), nil)
					out = append(out, e)
				}
			}
		}
	}
	sortEntitlements(out)
	return out, nil
}

// Access lists what one user may reach (given their IdP claims and, for
// tag rules, the device's tags), sorted by app.
func (pol *Policy) Access(user string, idp []IdPRef, tags []string) []Entitlement {
	groups := pol.GroupsOf(user, idp)
	var out []Entitlement
	for _, r := range pol.Rules {
		via := ""
		for _, s := range r.From {
			if subjectMatches(&Rule{From: []Subject{s}}, user, groups, tags) {
				via = s.String()
				break
			}
		}
		if via == "" {
			continue
		}
		for _, app := range r.apps {
			a := pol.Apps[app]
			out = append(out, Entitlement{Who: "user:" + user, Via: via, App: app, Class: string(a.Classification),
				Ports: serviceList(ruleServices(a, r)), Rule: r.Name, Conditions: ConditionSummary(&r.When),
				Waiver: r.Waiver, DeniedBy: pol.deniedFor(app, user, groups, tags)})
		}
	}
	sortEntitlements(out)
	return out
}

// MFAOnlyApps lists, sorted, the apps user (with these IdP claims)
// reaches only through rules that require MFA: closed for a session whose
// sign-in proved no second factor. Device tags are not considered.
func (pol *Policy) MFAOnlyApps(user string, idp []IdPRef) []string {
	needs := map[string]bool{}
	groups := pol.GroupsOf(user, idp)
	for _, r := range pol.Rules {
		mfa := r.When.MFA || r.When.MFAMaxAge > 0
		if !subjectMatches(r, user, groups, nil) {
			continue
		}
		for _, app := range r.apps {
			if v, seen := needs[app]; !seen || v {
				needs[app] = mfa
			}
		}
	}
	var out []string
	for app, mfa := range needs {
		if mfa {
			out = append(out, app)
		}
	}
	slices.Sort(out)
	return out
}

// deniedFor names the deny rules that apply to a subject for app.
func (pol *Policy) deniedFor(app, user string, groups, tags []string) string {
	var names []string
	for _, d := range pol.Denies {
		if slices.Contains(d.apps, app) && subjectMatches(d, user, groups, tags) {
			names = append(names, d.Name)
		}
	}
	return strings.Join(names, ",")
}

func sortEntitlements(es []Entitlement) {
	slices.SortStableFunc(es, func(a, b Entitlement) int {
		return strings.Compare(a.App+"\x00"+a.Who+"\x00"+a.Rule, b.App+"\x00"+b.Who+"\x00"+b.Rule)
	})
}

// Detail says, for a deny because of a condition, what was missing.
func Detail(r Result, q Request) string {
	if r.Rule == nil {
		return ""
	}
	c := &r.Rule.When
	at := q.At
	if at.IsZero() {
		at = time.Now()
	}
	switch r.Reason {
	case policy.ReasonMFARequired:
		return "the rule requires MFA and the session has none"
	case policy.ReasonMFAStale:
		return fmt.Sprintf("MFA was %s ago; the rule allows at most %s", at.Sub(q.Session.MFAAt).Round(time.Minute), c.MFAMaxAge)
	case policy.ReasonPosture:
		var missing []string
		for _, p := range c.Posture {
			if !slices.Contains(q.Session.Posture, p) {
				missing = append(missing, p)
			}
		}
		return "the device does not pass posture check(s) " + strings.Join(missing, ", ")
	case policy.ReasonOutsideHours:
		var ws []string
		for _, w := range c.Windows {
			ws = append(ws, w.String())
		}
		return fmt.Sprintf("%s is outside %s", at.Format(time.RFC3339), strings.Join(ws, " and "))
	case policy.ReasonSourceNetwork:
		return fmt.Sprintf("the device's public address %v is not in the rule's source networks", q.Session.PublicAddr)
	case policy.ReasonExpression:
		return "the expression " + c.CEL + " is false"
	case policy.ReasonDenyRule:
		if r.Rule.Description != "" {
			return r.Rule.Description
		}
	}
	return ""
}
