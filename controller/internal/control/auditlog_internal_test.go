package control

import "testing"

// TestCheckpointBeliefAfterRefusals replays the order seen in CI: the
// gateway holds 22, the controller was rolled back to 17 and grows; alerts
// arrive after later checkpoints went out. The controller must end up
// proving from 22 (so the gateway can say "forked"), and must not resend
// forever once it does.
func TestCheckpointBeliefAfterRefusals(t *testing.T) {
	var c agentCheckpoint
	c.held = 22 // hello

	c.noteSent(17, 0, 22) // a shrink: refused by design
	if c.held != 22 {
		t.Fatalf("after sending a smaller checkpoint the belief moved to %d", c.held)
	}
	if c.refused(22, 17) {
		t.Fatal("a shrink refusal asked for a resend (it would loop)")
	}

	// A send proved from 22 while the belief was right: a genuine refusal.
	c.noteSent(23, 22, 22)
	if c.held != 23 {
		t.Fatalf("belief after a send from the held size: %d, want 23", c.held)
	}
	// Before its alert arrives, 24 goes out proved from 23.
	c.noteSent(24, 23, 23)
	if c.refused(22, 23) {
		t.Fatal("the refusal of a proof from the held size asked for a resend")
	}
	if c.held != 22 {
		t.Fatalf("belief after an alert: %d, want 22", c.held)
	}
	// 24's alert: its proof started at 23, not 22: resend the latest.
	if !c.refused(22, 24) {
		t.Fatal("the refusal of a proof from a stale size did not ask for a resend")
	}
	// The resend of 24 goes from 22; its refusal is final.
	c.noteSent(24, 22, 22)
	if c.refused(22, 24) {
		t.Fatal("the resend's refusal asked for another resend")
	}

	// An alert that crosses a send: the send must not overwrite it.
	c.held = 30
	heldAtRead := c.held
	c.held = 22 // the alert, between the writer's read and its note
	c.noteSent(31, 30, heldAtRead)
	if c.held != 22 {
		t.Fatalf("a send overwrote the alert's size: %d", c.held)
	}
}

func TestCheckpointSentIsBounded(t *testing.T) {
	var c agentCheckpoint
	for i := range int64(1000) {
		c.noteSent(i+1, i, i)
	}
	if len(c.sent) > maxSentRemembered {
		t.Fatalf("remembers %d sends", len(c.sent))
	}
	if _, ok := c.sent[1000]; !ok {
		t.Fatal("forgot the newest send")
	}
}
