package flow

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// conditional compiles r-ehr for alice under conditions when, with alice
// carrying session s.
func conditional(t testing.TB, when *policy.Conditions, s *policy.Session) *policy.Compiled {
	t.Helper()
	r := allRules[0]
	r.When = when
	c, err := policy.Compile([]policy.Rule{r}, []policy.Peer{
		{DeviceID: "dev-alice", User: "alice@hospital.example", Addr: alice, Rules: []policy.RuleID{"r-ehr"}, Session: s},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recheckCuts runs Recheck and checks it cut alice's ehr flow for reason.
func recheckCuts(t *testing.T, h *harness, reason string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.a.Recheck()
	}()
	var toApp []byte
	select {
	case toApp = <-h.ct.Inbound:
	case <-time.After(5 * time.Second):
		t.Fatal("no reset toward the app")
	}
	<-done
	checkRST(t, toApp, aliceP, ehrP, 1011, 5021)
	checkRST(t, h.nextToClient(), ehrP, aliceP, 5021, 1011)
	if ev := h.event(); ev.Action != controlproto.FlowCut || ev.Src != aliceP || ev.Reason != reason || ev.Rule != "r-ehr" {
		t.Errorf("cut event %+v, want a cut for %s", ev, reason)
	}
	if s := h.a.Stats(); s.FlowsCut != 1 || s.FlowsOpen != 0 {
		t.Errorf("stats after recheck: %+v", s)
	}
	h.blocked(tcp(aliceP, ehrP, psh, 1011, 5021, "more"))
	if ev := h.event(); ev.Action != controlproto.FlowDeny || ev.Reason != reason {
		t.Errorf("event for the next packet %+v", ev)
	}
}

// A time window decides new flows at the Authorizer's clock, and Recheck
// cuts an open flow once the window has closed; until then it keeps it.
func TestRecheckCutsFlowWhenWindowCloses(t *testing.T) {
	h := newHarness(t, nil)
	now := h.clock.Now().UTC()
	m := now.Hour()*60 + now.Minute()
	start, end := (m+1440-5)%1440, (m+5)%1440
	if end == 0 {
		end = 1440
	}
	win := policy.TimeWindow{Days: 0x7f, Start: uint16(start), End: uint16(end), Zone: "UTC"}
	h.a.SetPolicy(conditional(t, &policy.Conditions{Windows: []policy.TimeWindow{win}}, nil))

	establish(h, aliceP, ehrP)
	h.a.Recheck() // inside the window: nothing happens
	h.passes(tcp(aliceP, ehrP, psh, 1011, 5021, ""))
	h.noEvent()
	if s := h.a.Stats(); s.FlowsCut != 0 || s.FlowsOpen != 1 {
		t.Fatalf("recheck inside the window: %+v", s)
	}

	h.advance(10 * time.Minute) // past the window's end
	recheckCuts(t, h, "outside-time-window")
}

// MFA age is measured at the Authorizer's clock from the peer's session.
func TestRecheckCutsFlowWhenMFAGrowsOld(t *testing.T) {
	h := newHarness(t, nil)
	sess := &policy.Session{MFAAt: h.clock.Now().Add(-5 * time.Minute).Round(0)}
	h.a.SetPolicy(conditional(t, &policy.Conditions{MFAMaxAge: 10 * time.Minute}, sess))
	establish(h, aliceP, ehrP)
	h.advance(4 * time.Minute)
	h.a.Recheck()
	if s := h.a.Stats(); s.FlowsCut != 0 {
		t.Fatalf("recheck with a fresh MFA cut a flow: %+v", s)
	}
	h.advance(2 * time.Minute) // 11 minutes since MFA
	recheckCuts(t, h, "mfa-too-old")
}

// Recheck leaves flows under unconditional rules alone, however much time
// passes.
func TestRecheckKeepsUnconditionalFlows(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	establish(h, aliceP, ehrP)
	h.advance(time.Hour)
	h.a.Recheck()
	h.passes(tcp(aliceP, ehrP, psh, 1011, 5021, ""))
	if s := h.a.Stats(); s.FlowsCut != 0 {
		t.Fatalf("stats %+v", s)
	}
}
