package store

import (
	"cmp"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/posture"
)

// Partial snapshots. Most changes name a few users, groups or devices (a
// member added, a sign-in, a session ended, a posture report); reading the
// whole store for each cost the map engine a read of every device,
// session and user at 10,000 devices. Such a change is applied to the
// snapshot the maps were last computed from instead: SnapshotPart reads
// what it can have changed and Patch puts that in place.
//
// What a change can have changed is read wider than what it names (Cover),
// so that a mutation which touches more than it names (deleting a user
// drops their memberships and sessions) is still caught: the devices of
// named users and the groups they are or were in count as named.

// MaxPartNames is the most names a change may carry and still be read in
// part; a larger one reads the whole snapshot, which is then cheaper.
const MaxPartNames = 256

// Partial reports whether c can be applied with SnapshotPart and Patch:
// it names entities, and not too many. The policy and All take a whole
// snapshot.
func (c Change) Partial() bool {
	return !c.All && !c.Policy &&
		len(c.Users)+len(c.Groups)+len(c.Devices)+len(c.Apps)+len(c.Segments)+len(c.Gateways) <= MaxPartNames
}

// FewEntities reports whether c names only users, groups and devices: the
// map engine then reuses everything else of its index (NewIndexFrom).
func (c Change) FewEntities() bool {
	return c.Partial() && len(c.Apps) == 0 && len(c.Segments) == 0 && len(c.Gateways) == 0
}

// Cover returns c widened by what s relates to it, for SnapshotPart to
// read: the devices of named users and the groups they are in (in s; the
// store adds the groups they are in now). Pass its result to both
// SnapshotPart and Patch.
func (s *Snapshot) Cover(c Change) Change {
	users := set(c.Users)
	out := Change{Users: c.Users, Groups: slices.Clone(c.Groups), Devices: slices.Clone(c.Devices),
		Apps: c.Apps, Segments: c.Segments, Gateways: c.Gateways}
	for _, d := range s.Devices {
		if users[d.User] {
			out.Devices = append(out.Devices, d.ID)
		}
	}
	for _, g := range s.Groups {
		if slices.ContainsFunc(g.Members, func(m string) bool { return users[m] }) {
			out.Groups = append(out.Groups, g.Name)
		}
	}
	for _, l := range []*[]string{&out.Groups, &out.Devices} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return out
}

