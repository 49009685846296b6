package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// frames collects what the reporter hands the control connection.
type frames struct {
	mu sync.Mutex
	fs []*controlproto.FlowEvents
}

func (f *frames) send(fr *controlproto.Frame) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fs = append(f.fs, fr.FlowEvents)
	return true
}

func (f *frames) take() []*controlproto.FlowEvents {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.fs
	f.fs = nil
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

func startReporter(t *testing.T, dir string, maxBytes int64, policy string) (*flowReporter, *frames, context.CancelFunc) {
	t.Helper()
	r, err := openFlowReporter(dir, maxBytes, policy, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &frames{}
	var wg sync.WaitGroup
	wg.Go(func() { r.writer(ctx) })
	wg.Go(func() { r.sender(ctx, f.send) })
	stop := func() {
		cancel()
		wg.Wait()
		r.close()
	}
	t.Cleanup(stop)
	return r, f, stop
}

func flowEv(port uint16) controlproto.FlowEvent {
	return controlproto.FlowEvent{Time: time.Now(), Action: controlproto.FlowAllow, App: "ehr",
		Src: netip.AddrPortFrom(netip.MustParseAddr("100.64.0.2"), port)}
}

// sentSeqs waits until the frames sent hold n events, and returns their
// sequence numbers.
func sentSeqs(t *testing.T, f *frames, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	waitFor(t, "events sent", func() bool {
		for _, fe := range f.take() {
			for _, e := range fe.Events {
				seqs = append(seqs, e.Seq)
			}
		}
		return len(seqs) >= n
	})
	return seqs
}

// TestReporterResendsUnacknowledged: numbered records go to a
// capability-11 controller; what it did not acknowledge is sent again on
// the next connection, and across a restart of the gateway.
func TestReporterResendsUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	r, f, stop := startReporter(t, dir, 0, "")
	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	for i := range 10 {
		r.events <- flowEv(uint16(i))
	}
	seqs := sentSeqs(t, f, 10)
	if seqs[0] != 1 || seqs[9] != 10 {
		t.Fatalf("sent %v", seqs)
	}
	r.ack(&controlproto.FlowAck{SpoolID: r.sp.ID(), Seq: 6})
	// Reconnect: 7..10 again.
	r.connState(false)
	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	if got := sentSeqs(t, f, 4); got[0] != 7 || len(got) != 4 {
		t.Fatalf("resent %v, want 7..10", got)
	}
	stop()

	// A restart: the spool still holds 7..10, numbering goes on.
	r, f, _ = startReporter(t, dir, 0, "")
	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	if got := sentSeqs(t, f, 4); got[0] != 7 || got[len(got)-1] != 10 {
		t.Fatalf("after restart sent %v, want 7..10", got)
	}
	r.events <- flowEv(0)
	if got := sentSeqs(t, f, 1); got[0] != 11 {
		t.Fatalf("new record after restart numbered %v, want 11", got)
	}
}

// TestReporterOldController: a controller below capability 11 gets
// unnumbered events, sent once.
func TestReporterOldController(t *testing.T) {
	r, f, _ := startReporter(t, t.TempDir(), 0, "")
	r.connState(true)
	r.controllerCaps(10)
	for i := range 3 {
		r.events <- flowEv(uint16(i))
	}
	var got []controlproto.FlowEvent
	waitFor(t, "events sent", func() bool {
		for _, fe := range f.take() {
			if fe.SpoolID != "" || !fe.SentAt.IsZero() {
				t.Fatalf("a frame to an old controller carries capability-11 fields: %+v", fe)
			}
			got = append(got, fe.Events...)
		}
		return len(got) >= 3
	})
	for _, e := range got {
		if e.Seq != 0 {
			t.Fatalf("numbered event to an old controller: %+v", e)
		}
	}
	r.connState(false)
	r.connState(true)
	r.controllerCaps(10)
	ev := flowEv(0)
	ev.App = "after-reconnect"
	r.events <- ev
	var again []controlproto.FlowEvent
	waitFor(t, "the new event sent", func() bool {
		for _, fe := range f.take() {
			again = append(again, fe.Events...)
		}
		return len(again) > 0 && again[len(again)-1].App == "after-reconnect"
	})
	if len(again) != 1 {
		t.Fatalf("after reconnecting sent %d events, want only the new one (old controllers get each once)", len(again))
	}
}

// TestSpoolFullPolicies: while the spool is full, Admit refuses per the
// policy; the controller is told in the next frame.
func TestSpoolFullPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy             string
		phi, public, unset bool // admitted
	}{
		{SpoolFailClosedPHI, false, true, false},
		{SpoolFailClosed, false, false, false},
		{SpoolFailOpen, true, true, true},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			r, f, _ := startReporter(t, t.TempDir(), 4096, tc.policy)
			r.setApps([]controlproto.App{{Name: "ehr", Classification: "phi"}, {Name: "menu", Classification: "public"}})
			if !r.admit("ehr") || !r.admit("nowhere") {
				t.Fatal("refused with room in the spool")
			}
			r.connState(true)
			r.controllerCaps(controlproto.CapabilityVersion) // no acks come: it fills
			for i := 0; !r.sp.Full(); i++ {
				r.events <- flowEv(uint16(i))
				if i > 1000 {
					t.Fatal("never full")
				}
				time.Sleep(time.Millisecond) // let the writer take them in small batches
			}
			if r.admit("ehr") != tc.phi || r.admit("menu") != tc.public || r.admit("nowhere") != tc.unset {
				t.Fatalf("admit ehr/menu/unknown = %v/%v/%v, want %v/%v/%v",
					r.admit("ehr"), r.admit("menu"), r.admit("nowhere"), tc.phi, tc.public, tc.unset)
			}
			waitFor(t, "a frame saying the spool is full", func() bool {
				for _, fe := range f.take() {
					if fe.Spool != nil && fe.Spool.Full && fe.Spool.Policy == tc.policy && fe.Spool.Lost > 0 {
						return true
					}
				}
				return false
			})
		})
	}
	if _, err := openFlowReporter(t.TempDir(), 0, "fail-sideways", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("accepted an unknown --spool-full")
	}
}

