package cli

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// The gateway list shows the load a gateway reported, and "-" for one that
// reported none (not up, or too old to report it).
func TestPrintGatewaysLoad(t *testing.T) {
	peers, flows := 12, 340
	var b strings.Builder
	if err := printGateways(&b, []adminapi.Gateway{
		{ID: "gw-new", Name: "new", State: "up", Peers: &peers, Flows: &flows},
		{ID: "gw-old", Name: "old", State: "up"},
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows:\n%s", b.String())
	}
	// The table is aligned: a column's cell starts where its header does.
	cell := func(row, name string) string {
		i := strings.Index(lines[0], name)
		if i < 0 || i > len(row) {
			t.Fatalf("no %s column in %q", name, lines[0])
		}
		return strings.Fields(row[i:])[0]
	}
	for i, want := range [][2]string{{"12", "340"}, {"-", "-"}} {
		if p, f := cell(lines[i+1], "PEERS"), cell(lines[i+1], "FLOWS"); p != want[0] || f != want[1] {
			t.Errorf("row %d %q: PEERS %s FLOWS %s, want %s %s", i, lines[i+1], p, f, want[0], want[1])
		}
	}
}
