package review

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Change is what applying decided revocations changes: deny rules added
// to the active policy file, or group memberships removed from the
// one-by-one directory. The state owner applies it in one transaction.
type Change struct {
	Denies  []policyfile.DenyRule
	Members []Membership // directory only
}

// Membership is one user's membership of a directory group.
type Membership struct{ Group, User string }

func (m Membership) String() string { return m.Group + ":" + m.User }

// IsZero reports whether the change changes nothing.
func (c Change) IsZero() bool { return len(c.Denies) == 0 && len(c.Members) == 0 }

// Plan is the change that applies the revoke and narrow decisions of
// lines (others are skipped) of campaign id: with a policy file active
// (file true), a deny rule per line named review-ID-N; in the one-by-one
// directory, which has neither deny rules nor ports per rule, the removal
// of the user from the group the line comes through (which takes every
// app that group grants), and no narrowing.
func Plan(id string, file bool, lines []store.ReviewLine) (Change, error) {
	var c Change
	for _, l := range lines {
		if l.Decision != store.DecisionRevoke && l.Decision != store.DecisionNarrow {
			continue
		}
		if strings.HasPrefix(l.Who, "idp:") {
			return Change{}, fmt.Errorf("line %d (%s through %s): %w: an IdP group's members are managed at the identity provider; remove its reference from group %s in the policy file instead",
				l.N, l.Who, l.Via, ErrNotRevocable, strings.TrimPrefix(l.Via, "group:"))
		}
		if !file {
			group, ok := strings.CutPrefix(l.Via, "group:")
			if l.Decision == store.DecisionNarrow || !ok || l.User == "" {
				return Change{}, fmt.Errorf("line %d: %w: the one-by-one directory grants every port of an app to a whole group; apply a policy file (cordonctl policy export) to narrow an entitlement", l.N, ErrNotRevocable)
			}
			m := Membership{Group: group, User: l.User}
			if !slices.Contains(c.Members, m) {
				c.Members = append(c.Members, m)
			}
			continue
		}
		d := policyfile.DenyRule{
			Name:        "review-" + id + "-" + strconv.Itoa(l.N),
			Description: fmt.Sprintf("access review %s line %d: %s by %s", id, l.N, l.Decision, l.DecidedBy),
			From:        l.Who, App: l.App,
		}
		if l.Decision == store.DecisionNarrow {
			var err error
			if d.Ports, err = NarrowDenied(l.Ports, l.KeepPorts); err != nil {
				return Change{}, fmt.Errorf("line %d: %w", l.N, err)
			}
		}
		c.Denies = append(c.Denies, d)
	}
	return c, nil
}

// NarrowDenied returns the services of ports (a line's, "tcp/443,
// tcp/8443") that keep (a reviewer's, a subset of them) leaves out: what
// a narrowing denies. keep must name some but not all of them.
func NarrowDenied(ports, keep string) ([]string, error) {
	have := splitServices(ports)
	kept := splitServices(keep)
	if len(kept) == 0 {
		return nil, fmt.Errorf("narrow needs the ports to keep (--ports), some of %s", ports)
	}
	for _, k := range kept {
		if !slices.Contains(have, k) {
			return nil, fmt.Errorf("port %q is not one of the entitlement's (%s): narrow keeps some of them", k, ports)
		}
	}
	var denied []string
	for _, h := range have {
		if !slices.Contains(kept, h) {
			denied = append(denied, h)
		}
	}
	if len(denied) == 0 {
		return nil, fmt.Errorf("--ports %s keeps every port of the entitlement: decide keep instead", keep)
	}
	return denied, nil
}

// splitServices reads a comma-separated service list, each in the
// canonical form the policy file writes.
func splitServices(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if svc, err := policyfile.ParseService(f); err == nil {
			f = svc.String()
		}
		out = append(out, f)
	}
	return out
}
