package e2e

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// Agents stop cleanly while the controller is up: 'cordon down' ends the
// nurse's tunnel (and when it says so, the tunnel is gone), SIGTERM ends the
// clerk's tunnel and the gateway, each within 5 s with exit status 0 and its
// interface, routes and nftables rules gone. Then the controller stops the
// same way.
func TestShutdown(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)

	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		out, errOut, code := w.nurse.cordon("", "down")
		took := time.Since(start).Round(time.Millisecond)
		if code != 0 {
			t.Errorf("cordon down: exit %d after %v: %s%s", code, took, out, errOut)
			return
		}
		t.Logf("cordon down returned after %v: %s", took, strings.TrimSpace(out))
		// It said the tunnel is down: it must be.
		if w.nurse.proc.exited() == "" {
			t.Errorf("'cordon down' exited 0 (%q) but the nurse's 'cordon up' still runs", strings.TrimSpace(out))
		}
		if out, err := sh("ip", "-n", w.cl1.name, "link", "show", w.nurse.iface); err == nil {
			t.Errorf("'cordon down' exited 0 but interface %s is still there:\n%s", w.nurse.iface, out)
		}
		if body, err := w.nurse.getTimeout(ehrAddr, 500*time.Millisecond); err == nil {
			t.Errorf("'cordon down' exited 0 but the nurse still reaches ehr (%q)", body)
		}
		select {
		case <-w.nurse.proc.done:
			if w.nurse.proc.err != nil {
				t.Errorf("the nurse's 'cordon up' after 'cordon down': %v, want exit status 0", w.nurse.proc.err)
			}
		case <-time.After(stopGrace):
			t.Errorf("the nurse's 'cordon up' still runs %v after 'cordon down' returned", stopGrace)
		}
	})
	for _, p := range []*proc{w.clerk.proc, w.gateway} {
		wg.Go(func() {
			start := time.Now()
			if !p.terminate(stopGrace) {
				t.Errorf("%s still runs %v after SIGTERM, with the controller up", p.name, stopGrace)
				return
			}
			t.Logf("%s exited %v after SIGTERM: %v", p.name, time.Since(start).Round(time.Millisecond), p.err)
			if p.err != nil {
				t.Errorf("%s after SIGTERM: %v, want exit status 0", p.name, p.err)
			}
		})
	}
	wg.Wait()
	// Whatever did not stop is stopped (and dumped) now, so the checks
	// below see the state a stopped agent leaves behind.
	for _, p := range []*proc{w.clerk.proc, w.nurse.proc, w.gateway} {
		p.stop()
	}
	for _, l := range []struct {
		ns    netNS
		iface string
	}{{w.cl1, w.nurse.iface}, {w.cl2, w.clerk.iface}, {w.gw, w.gwIface}} {
		if out, err := sh("ip", "-n", l.ns.name, "link", "show", l.iface); err == nil {
			t.Errorf("interface %s still exists in %s after its agent stopped:\n%s", l.iface, l.ns.name, out)
		}
	}
	if out, _ := sh("ip", "-n", w.cl1.name, "route", "show", "table", "all", "10.20.0.10"); strings.TrimSpace(out) != "" {
		t.Errorf("route to ehr (or its blackhole) still in the nurse's namespace after her tunnel stopped: %s", out)
	}
	if out, _ := sh("ip", "-n", w.cl1.name, "rule", "show", "table", "7380"); strings.TrimSpace(out) != "" {
		t.Errorf("the client's routing rule is still there after it stopped: %s", out)
	}
	if out, err := sh("ip", "netns", "exec", w.gw.name, "nft", "list", "table", "ip", "cordon"); err == nil {
		t.Errorf("the gateway's nftables table is still installed after it stopped:\n%s", out)
	}

	start := time.Now()
	if !w.controller.terminate(stopGrace) {
		t.Errorf("controller still runs %v after SIGTERM", stopGrace)
	} else if w.controller.err != nil {
		t.Errorf("controller after SIGTERM: %v, want exit status 0", w.controller.err)
	} else {
		t.Logf("controller exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	}
}
