package policyfile

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

// TestResult is the outcome of one of the policy's tests.
type TestResult struct {
	Test   *Test
	Got    Result
	Passed bool
	Msg    string // on failure: what happened instead
}

// RunTests runs the policy's tests through the compiled form the gateway
// enforces and checks the reference evaluator agrees. Each test is a
// device of its own; the destination is the app's first address.
func (pol *Policy) RunTests(file string) ([]TestResult, error) {
	if len(pol.Tests) == 0 {
		return nil, nil
	}
	devices := make([]Device, len(pol.Tests))
	for i, t := range pol.Tests {
		devices[i] = Device{ID: fmt.Sprintf("test-%04d", i), User: t.User, Addr: testAddr(i), Tags: t.Device.Tags, IdP: t.IdP}
	}
	compiled, err := pol.Compile("", devices)
	if err != nil {
		return nil, err
	}
	out := make([]TestResult, len(pol.Tests))
	for i, t := range pol.Tests {
		a := pol.Apps[t.App]
		dst := a.Addrs[0].Addr()
		port := uint16(0)
		if len(t.Service.Ports) == 1 {
			port = t.Service.Ports[0].First
		}
		at := t.At
		if at.IsZero() {
			at = time.Now()
		}
		sess := pol.testSession(t, at)
		d := compiled.DecideSession(devices[i].Addr, dst, t.Service.Proto, port, &sess, at)
		ref := pol.Evaluate(Request{User: t.User, IdP: t.IdP, Tags: t.Device.Tags, Session: sess, At: at,
			Dst: dst, Proto: t.Service.Proto, Port: port})
		res := TestResult{Test: t, Got: ref}
		var gotID policy.RuleID
		if d.Rule != nil {
			gotID = d.Rule.ID
		}
		if d.Verdict != ref.Verdict || d.Reason != ref.Reason || gotID != ref.WireID {
			return nil, fmt.Errorf("%s:%d:%d: test %q: internal error: compiled policy says %v/%v (%s), reference says %v/%v (%s); please report this",
				file, t.Pos.Line, t.Pos.Col, t.Name, d.Verdict, d.Reason, gotID, ref.Verdict, ref.Reason, ref.WireID)
		}
		res.Passed = ref.Verdict == t.Expect && (t.Reason == "" || t.Reason == ref.Reason.String())
		if !res.Passed {
			res.Msg = fmt.Sprintf("%s:%d:%d: test %q: expected %v", file, t.Pos.Line, t.Pos.Col, t.Name, t.Expect)
			if t.Reason != "" {
				res.Msg += " (" + t.Reason + ")"
			}
			res.Msg += ", got " + explainResult(ref)
		}
		out[i] = res
	}
	return out, nil
}

func (pol *Policy) testSession(t *Test, at time.Time) policy.Session {
	s := policy.Session{
		Posture: slices.Sorted(slices.Values(t.Device.Posture)),
		Groups:  pol.GroupsOf(t.User, t.IdP),
		Tags:    t.Device.Tags,
	}
	if t.Device.MFAAge >= 0 {
		s.MFAAt = at.Add(-t.Device.MFAAge)
	}
	if t.Device.Source.IsValid() {
		s.PublicAddr = t.Device.Source
	}
	return s
}

func testAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
}

// explainResult says in words what decided.
func explainResult(r Result) string {
	switch {
	case r.Verdict == policy.Allow:
		return fmt.Sprintf("ALLOW by rule %q (app %s)", r.Rule.Name, r.App)
	case r.Reason == policy.ReasonDenyRule:
		return fmt.Sprintf("DENY by deny rule %q (app %s)", r.Rule.Name, r.App)
	case r.Rule != nil:
		return fmt.Sprintf("DENY: rule %q (app %s) matches but a condition failed (%s)", r.Rule.Name, r.App, r.Reason)
	}
	return "DENY: no rule grants it (default deny)"
}

// Explain says in words why a result came out as it did.
func Explain(r Result) string { return explainResult(r) }

// ValidationError is returned by [Validate] when the policy parses but its
// tests fail.
type ValidationError struct {
	Failed []TestResult
}

func (e *ValidationError) Error() string {
	s := fmt.Sprintf("%d policy test(s) failed; the policy is refused:", len(e.Failed))
	for _, f := range e.Failed {
		s += "\n" + f.Msg
	}
	return s
}

// Validate parses src and runs its tests. It returns the policy only when
// it parses, checks and passes every test.
func Validate(file string, src []byte) (*Policy, []TestResult, error) {
	pol, err := Parse(file, src)
	if err != nil {
		return nil, nil, err
	}
	res, err := pol.RunTests(file)
	if err != nil {
		return nil, nil, err
	}
	var failed []TestResult
	for _, r := range res {
		if !r.Passed {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		return nil, res, &ValidationError{Failed: failed}
	}
	return pol, res, nil
}
