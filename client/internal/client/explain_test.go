package client

import (
	"net/netip"
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

func TestGatewayFor(t *testing.T) {
	cm := &controlproto.ClientMap{Gateways: []controlproto.ClientGateway{
		{GatewayID: "gw-a", Apps: []controlproto.App{{DNSName: "ehr.example.internal.", DNSAliases: []string{"chart.example.internal"}, Addr: netip.MustParsePrefix("10.1.0.5/32")}}},
		{GatewayID: "gw-b", Apps: []controlproto.App{{DNSName: "pacs.example.internal", Addr: netip.MustParsePrefix("10.2.0.0/24")}}},
	}}
	tests := []struct{ host, want string }{
		{"ehr.example.internal", "gw-a"},
		{"EHR.example.internal.:443", "gw-a"},
		{"chart.example.internal:80", "gw-a"},
		{"10.1.0.5:80", "gw-a"},
		{"10.2.0.77", "gw-b"},
		{"pacs.example.internal", "gw-b"},
		{"secret.example.internal", ""},
		{"10.1.0.6", ""},
		{"[::1]:80", ""},
	}
	for _, tc := range tests {
		got := ""
		if g := gatewayFor(cm, tc.host); g != nil {
			got = g.GatewayID
		}
		if got != tc.want {
			t.Errorf("gatewayFor(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestFailoverDead(t *testing.T) {
	f := newFailover(nil)
	if f.dead("gw") {
		t.Fatal("unknown gateway reported dead")
	}
	f.health["gw"] = &gwHealth{dead: true}
	if !f.dead("gw") {
		t.Fatal("dead gateway not reported dead")
	}
}
