package gateway

import (
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

func TestLivePeers(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	peer := func(id string, expires time.Time) controlproto.GatewayPeer {
		return controlproto.GatewayPeer{Peer: policy.Peer{DeviceID: id}, ExpiresAt: expires}
	}
	peers := []controlproto.GatewayPeer{
		peer("no-limit", time.Time{}),
		peer("ends-soon", t0.Add(10*time.Minute)),
		peer("ended", t0.Add(-time.Second)),
		peer("ends-at-now", t0),
		peer("ends-later", t0.Add(3*time.Hour)),
	}
	ids := func(ps []controlproto.GatewayPeer) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.DeviceID)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		validUntil time.Time
		want       []string
		next       time.Time
	}{
		{"valid for hours", t0.Add(4 * time.Hour), []string{"no-limit", "ends-soon", "ends-later"}, t0.Add(10 * time.Minute)},
		{"valid for a minute", t0.Add(time.Minute), []string{"no-limit", "ends-soon", "ends-later"}, t0.Add(time.Minute)},
		{"expired now", t0, nil, time.Time{}},
		{"expired before", t0.Add(-time.Hour), nil, time.Time{}},
	} {
		live, next := livePeers(peers, t0, tc.validUntil)
		if got := ids(live); !slices.Equal(got, tc.want) {
			t.Errorf("%s: live %v, want %v", tc.name, got, tc.want)
		}
		if !next.Equal(tc.next) {
			t.Errorf("%s: next expiry %v, want %v", tc.name, next, tc.next)
		}
	}
}

func TestGrantLifetimeAndRenewal(t *testing.T) {
	if d := grantLifetime(&controlproto.GatewayMap{}); d != controlproto.DefaultGrantLifetime {
		t.Errorf("a map without a lifetime gets %v, want the default %v", d, controlproto.DefaultGrantLifetime)
	}
	if d := grantLifetime(&controlproto.GatewayMap{GrantLifetime: time.Minute}); d != time.Minute {
		t.Errorf("lifetime %v, want 1m", d)
	}
	for _, tc := range []struct{ lifetime, want time.Duration }{
		{5 * time.Second, time.Second},
		{30 * time.Second, 3 * time.Second},
		{4 * time.Hour, 15 * time.Minute},
	} {
		if got := keepValidEvery(tc.lifetime); got != tc.want {
			t.Errorf("keepValidEvery(%v) = %v, want %v", tc.lifetime, got, tc.want)
		}
		if keepValidEvery(tc.lifetime) >= tc.lifetime {
			t.Errorf("renewal every %v is not within the lifetime %v", keepValidEvery(tc.lifetime), tc.lifetime)
		}
	}
}
