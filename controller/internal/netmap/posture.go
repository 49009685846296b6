package netmap

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Device posture in the maps. A device's posture checks are evaluated
// here, at map computation, from its latest stored report under the
// active policy: a new policy (new check definitions) re-evaluates every
// device without a new report, and a new report triggers a recompute
// (controller/internal/control/posture.go). Checks a device passes go into
// the session each gateway evaluates rule conditions against; those it
// fails, for apps it may reach, go to the device as findings to show the
// user.

// Policy returns the parsed policy of v, from the cache when it holds v.
func (c *PolicyCache) Policy(v *store.PolicyVersion) (*policyfile.Policy, error) {
	return c.parse(v)
}

// postureNow is the time posture is evaluated at (report age): the
// session view's clock when set, else the wall clock.
func (ix *Index) postureNow() time.Time {
	if ix.sess != nil && !ix.sess.now.IsZero() {
		return ix.sess.now
	}
	return time.Now()
}

// evaluatePosture evaluates device id's latest report (none: every check
// fails) under the active policy.
func (ix *Index) evaluatePosture(id string) ([]string, []policyfile.PostureFinding) {
	if ix.pol == nil || ix.pol.pol == nil {
		return nil, nil
	}
	var rep *store.PostureRecord
	if r, ok := ix.snap.Posture[id]; ok {
		rep = &r
	}
	return EvaluatePosture(ix.pol.pol, rep, ix.postureNow())
}

// EvaluatePosture evaluates a device's stored report (nil: none received)
// under pol at now: the checks it passes, sorted, and what it fails.
func EvaluatePosture(pol *policyfile.Policy, rec *store.PostureRecord, now time.Time) ([]string, []policyfile.PostureFinding) {
	if rec == nil {
		return pol.EvaluatePosture(nil, time.Time{}, now)
	}
	return pol.EvaluatePosture(&rec.Report, rec.ReceivedAt, now)
}

// posturePassing is the sorted list of posture checks device id passes
// (computed per gateway map peer: the quick form, without fix texts).
func (ix *Index) posturePassing(id string) []string {
	if ix.pol == nil || ix.pol.pol == nil {
		return nil
	}
	r, ok := ix.snap.Posture[id]
	if !ok {
		return ix.pol.pol.PassingPosture(nil, time.Time{}, ix.postureNow())
	}
	return ix.pol.pol.PassingPosture(&r.Report, r.ReceivedAt, ix.postureNow())
}

// postureFindings lists the posture checks device id fails that a rule
// reaching one of its apps requires, each with what to fix and those apps
// (sorted by check; apps sorted). Checks no rule of the device requires
// are left out: they cost the user nothing.
func (ix *Index) postureFindings(id string) []controlproto.PostureFinding {
	if ix.pol == nil || ix.pol.pol == nil {
		return nil
	}
	p := ix.pol
	required := map[string]map[string]bool{} // check → apps
	for _, rid := range p.peers[id] {
		r := p.byID[rid]
		if r == nil || r.Deny || r.When == nil {
			continue
		}
		for _, c := range r.When.Posture {
			if required[c] == nil {
				required[c] = map[string]bool{}
			}
			required[c][r.App] = true
		}
	}
	if len(required) == 0 {
		return nil
	}
	_, failed := ix.evaluatePosture(id)
	var out []controlproto.PostureFinding
	for _, f := range failed {
		if apps := required[f.Check]; apps != nil {
			out = append(out, controlproto.PostureFinding{Check: f.Check, Fix: f.Fix, Apps: slices.Sorted(maps.Keys(apps))})
		}
	}
	slices.SortFunc(out, func(a, b controlproto.PostureFinding) int { return cmp.Compare(a.Check, b.Check) })
	return out
}

// PostureAged lists the devices (sorted) whose posture evaluation changes
// by age alone in (from, to]: a check with max_report_age that their last
// report passed until its age reached the limit. Nothing else tells the
// map engine that a report went stale, so a sweep asks for these.
func (ix *Index) PostureAged(from, to time.Time) []string {
	if ix.pol == nil || ix.pol.pol == nil {
		return nil
	}
	var ages []time.Duration
	for _, c := range ix.pol.pol.PostureChecks {
		if c.MaxReportAge > 0 {
			ages = append(ages, c.MaxReportAge)
		}
	}
	if len(ages) == 0 {
		return nil
	}
	var out []string
	for id, r := range ix.snap.Posture {
		for _, age := range ages {
			if at := r.ReceivedAt.Add(age); at.After(from) && !at.After(to) {
				out = append(out, id)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}
