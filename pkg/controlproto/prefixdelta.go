package controlproto

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// MinPrefixDeltaCapability is the lowest client capability whose gateway
// patches carry AllowedIPs as a PrefixDelta instead of the whole list.
const MinPrefixDeltaCapability = 9

// ComparePrefix orders prefixes by address, then length: the order of a
// client gateway's AllowedIPs.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// PrefixDelta is how a client gateway's AllowedIPs changed (capability 9):
// the prefixes added and removed. The list is kept sorted ([ComparePrefix])
// and free of duplicates, as the controller builds it, so a new app for everyone costs each client one prefix
// instead of its whole list (about a kilobyte at 64 apps, which made the
// delta two packets instead of one).
type PrefixDelta struct {
	Add    []netip.Prefix `json:"add,omitempty"`
	Remove []netip.Prefix `json:"remove,omitempty"`
}

// sortedPrefixes reports whether l is strictly increasing.
func sortedPrefixes(l []netip.Prefix) bool {
	for i := 1; i < len(l); i++ {
		if ComparePrefix(l[i-1], l[i]) >= 0 {
			return false
		}
	}
	return true
}

// diffPrefixes returns the delta from old to new, or ok false when either
// is not strictly sorted (the caller then sends the whole list).
func diffPrefixes(old, new []netip.Prefix) (d PrefixDelta, ok bool) {
	if !sortedPrefixes(old) || !sortedPrefixes(new) {
		return d, false
	}
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		var c int
		switch {
		case i == len(old):
			c = 1
		case j == len(new):
			c = -1
		default:
			c = ComparePrefix(old[i], new[j])
		}
		switch {
		case c < 0:
			d.Remove = append(d.Remove, old[i])
			i++
		case c > 0:
			d.Add = append(d.Add, new[j])
			j++
		default:
			i++
			j++
		}
	}
	return d, true
}

// applyPrefixes returns old with d applied. It refuses (ErrBadDelta) a
// delta that removes a prefix old lacks, adds one it has or an invalid
// one, names one twice (a prefix both added and removed
// is one of the first two), or an old list that is not sorted: the agent
// then asks for the whole map.
func applyPrefixes(old []netip.Prefix, d *PrefixDelta) ([]netip.Prefix, error) {
	if !sortedPrefixes(old) {
		return nil, fmt.Errorf("%w: allowed IPs not in order", ErrBadDelta)
	}
	add, rm := slices.Clone(d.Add), slices.Clone(d.Remove)
	slices.SortFunc(add, ComparePrefix)
	slices.SortFunc(rm, ComparePrefix)
	if !sortedPrefixes(add) || !sortedPrefixes(rm) {
		return nil, fmt.Errorf("%w: a prefix named twice", ErrBadDelta)
	}
	for _, p := range add {
		if !p.IsValid() {
			return nil, fmt.Errorf("%w: adds an invalid prefix", ErrBadDelta)
		}
	}
	out := make([]netip.Prefix, 0, max(len(old)+len(add)-len(rm), 0))
	ai, ri := 0, 0
	for _, p := range old {
		for ai < len(add) && ComparePrefix(add[ai], p) < 0 {
			out = append(out, add[ai])
			ai++
		}
		if ai < len(add) && add[ai] == p {
			return nil, fmt.Errorf("%w: adds %s, which is there", ErrBadDelta, p)
		}
		if ri < len(rm) {
			if c := ComparePrefix(rm[ri], p); c < 0 {
				return nil, fmt.Errorf("%w: removes %s, which is not there", ErrBadDelta, rm[ri])
			} else if c == 0 {
				ri++
				continue
			}
		}
		out = append(out, p)
	}
	if ri < len(rm) {
		return nil, fmt.Errorf("%w: removes %s, which is not there", ErrBadDelta, rm[ri])
	}
	out = append(out, add[ai:]...)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
