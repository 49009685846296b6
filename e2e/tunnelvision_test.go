package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestTunnelVisionNoLeak: the local network pushes a more specific route
// for an entitled app's address (DHCP option 121, TunnelVision,
// CVE-2024-3661) through a rogue router on the client's link. The app's
// traffic stays in the tunnel; and once the client is killed (its TUN
// device gone), traffic to the app is blocked, not sent to the rogue
// router in clear. The rogue router counts every packet for the app's
// address it receives.
//
//	cl1 ──eth0── wan (br0: rogue router 192.0.2.254, counts daddr ehr)
//	 └── tunnel ──> gw ──> ehr
func TestTunnelVisionNoLeak(t *testing.T) {
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	ehrIP := ehr.addr[:len(ehr.addr)-len(":80")]
	w.waitReach(w.nurse, ehr, 15*time.Second)

	// The rogue router on the client's link, and its counter.
	ip(t, w.wan, "addr", "add", "192.0.2.254/24", "dev", "br0")
	nftFile := filepath.Join(w.dir, "rogue-router.nft")
	rules := "table inet rogue {\n" +
		"  counter to_app {}\n  counter to_probe {}\n" +
		"  chain pre { type filter hook prerouting priority -300; policy accept;\n" +
		"    ip daddr " + ehrIP + " counter name to_app\n" +
		"    ip daddr 10.99.0.1 counter name to_probe\n" +
		"  }\n}\n"
	if err := os.WriteFile(nftFile, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ip", "netns", "exec", w.wan.name, "nft", "-f", nftFile)
	count := func(name string) int {
		s := mustRun(t, "ip", "netns", "exec", w.wan.name, "nft", "list", "counter", "inet", "rogue", name)
		m := counterPackets.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("nft counter %s: %s", name, s)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	leaked := func() int { return count("to_app") }
	// Option 121: the app's address, as specific as anything the client
	// routes, via the rogue router (replacing whatever the main table
	// had for it: the local network owns the main table).
	ip(t, w.cl1, "route", "replace", ehrIP+"/32", "via", "192.0.2.254", "dev", "eth0")
	// Proof the rogue router sees what is sent its way: a probe to an
	// address routed the same way, outside the tunnel.
	ip(t, w.cl1, "route", "add", "10.99.0.1/32", "via", "192.0.2.254", "dev", "eth0")
	if c, err := w.nurse.ns.dialTimeout("tcp", "10.99.0.1:80", 300*time.Millisecond); err == nil {
		c.Close()
	}
	if n := count("to_probe"); n == 0 {
		t.Fatal("the rogue router counted no packet of a probe routed to it: the leak check would see nothing")
	}

	for i := range 5 {
		if body, err := w.nurse.get(ehr.addr); err != nil || body != ehr.name {
			t.Fatalf("request %d to ehr with the rogue route in place: %q, %v", i, body, err)
		}
	}
	if n := leaked(); n != 0 {
		t.Fatalf("LEAK: the rogue router received %d packets for %s while the tunnel was up", n, ehrIP)
	}

	// The client dies: its TUN device and the routes through it go.
	w.nurse.proc.cmd.Process.Kill()
	waitFor(t, 10*time.Second, "the nurse's client to exit", func() error {
		if w.nurse.proc.exited() == "" {
			return errors.New("still running")
		}
		return nil
	})
	w.nurse.proc = nil // killed on purpose; checkAlive must not count it
	start := time.Now()
	for range 3 {
		if c, err := w.nurse.ns.dialTimeout("tcp", ehr.addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("LEAK: connected to ehr %s with the client dead", ehr.addr)
		} else {
			t.Logf("with the client killed, a dial to ehr failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
	if n := leaked(); n != 0 {
		t.Fatalf("LEAK: with the client killed the rogue router received %d packets for %s in clear", n, ehrIP)
	}
}
