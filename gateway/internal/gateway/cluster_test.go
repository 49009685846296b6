package gateway

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Activity a peer saw counts in this gateway's report when it is newer
// than what this gateway saw itself, and is reported once.
func TestRemoteActivityMerge(t *testing.T) {
	now := time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC)
	r := remoteActivity{now: func() time.Time { return now }}
	r.add("gw-b", []controlproto.DeviceActivity{{DeviceID: "busy-there", Idle: 2 * time.Second}, {DeviceID: "both", Idle: 10 * time.Second}})
	r.add("gw-c", []controlproto.DeviceActivity{{DeviceID: "both", Idle: time.Second}, {DeviceID: "clock-odd", Idle: -time.Hour}})
	now = now.Add(time.Second) // the report is a second later
	own := map[string]time.Duration{"both": 5 * time.Second, "here-only": 3 * time.Second}
	r.merge(own)
	want := map[string]time.Duration{"busy-there": 3 * time.Second, "both": 2 * time.Second, "here-only": 3 * time.Second, "clock-odd": time.Second}
	for id, idle := range want {
		if own[id] != idle {
			t.Errorf("%s: idle %v, want %v", id, own[id], idle)
		}
	}
	if len(own) != len(want) {
		t.Errorf("merged %v, want %v", own, want)
	}
	again := map[string]time.Duration{}
	r.merge(again)
	if len(again) != 0 {
		t.Errorf("peers' activity reported twice: %v", again)
	}
}