// Patch returns s with what change c can have changed replaced by part
// (the result of SnapshotPart(s.Cover(c))): the apps, segments and
// gateways c names, the users, groups and devices of s.Cover(c) and those
// part has, with the devices' newest sessions
// (and those of the users) and posture, the users' identities, and the
// rules. An entity covered that part lacks was deleted. s is not
// modified; the lists Patch does not change are shared.
func (s *Snapshot) Patch(part *Snapshot, c Change) *Snapshot {
	c = s.Cover(c)
	users, groups, devices := set(c.Users), set(c.Groups), set(c.Devices)
	for _, d := range part.Devices {
		devices[d.ID] = true
	}
	for _, g := range part.Groups {
		groups[g.Name] = true
	}

	out := *s
	out.Rules = part.Rules
	out.Apps = patchList(s.Apps, set(c.Apps), part.Apps, func(a App) string { return a.Name })
	out.Segments = patchList(s.Segments, set(c.Segments), part.Segments, func(x Segment) string { return x.Name })
	out.Gateways = patchList(s.Gateways, set(c.Gateways), part.Gateways, func(g Gateway) string { return g.ID })
	out.Users = patchList(s.Users, users, part.Users, func(u User) string { return u.Name })
	out.Groups = patchList(s.Groups, groups, part.Groups, func(g Group) string { return g.Name })
	out.Devices = patchList(s.Devices, devices, part.Devices, func(d Device) string { return d.ID })
	if len(devices) > 0 || len(users) > 0 {
		out.Sessions = patchListBy(s.Sessions, func(x Session) bool { return devices[x.DeviceID] || users[x.User] }, part.Sessions,
			func(a, b Session) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	}
	if len(users) > 0 {
		out.Identities = patchListBy(s.Identities, func(id Identity) bool { return users[id.User] }, part.Identities,
			func(a, b Identity) int { return cmp.Or(cmp.Compare(a.IdP, b.IdP), cmp.Compare(a.Subject, b.Subject)) })
	}
	if len(devices) > 0 {
		out.Posture = maps.Clone(s.Posture)
		if out.Posture == nil {
			out.Posture = map[string]PostureRecord{}
		}
		for id := range devices {
			delete(out.Posture, id)
		}
		maps.Copy(out.Posture, part.Posture)
	}
	return &out
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// patchList is list (sorted by key) without the elements whose key is in
// drop, plus fresh, sorted by key; list itself when drop is empty.
func patchList[T any](list []T, drop map[string]bool, fresh []T, key func(T) string) []T {
	if len(drop) == 0 && len(fresh) == 0 {
		return list
	}
	return patchListBy(list, func(x T) bool { return drop[key(x)] }, fresh, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}

func patchListBy[T any](list []T, drop func(T) bool, fresh []T, order func(a, b T) int) []T {
	// list comes sorted from the store and fresh is small: merge them
	// (sorting 10,000 elements per change cost more than the rest).
	if !slices.IsSortedFunc(fresh, order) {
		fresh = slices.SortedFunc(slices.Values(fresh), order)
	}
	out := make([]T, 0, len(list)+len(fresh))
	for _, x := range list {
		if drop(x) {
			continue
		}
		for len(fresh) > 0 && order(fresh[0], x) < 0 {
			out, fresh = append(out, fresh[0]), fresh[1:]
		}
		out = append(out, x)
	}
	out = append(out, fresh...)
	if !slices.IsSortedFunc(out, order) { // list was not sorted after all
		slices.SortFunc(out, order)
	}
	return out
}

// Diff returns the change that names every entity whose record differs
// between a and b (sessions and posture by device, identities by user,
// rules by group and app); Policy when the active policy differs. Fields
// that are written without publishing a change are not compared: a
// session's last activity (the session manager holds the newer one), a
// posture report's receive and audit times and collection time (the
// control server holds the newer receive time; the digest covers the
// rest), an identity's last refresh and e-mail (no map reads them).
// Applied to a, it brings the maps computed from a to b's. The map engine uses it
// to find state that drifted from the store (a mutation that was not
// published).
func Diff(a, b *Snapshot) Change {
	var c Change
	diffList(a.Segments, b.Segments, func(x Segment) string { return x.Name }, &c.Segments)
	diffList(a.Apps, b.Apps, func(x App) string { return x.Name }, &c.Apps)
	diffList(a.Users, b.Users, func(x User) string { return x.Name }, &c.Users)
	diffList(a.Groups, b.Groups, func(x Group) string { return x.Name }, &c.Groups)
	diffList(a.Gateways, b.Gateways, func(x Gateway) string { return x.ID }, &c.Gateways)
	diffList(a.Devices, b.Devices, func(x Device) string { return x.ID }, &c.Devices)
	diffList(bookkept(a.Sessions, sessionBookkeeping), bookkept(b.Sessions, sessionBookkeeping), func(x Session) string { return x.DeviceID }, &c.Devices)
	diffList(bookkept(a.Identities, identityBookkeeping), bookkept(b.Identities, identityBookkeeping),
		func(x Identity) string { return x.User + "\x00" + x.IdP + "\x00" + x.Subject }, &c.Users)
	var rules []string
	diffList(a.Rules, b.Rules, func(x Rule) string { return x.Name }, &rules)
	for _, s := range []*Snapshot{a, b} {
		for _, r := range s.Rules {
			if slices.Contains(rules, r.Name) {
				c.Groups = append(c.Groups, r.Group)
				c.Apps = append(c.Apps, r.App)
			}
		}
	}
	for id, p := range a.Posture {
		if q, ok := b.Posture[id]; !ok || !reflect.DeepEqual(postureBookkeeping(p), postureBookkeeping(q)) {
			c.Devices = append(c.Devices, id)
		}
	}
	for id := range b.Posture {
		if _, ok := a.Posture[id]; !ok {
			c.Devices = append(c.Devices, id)
		}
	}
	if (a.Policy == nil) != (b.Policy == nil) || a.Policy != nil && (a.Policy.Version != b.Policy.Version || a.Policy.SHA256 != b.Policy.SHA256) {
		c.Policy = true
	}
	for _, l := range []*[]string{&c.Users, &c.Groups, &c.Devices, &c.Apps, &c.Segments, &c.Gateways} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	// An identity's key carries its user first.
	for i, u := range c.Users {
		c.Users[i], _, _ = strings.Cut(u, "\x00")
	}
	c.Users = slices.Compact(c.Users)
	return c
}

// diffList appends to out the keys of elements only in a, only in b, or
// different in the two.
func diffList[T any](a, b []T, key func(T) string, out *[]string) {
	in := make(map[string]T, len(a))
	for _, x := range a {
		in[key(x)] = x
	}
	for _, y := range b {
		k := key(y)
		x, ok := in[k]
		if !ok || !reflect.DeepEqual(x, y) {
			*out = append(*out, k)
		}
		delete(in, k)
	}
	for k := range in {
		*out = append(*out, k)
	}
}

// The bookkeeping fields Diff leaves out, zeroed.
func sessionBookkeeping(x Session) Session { x.LastActivity = time.Time{}; return x }
func identityBookkeeping(x Identity) Identity {
	x.LastRefresh, x.Email = time.Time{}, "" // a refresh stores both without a change
	return x
}
func postureBookkeeping(x PostureRecord) PostureRecord {
	// What maps depend on is the checks a report passes (and its age,
	// which the posture sweep follows): a new report that passes the same
	// checks is stored without a change (control.storePosture), whatever
	// else it says, so its content, digest and times are bookkeeping.
	x.ReceivedAt, x.AuditedAt, x.ChangedAt, x.Digest, x.Report = time.Time{}, time.Time{}, time.Time{}, "", posture.Report{}
	return x
}

func bookkept[T any](list []T, zero func(T) T) []T {
	out := make([]T, len(list))
	for i, x := range list {
		out[i] = zero(x)
	}
	return out
}
