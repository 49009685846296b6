package policybench

import (
	"context"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Rego is the same decision Cordon's compiled policy makes, written the
// way an OPA user would: rules indexed by subject in data, so a request
// scans only the rules of its own user, groups and tags (a fair, indexed
// encoding, not a scan of all 20,000 rules).
const Rego = `package cordon

import rego.v1

default decision := "deny"

decision := "deny-rule" if deny_match

decision := "allow" if {
	not deny_match
	allow_match
}

deny_match if {
	some s in input.subjects
	some r in data.deny[s]
	match(r)
}

allow_match if {
	some s in input.subjects
	some r in data.allow[s]
	match(r)
	conds(r)
}

match(r) if {
	r.proto in {"any", input.proto}
	some cidr in r.dst
	net.cidr_contains(cidr, input.dst)
	port_ok(r)
}

port_ok(r) if not input.proto in {"tcp", "udp"}

port_ok(r) if count(r.ports) == 0

port_ok(r) if {
	some p in r.ports
	p[0] <= input.port
	input.port <= p[1]
}

conds(r) if {
	mfa_ok(r)
	every c in r.posture { input.posture[c] }
	hours_ok(r)
}

mfa_ok(r) if not r.mfa

mfa_ok(r) if {
	r.mfa
	input.mfa_age_s >= 0
	r.mfa_max_age_s == 0
}

mfa_ok(r) if {
	r.mfa
	input.mfa_age_s >= 0
	input.mfa_age_s <= r.mfa_max_age_s
}

hours_ok(r) if count(r.windows) == 0

hours_ok(r) if {
	some w in r.windows
	time.weekday([input.now_ns, w.zone]) in w.days
	c := time.clock([input.now_ns, w.zone])
	m := (c[0] * 60) + c[1]
	w.start <= m
	m < w.end
}
`

var weekdays = []string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}

// RegoData turns the policy's wire rules into OPA data, keyed by subject.
func RegoData(pol *policyfile.Policy) map[string]any {
	allow, deny := map[string][]any{}, map[string][]any{}
	wire := pol.WireRules("")
	byName := map[string][]policy.Rule{}
	for _, w := range wire {
		byName[w.Name] = append(byName[w.Name], w)
	}
	for _, r := range append(append([]*policyfile.Rule{}, pol.Denies...), pol.Rules...) {
		for _, w := range byName[r.Name] {
			dst := []any{}
			for _, p := range w.Dst {
				dst = append(dst, p.String())
			}
			ports := []any{}
			for _, pr := range w.Ports {
				ports = append(ports, []any{int(pr.First), int(pr.Last)})
			}
			m := map[string]any{"id": string(w.ID), "proto": w.Proto.String(), "dst": dst, "ports": ports,
				"mfa": false, "mfa_max_age_s": 0, "posture": []any{}, "windows": []any{}}
			if c := w.When; c != nil {
				m["mfa"] = c.MFA || c.MFAMaxAge > 0
				m["mfa_max_age_s"] = int64(c.MFAMaxAge / time.Second)
				posture := []any{}
				for _, p := range c.Posture {
					posture = append(posture, p)
				}
				m["posture"] = posture
				ws := []any{}
				for _, win := range c.Windows {
					var days []any
					for d := range 7 {
						if win.Days&(1<<d) != 0 {
							days = append(days, weekdays[d])
						}
					}
					ws = append(ws, map[string]any{"days": days, "start": int(win.Start), "end": int(win.End), "zone": win.Zone})
				}
				m["windows"] = ws
			}
			for _, s := range r.From {
				if r.Deny {
					deny[s.String()] = append(deny[s.String()], m)
				} else {
					allow[s.String()] = append(allow[s.String()], m)
				}
			}
		}
	}
	return map[string]any{"allow": allow, "deny": deny}
}

// RegoInput is the OPA input for a request, parsed once to an ast.Value so
// the timed loop measures evaluation only.
func RegoInput(q Request) ast.Value {
	subjects := []any{"user:" + q.Device.User}
	for _, g := range q.Groups {
		subjects = append(subjects, "group:"+g)
	}
	for _, t := range q.Device.Tags {
		subjects = append(subjects, "tag:"+t)
	}
	posture := map[string]any{}
	for _, p := range q.Session.Posture {
		posture[p] = true
	}
	mfaAge := int64(-1)
	if !q.Session.MFAAt.IsZero() {
		mfaAge = int64(q.At.Sub(q.Session.MFAAt) / time.Second)
	}
	v, err := ast.InterfaceToValue(map[string]any{
		"subjects": subjects, "dst": q.Dst.String(), "proto": q.Proto.String(), "port": int(q.Port),
		"posture": posture, "mfa_age_s": mfaAge, "now_ns": q.At.UnixNano(),
	})
	if err != nil {
		panic(err)
	}
	return v
}

// OPA is a prepared OPA query over the policy.
type OPA struct{ q rego.PreparedEvalQuery }

// NewOPA prepares the Rego policy with data.
func NewOPA(ctx context.Context, pol *policyfile.Policy) (*OPA, error) {
	q, err := rego.New(
		rego.Query("data.cordon.decision"),
		rego.Module("cordon.rego", Rego),
		rego.Store(inmem.NewFromObject(RegoData(pol))),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	return &OPA{q}, nil
}

// Decide evaluates one request.
func (o *OPA) Decide(ctx context.Context, in ast.Value) (policy.Verdict, error) {
	rs, err := o.q.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return policy.Deny, err
	}
	if len(rs) != 1 {
		return policy.Deny, fmt.Errorf("opa: %d results", len(rs))
	}
	if rs[0].Expressions[0].Value == "allow" {
		return policy.Allow, nil
	}
	return policy.Deny, nil
}
