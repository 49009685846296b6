package gateway

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// A draining gateway keeps every peer for DrainSettle, then only the peers
// with an open flow, and none from DrainGrace; not draining, all.
func TestDrainPeers(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC)
	var want []wgdev.Peer
	var mapPeers []controlproto.GatewayPeer
	for _, id := range []string{"dev-busy", "dev-gone"} {
		k, err := wgkey.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, wgdev.Peer{PublicKey: k.Public()})
		mapPeers = append(mapPeers, controlproto.GatewayPeer{Peer: policy.Peer{DeviceID: id}, PublicKey: k.Public()})
	}
	open := func() map[string]time.Duration { return map[string]time.Duration{"dev-busy": time.Second} }
	for _, tc := range []struct {
		name       string
		since, now time.Time
		want       int
	}{
		{"not draining", time.Time{}, t0, 2},
		{"settling", t0, t0.Add(controlproto.DrainSettle - time.Millisecond), 2},
		{"settled", t0, t0.Add(controlproto.DrainSettle), 1},
		{"grace over", t0, t0.Add(controlproto.DrainGrace), 0},
	} {
		got := drainPeers(want, mapPeers, tc.since, tc.now, open)
		if len(got) != tc.want {
			t.Errorf("%s: %d peers, want %d", tc.name, len(got), tc.want)
		}
		if tc.want == 1 && got[0].PublicKey != want[0].PublicKey {
			t.Errorf("%s: kept the idle peer, not the busy one", tc.name)
		}
	}
}
