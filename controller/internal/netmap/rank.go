package netmap

import (
	"cmp"
	"slices"
)

// Assignment of devices to gateways. Each segment's gateways are ranked
// per device by rendezvous (highest random weight) hashing: every pair of
// device and gateway gets a pseudo-random score, and the device prefers
// the gateway with the highest. Devices spread evenly over a segment's
// gateways; when a gateway joins, only the devices for which it scores
// highest move to it, and when one leaves, only its own devices move (to
// each one's second choice), so a change of the cluster moves the fewest
// devices possible. The hash is fixed (not seeded per process), so every
// controller replica computes the same order.
//
// Gateways known to be down go last, in their own rendezvous order: the
// client may still reach one that the controller cannot. "Down" is
// whatever the index was told (SetGatewayDown): today a control channel
// gone past its grace period; a later gateway cluster reports liveness
// and load into the same place (a loaded gateway could be ranked with a
// weighted score, -w/ln(h), without changing anything else).

// RankGateways returns ids (gateway IDs serving one segment) ordered for
// device: up before down, then by descending rendezvous score. ids is not
// modified.
func RankGateways(device string, ids []string, down map[string]bool) []string {
	out := slices.Clone(ids)
	if len(out) < 2 {
		return out
	}
	score := make(map[string]uint64, len(out))
	for _, id := range out {
		score[id] = rendezvous(device, id)
	}
	slices.SortFunc(out, func(a, b string) int {
		if da, db := down[a], down[b]; da != db {
			if da {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(score[b], score[a]), cmp.Compare(a, b))
	})
	return out
}

// rendezvous is the score of device on gateway: FNV-1a of both, finished
// with a 64-bit mixer (FNV alone spreads similar IDs poorly).
func rendezvous(device, gateway string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(device); i++ {
		h = (h ^ uint64(device[i])) * prime
	}
	h = (h ^ 0) * prime // separator: ("ab","c") and ("a","bc") differ
	for i := 0; i < len(gateway); i++ {
		h = (h ^ uint64(gateway[i])) * prime
	}
	// splitmix64's finalizer.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
