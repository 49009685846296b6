package store

import "slices"

// Change says what one committed mutation changed, so the map engine can
// recompute only the maps it affects. Names are the keys the store uses:
// user, group, app and segment names, device and gateway IDs.
//
// A field lists what changed itself, not what depends on it: adding user
// "nurse" to group "icu" is Users ["nurse"], Groups ["icu"]; the engine
// works out that nurse's devices and the gateways of icu's apps are
// affected. A device whose session, posture or step-up state changed is in
// Devices. All is set when the scope is unknown or global (a policy
// applied, a restore): every map is recomputed.
type Change struct {
	Users    []string `json:"users,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Devices  []string `json:"devices,omitempty"`
	Apps     []string `json:"apps,omitempty"`
	Segments []string `json:"segments,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
	// Policy: the active policy version changed (every map may change).
	Policy bool `json:"policy,omitempty"`
	// All: recompute every map.
	All bool `json:"all,omitempty"`
}

// IsZero reports whether c names nothing (a mutation that affects no map,
// such as an admin account change).
func (c Change) IsZero() bool {
	return !c.All && !c.Policy && len(c.Users) == 0 && len(c.Groups) == 0 && len(c.Devices) == 0 &&
		len(c.Apps) == 0 && len(c.Segments) == 0 && len(c.Gateways) == 0
}

// Merge adds o's names to c (sorted, without repeats), for coalescing a
// burst of changes into one recompute.
func (c *Change) Merge(o Change) {
	c.All = c.All || o.All
	c.Policy = c.Policy || o.Policy
	c.Users = mergeNames(c.Users, o.Users)
	c.Groups = mergeNames(c.Groups, o.Groups)
	c.Devices = mergeNames(c.Devices, o.Devices)
	c.Apps = mergeNames(c.Apps, o.Apps)
	c.Segments = mergeNames(c.Segments, o.Segments)
	c.Gateways = mergeNames(c.Gateways, o.Gateways)
}

func mergeNames(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
