package netmap

import (
	"fmt"
	"slices"
	"testing"
)

func devices(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("dev-%05d", i)
	}
	return out
}

// Devices spread evenly: with 3 and with 5 gateways, each gateway is the
// first choice of its fair share of 6,000 devices within 10%.
func TestRankGatewaysSpreads(t *testing.T) {
	devs := devices(6000)
	for _, n := range []int{2, 3, 5} {
		var gws []string
		for i := range n {
			gws = append(gws, fmt.Sprintf("gw-%d", i))
		}
		count := map[string]int{}
		for _, d := range devs {
			count[RankGateways(d, gws, nil)[0]]++
		}
		fair := len(devs) / n
		for _, g := range gws {
			if c := count[g]; c < fair*9/10 || c > fair*11/10 {
				t.Errorf("%d gateways: %s is first for %d devices, want %d ± 10%% (%v)", n, g, c, fair, count)
			}
		}
	}
}

// Stability: a gateway joining takes only devices for which it is now
// first (about 1/n of them) and moves nobody else; a gateway leaving
// moves only its own devices, each to its second choice.
func TestRankGatewaysStableWhenGatewaysJoinOrLeave(t *testing.T) {
	devs := devices(3000)
	three := []string{"gw-a", "gw-b", "gw-c"}
	four := append(slices.Clone(three), "gw-d")
	moved := 0
	for _, d := range devs {
		before, after := RankGateways(d, three, nil), RankGateways(d, four, nil)
		if before[0] != after[0] {
			moved++
			if after[0] != "gw-d" {
				t.Fatalf("%s moved from %s to %s when gw-d joined: only moves to gw-d are allowed", d, before[0], after[0])
			}
		}
		// The others keep their relative order.
		if rest := slices.DeleteFunc(slices.Clone(after), func(g string) bool { return g == "gw-d" }); !slices.Equal(rest, before) {
			t.Fatalf("%s: order %v became %v", d, before, after)
		}
	}
	if fair := len(devs) / 4; moved < fair*8/10 || moved > fair*12/10 {
		t.Errorf("gw-d joining moved %d devices, want about %d", moved, fair)
	}
	// gw-b leaves.
	two := []string{"gw-a", "gw-c"}
	for _, d := range devs {
		before, after := RankGateways(d, three, nil), RankGateways(d, two, nil)
		switch {
		case before[0] == "gw-b" && after[0] != before[1]:
			t.Fatalf("%s was on gw-b, went to %s, want its second choice %s", d, after[0], before[1])
		case before[0] != "gw-b" && after[0] != before[0]:
			t.Fatalf("%s moved from %s to %s though gw-b left", d, before[0], after[0])
		}
	}
}

// A gateway known to be down goes last, but stays listed; the others keep
// their order; when it is back, devices return to it.
func TestRankGatewaysDownLast(t *testing.T) {
	gws := []string{"gw-a", "gw-b", "gw-c"}
	down := map[string]bool{"gw-b": true}
	for _, d := range devices(500) {
		up, dn := RankGateways(d, gws, nil), RankGateways(d, gws, downTier(down))
		if dn[2] != "gw-b" || len(dn) != 3 {
			t.Fatalf("%s: %v with gw-b down, want it last", d, dn)
		}
		if !slices.Equal(dn[:2], slices.DeleteFunc(slices.Clone(up), func(g string) bool { return g == "gw-b" })) {
			t.Fatalf("%s: others reordered: %v → %v", d, up, dn)
		}
	}
	if got := RankGateways("d", gws, downTier(map[string]bool{"gw-a": true, "gw-b": true, "gw-c": true})); len(got) != 3 {
		t.Fatalf("all down: %v, want all three listed", got)
	}
	in := []string{"gw-b", "gw-a"}
	RankGateways("d", in, nil)
	if !slices.Equal(in, []string{"gw-b", "gw-a"}) {
		t.Fatal("RankGateways modified its argument")
	}
}

// The order is a pure function of the IDs: every replica (and every
// version: a changed hash would move every device at an upgrade) computes
// the same.
func TestRankGatewaysFixed(t *testing.T) {
	if got := rendezvous("dev-1", "gw-a"); got != 0xbb40332ad2249cd0 {
		t.Fatalf("rendezvous(dev-1, gw-a) = %#x: the hash changed, which moves devices between gateways at an upgrade", got)
	}
	a := RankGateways("dev-00042", []string{"gw-a", "gw-b", "gw-c", "gw-d"}, nil)
	b := RankGateways("dev-00042", []string{"gw-d", "gw-c", "gw-b", "gw-a"}, nil)
	if !slices.Equal(a, b) || !slices.Equal(a, []string{"gw-c", "gw-b", "gw-a", "gw-d"}) {
		t.Fatalf("order %v and %v: want [gw-c gw-b gw-a gw-d] whatever the input order", a, b)
	}
}

func downTier(down map[string]bool) func(string) int {
	return func(id string) int {
		if down[id] {
			return TierDown
		}
		return TierLive
	}
}

// Draining a gateway (issue 13, part 4) moves only the devices that had it
// first, each to its own second choice, so they spread evenly over the
// others; the drained gateway stays listed after the live ones and before
// the down ones; undraining brings exactly its devices back.
func TestRankGatewaysDrain(t *testing.T) {
	devs := devices(6000)
	gws := []string{"gw-a", "gw-b", "gw-c", "gw-d"}
	drainB := func(id string) int {
		switch id {
		case "gw-b":
			return TierDraining
		case "gw-d":
			return TierDown
		}
		return TierLive
	}
	moved := map[string]int{}
	for _, d := range devs {
		before := RankGateways(d, gws, downTier(map[string]bool{"gw-d": true}))
		after := RankGateways(d, gws, drainB)
		if after[2] != "gw-b" || after[3] != "gw-d" {
			t.Fatalf("%s: %v with gw-b draining and gw-d down, want gw-b third and gw-d last", d, after)
		}
		if before[0] != "gw-b" {
			if after[0] != before[0] {
				t.Fatalf("%s moved from %s to %s though it was not on gw-b", d, before[0], after[0])
			}
			continue
		}
		if after[0] != before[1] {
			t.Fatalf("%s left gw-b for %s, want its second choice %s", d, after[0], before[1])
		}
		moved[after[0]]++
	}
	// gw-b had about a third of the devices; they split evenly over gw-a
	// and gw-c (within 15%: about 1,000 each).
	fair := (moved["gw-a"] + moved["gw-c"]) / 2
	if fair < len(devs)/3*8/10/2 {
		t.Fatalf("only %v devices left gw-b, want about %d", moved, len(devs)/3)
	}
	for _, g := range []string{"gw-a", "gw-c"} {
		if c := moved[g]; c < fair*85/100 || c > fair*115/100 {
			t.Errorf("%d of gw-b's devices went to %s, want about %d (%v)", c, g, fair, moved)
		}
	}
}
