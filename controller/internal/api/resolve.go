package api

// Names of segments, apps and groups resolve against the active policy
// file once one is applied: it is then the single source of them (network
// maps ignore the one-by-one directory), so answering from the directory
// would show what no longer decides access, and refusing a name the file
// defines would make the file unusable (issue 10: no gateway could be
// enrolled for a policy-file segment). Before the first apply, the
// directory answers as before.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// appliedPolicy is the active policy version and its parsed file, or
// (nil, nil) when no policy file was applied yet.
func (a *API) appliedPolicy(ctx context.Context) (*store.PolicyVersion, *policyfile.Policy, error) {
	v, err := a.st.ActivePolicy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the active policy: %w", err)
	}
	pol, err := policyfile.Parse(v.File, v.Source)
	if err != nil {
		return nil, nil, fmt.Errorf("the active policy (version %d, %s) no longer parses: apply a corrected file: %w", v.Version, v.File, err)
	}
	return &v, pol, nil
}

// policySource names a policy version for answers: "policy version 3 (hospital.yaml)".
func policySource(v *store.PolicyVersion) string {
	return fmt.Sprintf("policy version %d (%s)", v.Version, v.File)
}

// notInPolicy is the answer for a name the active policy does not define:
// what exists instead, and what to do.
func notInPolicy(kind, name string, v *store.PolicyVersion, have []string) error {
	list := "none"
	if len(have) > 0 {
		list = strings.Join(have, ", ")
	}
	plural := kind + "s"
	return notFoundf("%s %q is not in the active %s, whose %s are: %s; add it to the file, then 'cordonctl policy plan' and 'cordonctl policy apply'",
		kind, clip(name), policySource(v), plural, list)
}

func policySegmentOut(s *policyfile.Segment, v *store.PolicyVersion) adminapi.Segment {
	return adminapi.Segment{Name: s.Name, CIDRs: nonNil(s.Prefixes), Gateways: s.Gateways, Source: policySource(v), CreatedAt: v.CreatedAt}
}

func policyAppOut(x *policyfile.App, v *store.PolicyVersion) adminapi.App {
	out := adminapi.App{
		Name: x.Name, Segment: x.Segment, Names: x.Names, Addresses: x.Addrs,
		Classification: string(x.Classification), Emergency: x.Emergency, Source: policySource(v), CreatedAt: v.CreatedAt,
	}
	if len(x.Names) > 0 {
		out.DNSName = x.Names[0]
	}
	if len(x.Addrs) > 0 {
		out.Address = x.Addrs[0]
	}
	for _, s := range x.Services {
		out.Services = append(out.Services, s.String())
	}
	if len(x.Services) > 0 {
		out.Proto = x.Services[0].Proto
		for _, p := range x.Services[0].Ports {
			out.Ports = append(out.Ports, p.String())
		}
	}
	out.Ports = nonNil(out.Ports)
	return out
}

func policyGroupOut(g *policyfile.Group, v *store.PolicyVersion) adminapi.Group {
	out := adminapi.Group{Name: g.Name, Members: nonNil(g.Members), Groups: g.Groups, Source: policySource(v), CreatedAt: v.CreatedAt}
	for _, r := range g.IdP {
		out.IdP = append(out.IdP, r.Claim+"="+r.Value)
	}
	return out
}

// fromPolicy answers a read of segments, apps or groups from the active
// policy file when there is one; otherwise it calls directory.
func (a *API) fromPolicy(directory adminHandlerFunc, answer func(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error) adminHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, actor string) error {
		v, pol, err := a.appliedPolicy(r.Context())
		if err != nil {
			return err
		}
		if pol == nil {
			return directory(w, r, actor)
		}
		return answer(w, r, v, pol)
	}
}

func (a *API) policySegments(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	out := []adminapi.Segment{}
	for _, n := range pol.SegmentNames {
		out = append(out, policySegmentOut(pol.Segments[n], v))
	}
	return ok(w, out)
}

func (a *API) policySegment(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	name := r.PathValue("name")
	s, found := pol.Segments[name]
	if !found {
		return notInPolicy("segment", name, v, pol.SegmentNames)
	}
	return ok(w, policySegmentOut(s, v))
}

func (a *API) policyApps(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	out := []adminapi.App{}
	for _, n := range pol.AppNames {
		out = append(out, policyAppOut(pol.Apps[n], v))
	}
	return ok(w, out)
}

func (a *API) policyApp(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	name := r.PathValue("name")
	x, found := pol.Apps[name]
	if !found {
		return notInPolicy("app", name, v, pol.AppNames)
	}
	return ok(w, policyAppOut(x, v))
}

func (a *API) policyGroups(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	out := []adminapi.Group{}
	for _, n := range pol.GroupNames {
		out = append(out, policyGroupOut(pol.Groups[n], v))
	}
	return ok(w, out)
}

func (a *API) policyGroup(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	name := r.PathValue("name")
	g, found := pol.Groups[name]
	if !found {
		return notInPolicy("group", name, v, pol.GroupNames)
	}
	return ok(w, policyGroupOut(g, v))
}

func policyRuleOut(x *policyfile.Rule, v *store.PolicyVersion) adminapi.Rule {
	out := adminapi.Rule{Name: x.Name, Deny: x.Deny, Conditions: policyfile.ConditionSummary(&x.When), Source: policySource(v), CreatedAt: v.CreatedAt}
	for _, f := range x.From {
		out.From = append(out.From, f.String())
		if f.Kind == policyfile.SubjectGroup && out.Group == "" {
			out.Group = f.Name
		}
	}
	for _, t := range x.To {
		out.To = append(out.To, t.String())
		if t.Kind == policyfile.TargetApp && out.App == "" {
			out.App = t.Name
		}
	}
	return out
}

// policyRuleList is every allow and deny rule of the file, in file order.
func policyRuleList(pol *policyfile.Policy) []*policyfile.Rule {
	return append(slices.Clone(pol.Rules), pol.Denies...)
}

func (a *API) policyRules(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	out := []adminapi.Rule{}
	for _, x := range policyRuleList(pol) {
		out = append(out, policyRuleOut(x, v))
	}
	return ok(w, out)
}

func (a *API) policyRule(w http.ResponseWriter, r *http.Request, v *store.PolicyVersion, pol *policyfile.Policy) error {
	name := r.PathValue("name")
	var names []string
	for _, x := range policyRuleList(pol) {
		if x.Name == name {
			return ok(w, policyRuleOut(x, v))
		}
		names = append(names, x.Name)
	}
	return notInPolicy("rule", name, v, names)
}
