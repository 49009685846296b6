package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Gateway clusters (issue 13, parts 1 and 2): the three gateways of
// segment clinical gossip on port 7946 of their WAN addresses
// (--cluster-listen), with the keys and the member list the controller
// sends them.
//
// The world of TestGatewayFailover (gw1, gw2, gw3 on the WAN bridge, the
// nurse's device in cl1):
//
//  1. the three form one cluster;
//  2. gw3 is killed (SIGKILL): gw1 and gw2 see it dead within
//     clusterDeadBound, and the controller's gateway list says dead at
//     once after (not after the QUIC idle timeout and the grace period);
//  3. the control channels of the nurse's gateway and of the nurse's
//     device are cut (nftables drops their packets to the controller);
//     the nurse is disabled: her open connection through that gateway is
//     cut and new ones refused within clusterRevokeBound, by the revocation
//     notice the other gateway got from the controller and gossiped.

// clusterDeadBound and clusterRevokeBound are the goals, asserted
// as they are.
const (
	clusterDeadBound   = time.Second
	clusterRevokeBound = time.Second
	clusterPort        = "7946"
)

func TestGatewayCluster(t *testing.T) {
	// Not parallel, like TestGatewayFailover: three gateways and 1 s
	// bounds want the host to themselves.
	w := newWorld(t, withGatewayArgs("--cluster-listen", gwWANAddr+":"+clusterPort))
	ehr := w.svcs["ehr"]
	gws := w.threeGateways(func(wan string) []string { return []string{"--cluster-listen", wan + ":" + clusterPort} })
	ids, names := map[string]string{}, map[string]string{} // name → gateway ID, and back
	for _, g := range w.gatewayStates() {
		ids[g.Name], names[g.ID] = g.ID, g.Name
	}

	// 1. One cluster: each gateway saw the two others join.
	took := waitFor(t, 30*time.Second, "the three gateways to form a cluster", func() error {
		for name, g := range gws {
			for other := range gws {
				if other != name && memberEvent(g.proc.logs(), "joined", ids[other]).IsZero() {
					return fmt.Errorf("%s has not seen %s join", name, other)
				}
			}
		}
		return nil
	})
	t.Logf("cluster formed %v after the gateways were up", took.Round(time.Millisecond))
	w.waitReach(w.nurse, ehr, 30*time.Second)

	// 2. kill -9 gw3: the others see it dead within clusterDeadBound.
	victim := gws["gw3"]
	victim.proc.cmd.Process.Kill()
	<-victim.proc.done
	killed := time.Now()
	for _, name := range []string{gwName, "gw2"} {
		var at time.Time
		waitFor(t, 10*time.Second, name+" to see gw3 dead", func() error {
			if at = memberEvent(gws[name].proc.logs(), "dead", ids["gw3"]); at.IsZero() {
				return fmt.Errorf("%s has not logged gw3 dead", name)
			}
			return nil
		})
		d := at.Sub(killed)
		t.Logf("CLUSTER: %s saw gw3 dead %v after the kill", name, d.Round(time.Millisecond))
		if d > clusterDeadBound {
			t.Errorf("%s saw gw3 dead %v after the kill, want within %v", name, d.Round(time.Millisecond), clusterDeadBound)
		}
	}
	waitFor(t, 10*time.Second, "the controller to list gw3 dead", func() error {
		for _, s := range w.gatewayStates() {
			if s.Name == "gw3" && s.State == "dead" {
				return nil
			}
		}
		return fmt.Errorf("gateway list: %+v", w.gatewayStates())
	})
	t.Logf("CLUSTER: the controller listed gw3 dead %v after the kill (its QUIC connection was still open)", time.Since(killed).Round(time.Millisecond))

	// 3. The nurse's gateway and the nurse's device lose the controller.
	carrierName, err := carrier(w.nurse, names)
	if err != nil {
		t.Fatal(err)
	}
	cut := gws[carrierName]
	if cut == nil || cut.name == "gw3" {
		t.Fatalf("the nurse routes ehr through %q", carrierName)
	}
	t.Logf("the nurse routes ehr through %s: cutting its control channel and the nurse's", carrierName)
	cutControl(t, w, cut.ns)
	cutControl(t, w, w.cl1)
	w.cutAndRestore(ehr, "cordonctl user disable nurse (her gateway and device cut off from the controller)",
		func() { w.mustCtl("", "user", "disable", "nurse") }, nil, clusterRevokeBound)
	// The cut-off gateway enforced the gossiped notice; no map reached it.
	logs := cut.proc.logs()
	cutAt := strings.Index(logs, "device cut by a revocation notice")
	if cutAt < 0 {
		t.Errorf("%s did not log the revocation notice it enforced:\n%s", carrierName, tail(logs, 30))
	} else if strings.Contains(logs[cutAt:], `msg="map applied"`) {
		t.Errorf("%s got a map from the controller after its control channel was cut: the test proves nothing:\n%s", carrierName, tail(logs, 30))
	}
}

// memberEvent is when a gateway's log says cluster member id joined or
// died (zero: it does not).
func memberEvent(log, what, id string) time.Time {
	re := regexp.MustCompile(`time=(\S+) .*msg="cluster member ` + what + `" .*member=` + regexp.QuoteMeta(id) + `\b`)
	m := re.FindStringSubmatch(log)
	if m == nil {
		return time.Time{}
	}
	at, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		return time.Time{}
	}
	return at
}

// cutControl drops every packet between namespace ns and the controller,
// both ways: its control channel is gone, nothing else is.
func cutControl(t *testing.T, w *world, ns netNS) {
	t.Helper()
	rules := fmt.Sprintf(`table inet cut {
	chain out {
		type filter hook output priority -10; policy accept;
		ip daddr %[1]s drop
	}
	chain in {
		type filter hook prerouting priority -300; policy accept;
		ip saddr %[1]s drop
	}
}
`, ctlAddr)
	f := filepath.Join(w.dir, ns.name+"-cut.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ip", "netns", "exec", ns.name, "nft", "-f", f)
}
