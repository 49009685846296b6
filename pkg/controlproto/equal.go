package controlproto

import (
	"slices"

	"github.com/cordonhq/cordon/pkg/policy"
)

// Typed equality of map elements, for Diff and for the controller's "did
// this map change?": reflect.DeepEqual costs a visited-set allocation per
// pointer and slice, which is most of the time of diffing 10,000 peers.
//
// Each function compares every field exactly as reflect.DeepEqual would
// (nil and empty slices differ, times compare with ==), so Apply(old,
// Diff(old, new)) stays deep-equal to new. TestEqualCoversEveryField fails
// when a field is added to one of these types: compare it here too.

// sliceEq is slices.Equal that also tells nil from empty.
func sliceEq[T comparable](a, b []T) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

func ptrEq[T any](a, b *T, eq func(a, b *T) bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || eq(a, b)
}

func sessionEq(a, b *policy.Session) bool {
	return a.MFAAt == b.MFAAt && sliceEq(a.Posture, b.Posture) && a.PublicAddr == b.PublicAddr &&
		sliceEq(a.Groups, b.Groups) && sliceEq(a.Tags, b.Tags) && a.ID == b.ID
}

func peerEq(a, b *GatewayPeer) bool {
	return a.DeviceID == b.DeviceID && a.User == b.User && a.Addr == b.Addr && sliceEq(a.Rules, b.Rules) &&
		ptrEq(a.Session, b.Session, sessionEq) && a.PublicKey == b.PublicKey && a.ExpiresAt == b.ExpiresAt &&
		a.SessionID == b.SessionID
}

func conditionsEq(a, b *policy.Conditions) bool {
	return a.MFA == b.MFA && a.MFAMaxAge == b.MFAMaxAge && sliceEq(a.Posture, b.Posture) &&
		sliceEq(a.Windows, b.Windows) && sliceEq(a.SourceNets, b.SourceNets) && a.CEL == b.CEL
}

func ruleEq(a, b *policy.Rule) bool {
	return a.ID == b.ID && a.App == b.App && sliceEq(a.Dst, b.Dst) && a.Proto == b.Proto &&
		sliceEq(a.Ports, b.Ports) && a.Name == b.Name && a.Deny == b.Deny && ptrEq(a.When, b.When, conditionsEq)
}

func appEq(a, b *App) bool {
	return a.Name == b.Name && a.DNSName == b.DNSName && a.Addr == b.Addr && a.Proto == b.Proto &&
		sliceEq(a.Ports, b.Ports) && a.Segment == b.Segment && sliceEq(a.DNSAliases, b.DNSAliases) &&
		a.Classification == b.Classification
}

func appsEq(a, b []App) bool {
	return (a == nil) == (b == nil) && slices.EqualFunc(a, b, func(x, y App) bool { return appEq(&x, &y) })
}

func segmentEq(a, b *Segment) bool { return a.Name == b.Name && sliceEq(a.CIDRs, b.CIDRs) }

func clientGatewayEq(a, b *ClientGateway) bool {
	return a.GatewayID == b.GatewayID && a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint &&
		a.OverlayAddr == b.OverlayAddr && sliceEq(a.AllowedIPs, b.AllowedIPs) && appsEq(a.Apps, b.Apps) &&
		a.Instance == b.Instance && a.Down == b.Down && a.TCPEndpoint == b.TCPEndpoint && a.Draining == b.Draining
}

func clientSegmentEq(a, b *ClientSegment) bool {
	return a.Name == b.Name && sliceEq(a.Gateways, b.Gateways) && sliceEq(a.AllowedIPs, b.AllowedIPs) && appsEq(a.Apps, b.Apps)
}
