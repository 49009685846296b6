package controlclient

import (
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Discard drops the queued frames it is asked to and keeps the others,
// in order.
func TestDiscardKeepsOtherFramesInOrder(t *testing.T) {
	c := &Client{out: make(chan *controlproto.Frame, 8)}
	flow := func() *controlproto.Frame { return &controlproto.Frame{Type: controlproto.TypeFlowEvents} }
	a1 := &controlproto.Frame{Type: controlproto.TypeActivity}
	a2 := &controlproto.Frame{Type: controlproto.TypeActivity}
	for _, f := range []*controlproto.Frame{flow(), a1, flow(), a2, flow()} {
		if !c.Send(f) {
			t.Fatal("queue full")
		}
	}
	if n := c.Discard(func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeFlowEvents }); n != 3 {
		t.Errorf("discarded %d frames, want 3", n)
	}
	var got []*controlproto.Frame
	for len(c.out) > 0 {
		got = append(got, <-c.out)
	}
	if len(got) != 2 || got[0] != a1 || got[1] != a2 {
		t.Errorf("left queued %v, want the two activity frames in order", got)
	}
}
