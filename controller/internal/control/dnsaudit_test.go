package control

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

func TestFlowAuditRecordsDNSDenials(t *testing.T) {
	e := FlowAudit("gw-1", controlproto.FlowEvent{
		Time: time.Unix(1, 0), Action: controlproto.FlowDNSDeny, DeviceID: "dev-n", User: "nurse",
		App: "billing", Reason: "not-entitled", Proto: policy.ProtoUDP, Name: "billing.hosp.internal",
		Src: netip.MustParseAddrPort("100.64.0.11:40000"), Dst: netip.MustParseAddrPort("100.64.0.1:53"),
	})
	if e.Type != "dns.deny" || e.Subject != "billing.hosp.internal" || e.Outcome != "deny" ||
		e.Details["name"] != "billing.hosp.internal" || e.Details["user"] != "nurse" || e.Details["device"] != "dev-n" ||
		e.Details["reason"] != "not-entitled" || e.Actor != "gateway:gw-1" {
		t.Errorf("audit event = %+v", e)
	}
	if e := FlowAudit("gw-1", controlproto.FlowEvent{Action: controlproto.FlowDeny, App: "billing"}); e.Type != "flow.deny" || e.Details["name"] != "" {
		t.Errorf("flow deny = %+v", e)
	}
}
