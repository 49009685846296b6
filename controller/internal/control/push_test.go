package control

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// The push latency runs from the first map the agent had not applied to
// its ack of the newest one; an ack of an older map does not end it.
func TestPushLatency(t *testing.T) {
	now := time.Unix(1000, 0)
	a := &agent{now: func() time.Time { return now }, wake: make(chan struct{}, 1)}
	r1 := a.offer(&controlproto.Frame{GatewayMap: &controlproto.GatewayMap{Peers: nil}})
	now = now.Add(2 * time.Second)
	r2 := a.offer(&controlproto.Frame{GatewayMap: &controlproto.GatewayMap{Apps: []controlproto.App{{Name: "ehr"}}}})
	now = now.Add(3 * time.Second)
	if _, ok := a.caughtUp(r1); ok {
		t.Error("the ack of an older map ended the measurement")
	}
	if d, ok := a.caughtUp(r2); !ok || d != 5*time.Second {
		t.Errorf("caughtUp(newest) = %v, %v, want 5s from the first unapplied offer", d, ok)
	}
	if _, ok := a.caughtUp(r2); ok {
		t.Error("a repeated ack measured again")
	}
}
