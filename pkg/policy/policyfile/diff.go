package policyfile

import (
	"maps"
	"slices"
	"strings"
)

// Change is one line of a policy plan: someone gains, loses, or keeps with
// different ports or conditions, access to an app.
type Change struct {
	Kind string `json:"change"` // "gain", "lose", "change"
	Who  string `json:"who"`
	App  string `json:"app"`
	Old  string `json:"old,omitempty"` // ports and conditions before
	New  string `json:"new,omitempty"` // ports and conditions after
}

// access maps who → app → a readable summary of their effective access:
// each granting rule's ports and conditions, sorted. Grants a deny rule
// overrides count as no access.
func (pol *Policy) accessMap() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, app := range pol.AppNames {
		es, _ := pol.WhoCan(app)
		lines := map[string][]string{}
		for _, e := range es {
			if e.DeniedBy != "" {
				continue
			}
			s := e.Ports
			if e.Conditions != "" {
				s += " when " + e.Conditions
			}
			if e.Waiver != "" {
				s += " (waiver)"
			}
			lines[e.Who] = append(lines[e.Who], s)
		}
		for who, ls := range lines {
			slices.Sort(ls)
			if out[who] == nil {
				out[who] = map[string]string{}
			}
			out[who][app] = strings.Join(slices.Compact(ls), " | ")
		}
	}
	return out
}

// Diff says, as people think of it, what changes from old to new: who gains
// and who loses access to which apps and ports. Sorted by who, then app.
func Diff(old, new *Policy) []Change {
	a, b := old.accessMap(), new.accessMap()
	whos := map[string]bool{}
	for w := range a {
		whos[w] = true
	}
	for w := range b {
		whos[w] = true
	}
	var out []Change
	for _, who := range slices.Sorted(maps.Keys(whos)) {
		apps := map[string]bool{}
		for app := range a[who] {
			apps[app] = true
		}
		for app := range b[who] {
			apps[app] = true
		}
		for _, app := range slices.Sorted(maps.Keys(apps)) {
			o, inOld := a[who][app]
			n, inNew := b[who][app]
			switch {
			case inOld && !inNew:
				out = append(out, Change{Kind: "lose", Who: who, App: app, Old: o})
			case !inOld && inNew:
				out = append(out, Change{Kind: "gain", Who: who, App: app, New: n})
			case o != n:
				out = append(out, Change{Kind: "change", Who: who, App: app, Old: o, New: n})
			}
		}
	}
	return out
}
