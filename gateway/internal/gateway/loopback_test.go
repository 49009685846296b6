package gateway

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

func TestLoopbackApps(t *testing.T) {
	apps := []controlproto.App{
		{Name: "ehr", Addr: netip.MustParsePrefix("127.0.0.1/32")},
		{Name: "pacs", Addr: netip.MustParsePrefix("10.0.0.5/32")},
		{Name: "lab", Addr: netip.MustParsePrefix("::1/128")},
	}
	if got, want := loopbackApps(apps), []string{"ehr", "lab"}; !slices.Equal(got, want) {
		t.Fatalf("loopbackApps = %v, want %v", got, want)
	}
	if got := loopbackApps(apps[1:2]); got != nil {
		t.Fatalf("loopbackApps(no loopback) = %v", got)
	}
}
