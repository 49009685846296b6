package control

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

func TestFlowAuditRecordsDNSDenials(t *testing.T) {
	e, ok := FlowAudit("gw-1", controlproto.FlowEvent{
		Time: time.Unix(1, 0), Action: controlproto.FlowDNSDeny, DeviceID: "dev-n", User: "nurse",
		App: "billing", Reason: "not-entitled", Proto: policy.ProtoUDP, Name: "billing.hosp.internal",
		Src: netip.MustParseAddrPort("100.64.0.11:40000"), Dst: netip.MustParseAddrPort("100.64.0.1:53"),
	})
	if !ok || e.Type != "dns.deny" || e.Subject != "billing.hosp.internal" || e.Outcome != "deny" ||
		e.Details["name"] != "billing.hosp.internal" || e.Details["user"] != "nurse" || e.Details["device"] != "dev-n" ||
		e.Details["reason"] != "not-entitled" || e.Actor != "gateway:gw-1" {
		t.Errorf("audit event = %+v, %v", e, ok)
	}
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
}

// The type and outcome of every flow action keep their stored spelling
// (SIEM rules match on them), and every one validates.
func TestFlowAuditTypes(t *testing.T) {
	for _, tc := range []struct {
		action       controlproto.FlowAction
		typ, outcome string
	}{
		{controlproto.FlowAllow, "flow.allow", "allow"},
		{controlproto.FlowDeny, "flow.deny", "deny"},
		{controlproto.FlowCut, "flow.cut", "cut"},
		{controlproto.FlowDNSDeny, "dns.deny", "deny"},
	} {
		e, ok := FlowAudit("gw-1", controlproto.FlowEvent{Action: tc.action, App: "billing"})
		if !ok || string(e.Type) != tc.typ || e.Outcome != tc.outcome {
			t.Errorf("%s: type %q outcome %q ok %v, want %q %q", tc.action, e.Type, e.Outcome, ok, tc.typ, tc.outcome)
		}
		if err := e.Validate(); err != nil {
			t.Errorf("%s: %v", tc.action, err)
		}
		if tc.action != controlproto.FlowDNSDeny && e.Details["name"] != "" {
			t.Errorf("%s: name %q without a name in the event", tc.action, e.Details["name"])
		}
	}
	if e, ok := FlowAudit("gw-1", controlproto.FlowEvent{Action: "teleport"}); ok {
		t.Errorf("unknown action recorded as %+v", e)
	}
}
