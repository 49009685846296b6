package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spoolBytes is the size of the gateway's flow spool segments on disk.
func (w *world) spoolBytes() int64 {
	w.t.Helper()
	dir := filepath.Join(w.dir, "gateway", "flowspool")
	ents, err := os.ReadDir(dir)
	if err != nil {
		w.t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg") {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// nurseGets opens n fresh connections from the nurse to ehr (each one
// flow: the client's transport keeps none alive) and returns how many got
// ehr's answer.
func (w *world) nurseGets(n int) int {
	ok := 0
	for range n {
		if body, err := w.nurse.get(ehrAddr); err == nil && body == "ehr" {
			ok++
		}
	}
	return ok
}

// TestFlowRecordsSurviveControllerOutage: with the controller stopped, the
// nurse opens flows through the gateway, which is then killed (SIGKILL)
// and restarted from its saved map, and more flows are opened. When the
// controller is back, every flow that passed has its flow.allow record,
// exactly once, and its flow.end (closed, with its counters): the
// gateway's spool kept them across the outage and its own crash.
func TestFlowRecordsSurviveControllerOutage(t *testing.T) {
	// Not parallel: it runs alone before the parallel tests, so its
	// processes (several gateways, kills, restarts) neither slow the
	// others' 1 s timing bounds nor are slowed by them.
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitEndpointSaved()

	w.controller.stop()
	down := time.Now()
	before := w.spoolBytes()
	passed := w.nurseGets(8)
	if passed == 0 {
		t.Fatal("no flow passed while the controller was down (fail static broken?)")
	}
	// Each passed flow's allow record is fsynced within a group commit:
	// wait for the spool to hold them (each record is over 200 bytes) and
	// to stop growing (200 bytes a record is a floor, so the last record
	// or two could still be in flight when it is reached), then kill the
	// gateway.
	last := int64(-1)
	if _, err := poll(10*time.Second, 300*time.Millisecond, func() error {
		got := w.spoolBytes()
		grew := got != last
		last = got
		if got < before+int64(passed)*200 || grew {
			return fmt.Errorf("spool grew %d bytes, still growing: %v", got-before, grew)
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for the gateway to spool the flows: %v", err)
	}
	w.killGateway()
	killed := time.Now()
	start := killed
	w.gateway = w.runGateway("gateway-restarted")
	w.reachWithin(w.nurse, ehr, start, 40*time.Second)
	passed++ // reachWithin's own successful GET
	passed += w.nurseGets(8)
	up := time.Now()

	dir := filepath.Join(w.dir, "gateway", "flowspool")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool dir %s: %v %v, want mode 0700", dir, fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("spool file %s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}

	w.startController("controller-2")
	inWindow := func(e auditEvent) bool {
		return e.Details["dst"] == ehrAddr && !e.Time.Before(down.Add(-time.Second)) && !e.Time.After(up.Add(time.Second))
	}
	// Flows the first gateway process held when it was killed have no end
	// record (the table died with it); the later ones end "closed".
	var allows, ends map[string]int
	afterKill, beforeKill := map[string]bool{}, map[string]bool{}
	var all []auditEvent
	_, err := poll(60*time.Second, 500*time.Millisecond, func() error {
		allows, ends = map[string]int{}, map[string]int{}
		all = w.audit("--type", "flow.", "--limit", "1000")
		for _, e := range all {
			switch {
			case e.Type == "flow.allow" && inWindow(e):
				allows[e.Details["src"]]++
				if e.Time.After(killed) {
					afterKill[e.Details["src"]] = true
				} else {
					beforeKill[e.Details["src"]] = true
				}
			case e.Type == "flow.end":
				if e.Details["end_reason"] != "closed" || e.Details["packets_to_app"] == "0" || e.Details["bytes_to_client"] == "0" {
					return fmt.Errorf("flow.end %v: want a closed flow with its counters", e)
				}
				ends[e.Details["src"]]++
			}
		}
		if len(allows) < passed {
			return fmt.Errorf("%d flows passed during the outage, %d have their flow.allow", passed, len(allows))
		}
		for src := range afterKill {
			// A connection the first process admitted that the second
			// picked up mid-stream (a retransmitted FIN) may only idle
			// out there: its end is not awaited.
			if ends[src] == 0 && !beforeKill[src] {
				return fmt.Errorf("flow from %s has no flow.end yet", src)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nallows %v\nends %v\ngateway log:\n%s", err, allows, ends, tail(w.gateway.logs(), 30))
	}
	// Exactly once: the gateway numbers every record of its spool, and
	// no number is in the trail twice. (A connection the first process
	// admitted may show up again after the kill, as a new flow: the new
	// process picks up its retransmitted FIN mid-stream. So the per-flow
	// check is per process.)
	seqs := map[string]auditEvent{}
	for _, e := range all {
		seq := e.Details["seq"]
		if seq == "" {
			t.Errorf("flow record without a sequence number: %v", e)
			continue
		}
		if prev, dup := seqs[seq]; dup {
			t.Errorf("sequence number %s recorded twice:\n  %v\n  %v", seq, prev, e)
		}
		seqs[seq] = e
	}
	preKill, postKill := map[string]int{}, map[string]int{}
	for _, e := range all {
		if e.Type == "flow.allow" && inWindow(e) {
			if e.Time.After(killed) {
				postKill[e.Details["src"]]++
			} else {
				preKill[e.Details["src"]]++
			}
		}
	}
	for src := range allows {
		if preKill[src] > 1 || postKill[src] > 1 || ends[src] > 1 || (afterKill[src] && preKill[src] == 0 && ends[src] != 1) {
			t.Errorf("flow from %s: %d flow.allow before the kill, %d after, %d flow.end; want at most one each", src, preKill[src], postKill[src], ends[src])
		}
	}
	t.Logf("%d flows passed while the controller was down (the gateway SIGKILLed and restarted in between): each has its flow.allow once, and those after the restart their flow.end", passed)
}