// TestReporterKeepsCapabilityAcrossDeltas: a map expanded from a delta
// carries no capability; the connection's stays what its first (whole)
// map said. (Regression: the e2e saw a gateway fall back to unnumbered
// events after its first delta.)
func TestReporterKeepsCapabilityAcrossDeltas(t *testing.T) {
	r, f, _ := startReporter(t, t.TempDir(), 0, "")
	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	r.controllerCaps(0) // a delta
	r.events <- flowEv(1)
	if got := sentSeqs(t, f, 1); got[0] != 1 {
		t.Fatalf("sent %v, want numbered from 1", got)
	}
	r.connState(false)
	r.connState(true)
	r.controllerCaps(0) // a controller older than 7
	if c := r.ctrlCaps.Load(); c != 1 {
		t.Fatalf("capability %d after a map without one on a new connection, want 1 (old controller)", c)
	}
}

// queue is a control client's send queue: frames wait in it until a
// connection takes them, and discard drops them as Client.Discard does.
type queue struct {
	mu sync.Mutex
	fs []*controlproto.Frame
}

func (q *queue) send(fr *controlproto.Frame) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.fs = append(q.fs, fr)
	return true
}

func (q *queue) discard(match func(*controlproto.Frame) bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.fs)
	q.fs = slices.DeleteFunc(q.fs, match)
	return n - len(q.fs)
}

// seqs returns the sequence numbers of the queued flow events, in order.
func (q *queue) seqs() []uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []uint64
	for _, fr := range q.fs {
		for _, e := range fr.FlowEvents.Events {
			out = append(out, e.Seq)
		}
	}
	return out
}

// TestReporterDropsFramesQueuedForALostConnection: frames queued for a
// connection that went down before it sent them do not go first on the
// next one. The next connection starts from the oldest unacknowledged
// record; a stale frame of later records ahead of it would make the
// controller (which skips what it has by sequence number) record and
// acknowledge those, and skip the earlier ones for good.
func TestReporterDropsFramesQueuedForALostConnection(t *testing.T) {
	r, err := openFlowReporter(t.TempDir(), 0, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	q := &queue{}
	r.discard = q.discard
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.writer(ctx) })
	wg.Go(func() { r.sender(ctx, q.send) })
	t.Cleanup(func() { cancel(); wg.Wait(); r.close() })

	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	for i := range 10 {
		r.events <- flowEv(uint16(i))
	}
	waitFor(t, "10 events queued", func() bool { return len(q.seqs()) == 10 })
	r.connState(false) // none of them was sent
	if got := q.seqs(); len(got) != 0 {
		t.Fatalf("after the connection went down, still queued: %v", got)
	}
	r.connState(true)
	r.controllerCaps(controlproto.CapabilityVersion)
	waitFor(t, "10 events queued again", func() bool { return len(q.seqs()) == 10 })
	if got := q.seqs(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("queued for the new connection %v, want 1..10 once, in order", got)
	}
}
