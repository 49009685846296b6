package reach

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC) // injected clock
	active := &controlproto.SessionInfo{State: controlproto.SessionActive, ExpiresAt: now.Add(time.Hour)}
	ok := Snapshot{Session: active, Entitled: true, ControlUp: true, LastHandshake: now.Add(-time.Minute)}
	with := func(f func(*Snapshot)) Snapshot { s := ok; f(&s); return s }
	tests := []struct {
		name   string
		snap   Snapshot
		want   Reason
		detail string
	}{
		{"ok", ok, ReasonOK, "reachable"},
		{"no session", with(func(s *Snapshot) { s.Session = nil }), ReasonSignedOut, "not signed in"},
		{"session none", with(func(s *Snapshot) { s.Session = &controlproto.SessionInfo{State: controlproto.SessionNone} }), ReasonSignedOut, "not signed in"},
		{"ended by admin", with(func(s *Snapshot) {
			s.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "admin"}
		}), ReasonSessionEnded, "administrator ended"},
		{"ended idle", with(func(s *Snapshot) {
			s.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "idle"}
		}), ReasonSessionEnded, "inactivity"},
		{"quarantined", with(func(s *Snapshot) {
			s.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: controlproto.ReasonQuarantined}
		}), ReasonSessionEnded, "quarantined"},
		{"expired by clock", with(func(s *Snapshot) {
			s.Session = &controlproto.SessionInfo{State: controlproto.SessionActive, ExpiresAt: now}
		}), ReasonSessionEnded, "expired"},
		{"not entitled", with(func(s *Snapshot) { s.Entitled = false }), ReasonNotEntitled, "not an app you are entitled to"},
		{"signed out beats not entitled", with(func(s *Snapshot) { s.Session = nil; s.Entitled = false }), ReasonSignedOut, "not signed in"},
		{"gateway dead", with(func(s *Snapshot) { s.GatewayDead = true }), ReasonGatewayUnreachable, "does not answer"},
		{"handshake old", with(func(s *Snapshot) { s.LastHandshake = now.Add(-StaleHandshake - time.Second) }), ReasonGatewayUnreachable, "gateway"},
		{"handshake at the limit", with(func(s *Snapshot) { s.LastHandshake = now.Add(-StaleHandshake) }), ReasonOK, "reachable"},
		{"control down", with(func(s *Snapshot) { s.ControlUp = false }), ReasonControlDown, "controller"},
		{"gateway dead and control down", with(func(s *Snapshot) { s.ControlUp = false; s.GatewayDead = true }), ReasonGatewayUnreachable, "gateway"},
		{"app silent", with(func(s *Snapshot) { s.AppFailed = true }), ReasonNoAnswer, "app itself"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Classify(tc.snap, now)
			if v.Reason != tc.want {
				t.Fatalf("Classify = %v, want %v", v.Reason, tc.want)
			}
			if !strings.Contains(v.Detail, tc.detail) {
				t.Errorf("Detail = %q, want it to contain %q", v.Detail, tc.detail)
			}
			if tc.snap.Session != nil && tc.snap.Session.Reason == controlproto.ReasonQuarantined && strings.Contains(v.Next, "login") {
				t.Errorf("Next = %q: signing in again does not end a quarantine", v.Next)
			}
			if v.Reason != ReasonOK && v.Next == "" {
				t.Errorf("%v has no next step", v.Reason)
			}
		})
	}
}

func TestReasonZeroIsNotOK(t *testing.T) {
	var r Reason
	if r == ReasonOK || r.String() != "unknown" {
		t.Fatalf("zero Reason = %v, must be unknown", r)
	}
}

// A Verdict travels as JSON from the running tunnel to 'cordon status':
// the reason by name, and a name this build does not know reads as
// unknown, never as ok.
func TestVerdictJSON(t *testing.T) {
	for r := ReasonUnknown; r <= ReasonNoAnswer; r++ {
		b, err := json.Marshal(For(r))
		if err != nil {
			t.Fatal(err)
		}
		var got Verdict
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got != For(r) || !strings.Contains(string(b), `"reason":"`+r.String()+`"`) {
			t.Errorf("%v: %s read back as %+v", r, b, got)
		}
	}
	var v Verdict
	if err := json.Unmarshal([]byte(`{"reason":"from-the-future","detail":"x"}`), &v); err != nil || v.Reason != ReasonUnknown {
		t.Errorf("unknown reason read as %v (err %v), want unknown", v.Reason, err)
	}
}
