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
// Gateways an admin drains go after the live ones, and gateways known to
// be down last, each group in its own rendezvous order: the client may
// still reach one that the controller cannot, and a drained one is still
// better than none. Draining a gateway moves only its own devices, each to
// its next choice, and undraining it brings exactly those back. "Down" is
// whatever the index was told (SetGatewayDown): today a control channel
// gone past its grace period; a later gateway cluster reports liveness
// and load into the same place (a loaded gateway could be ranked with a
// weighted score, -w/ln(h), without changing anything else).

// Tiers of RankGateways: a gateway of a higher tier goes after every one
// of a lower tier.
const (
	TierLive     = 0
	TierDraining = 1 // an admin drains it (store.Gateway.DrainedAt)
	TierDown     = 2 // the controller knows it to be down
)

// RankGateways returns ids (gateway IDs serving one segment) ordered for
// device: by ascending tier (nil: every gateway TierLive), then by
// descending rendezvous score. ids is not modified.
func RankGateways(device string, ids []string, tier func(id string) int) []string {
	out := slices.Clone(ids)
	if len(out) < 2 {
		return out
	}
	score := make(map[string]uint64, len(out))
	for _, id := range out {
		score[id] = rendezvous(device, id)
	}
	slices.SortFunc(out, func(a, b string) int {
		if tier != nil {
			if c := cmp.Compare(tier(a), tier(b)); c != 0 {
				return c
			}
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
