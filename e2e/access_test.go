package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The nurse (group clinicians, rule clinicians-ehr) reaches ehr through the
// tunnel, over fresh connections each time, and the app sees the gateway's
// address (masquerade).
func TestNurseReachesEntitledApp(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	d := w.waitReach(w.nurse, ehr, 15*time.Second)
	t.Logf("nurse reached ehr %v after the world came up", d.Round(time.Millisecond))

	for i := range 5 {
		body, err := w.nurse.get(ehrAddr)
		if err != nil || body != "ehr" {
			t.Fatalf("request %d to ehr: body %q, err %v", i, body, err)
		}
	}
	if p := ehr.lastPeer.Load(); p == nil || !strings.HasPrefix(*p, gwAppAddr+":") {
		t.Errorf("ehr saw the request from %v, want the gateway's app-side address %s (masquerade)", deref(p), gwAppAddr)
	}

	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Gateways) != 1 {
		t.Fatalf("nurse status: %d gateways, want 1: %+v", len(st.Gateways), st)
	}
	g := st.Gateways[0]
	if g.Endpoint != gwWANAddr+":51820" {
		t.Errorf("nurse status: gateway endpoint %q, want %s:51820", g.Endpoint, gwWANAddr)
	}
	if want := w.gatewayAllowedIPs(); !slices.Equal(sorted(g.AllowedIPs), want) {
		t.Errorf("nurse status: allowed IPs %v, want only ehr's address and the gateway's overlay address %v", g.AllowedIPs, want)
	}
	var apps []string
	for _, a := range g.Apps {
		apps = append(apps, a.Name)
	}
	if !slices.Equal(apps, []string{"ehr"}) {
		t.Errorf("nurse status: apps %v, want [ehr]", apps)
	}
}

// Least privilege: the nurse reaches ehr:80 and nothing else in the segment,
// not billing, not another port on ehr's host, not another host, and not a
// service of the gateway host itself on its overlay address (which is in
// her AllowedIPs, for DNS).
func TestNurseCannotReachUnentitledApps(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second) // the path works
	gwSSH := w.gatewayHostService(w.gatewayOverlay())
	w.unreachable(w.nurse, w.svcs["billing"], w.svcs["ehr-admin"], w.svcs["lab"], gwSSH)
	// Still works afterwards: the denials did not break the tunnel.
	if body, err := w.nurse.get(ehrAddr); err != nil || body != "ehr" {
		t.Errorf("ehr after the denied attempts: %q, %v", body, err)
	}
}

// A signed-in user with no rules reaches nothing, while the nurse, through
// the same gateway at the same time, does.
func TestClerkWithoutRulesReachesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	st, err := w.clerk.status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.ControlConnected || st.User != "clerk" {
		t.Fatalf("clerk status: %+v", st)
	}
	for _, g := range st.Gateways {
		if len(g.AllowedIPs) > 0 || len(g.Apps) > 0 {
			t.Errorf("clerk has no rules but its map holds gateway %s with allowed IPs %v and apps %v", g.ID, g.AllowedIPs, g.Apps)
		}
	}
	w.unreachable(w.clerk, w.svcs["ehr"], w.svcs["ehr-admin"], w.svcs["billing"], w.svcs["lab"])
}

// The gateway is the enforcement point, not the client's AllowedIPs: a
// tampered client that routes the whole segment into its tunnel still
// reaches only ehr:80, and the gateway records the denials.
func TestGatewayDeniesTamperedClient(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	peers := wgDump(t, w.cl1, w.nurse.iface)
	if len(peers) != 1 {
		t.Fatalf("nurse's wg device has %d peers, want 1 (the gateway): %+v", len(peers), peers)
	}
	gwKey := peers[0].publicKey
	mustRun(t, "ip", "netns", "exec", w.cl1.name, "wg", "set", w.nurse.iface, "peer", gwKey, "allowed-ips", appCIDR)
	ip(t, w.cl1, "route", "add", appCIDR, "dev", w.nurse.iface)

	gwSSH := w.gatewayHostService(gwAppAddr)
	w.unreachable(w.nurse, w.svcs["billing"], w.svcs["lab"], w.svcs["ehr-admin"], gwSSH)
	if body, err := w.nurse.get(ehrAddr); err != nil || body != "ehr" {
		t.Errorf("ehr from the tampered client: %q, %v", body, err)
	}
	for _, dst := range []string{billingAddr, labAddr, ehrAdminAddr} {
		w.waitAudit("flow.deny for nurse → "+dst, func(e auditEvent) bool {
			return e.Type == "flow.deny" && e.Details["dst"] == dst && e.Details["user"] == "nurse"
		})
	}
}

// The gateway's WireGuard device (wg show) holds exactly the entitled
// devices: the nurse's key with her overlay /32, not the clerk's; the
// nurse's device holds exactly the gateway with ehr's address.
func TestGatewayPeersAreEntitledDevices(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)

	var nurseDev, clerkDev *deviceInfo
	devs := w.devices()
	for i := range devs {
		switch devs[i].User {
		case "nurse":
			nurseDev = &devs[i]
		case "clerk":
			clerkDev = &devs[i]
		}
	}
	if nurseDev == nil || clerkDev == nil || nurseDev.PublicKey == "" || clerkDev.PublicKey == "" {
		t.Fatalf("cordonctl device list: want a device with a public key for nurse and clerk, got %+v", devs)
	}
	if st, err := w.nurse.status(); err != nil {
		t.Fatal(err)
	} else if st.DeviceID != nurseDev.ID || st.OverlayAddr != nurseDev.OverlayAddr {
		t.Errorf("nurse status says device %s at %s; device list says %s at %s", st.DeviceID, st.OverlayAddr, nurseDev.ID, nurseDev.OverlayAddr)
	}

	show := mustRun(t, "ip", "netns", "exec", w.gw.name, "wg", "show", w.gwIface)
	t.Logf("wg show %s (gateway):\n%s", w.gwIface, show)
	if !strings.Contains(show, "peer: "+nurseDev.PublicKey) {
		t.Errorf("wg show on the gateway does not list the nurse's device key %s", nurseDev.PublicKey)
	}
	if strings.Contains(show, clerkDev.PublicKey) {
		t.Errorf("wg show on the gateway lists the clerk's device %s, who is entitled to nothing", clerkDev.PublicKey)
	}

	var gwKey string
	for _, g := range w.gateways() {
		if g.Name == gwName {
			gwKey = g.PublicKey
		}
	}
	gw := wgDump(t, w.gw, w.gwIface)
	if len(gw) != 1 {
		t.Errorf("gateway peers: %+v, want only the nurse's device", gw)
	}
	for _, p := range gw {
		if p.publicKey != nurseDev.PublicKey {
			continue
		}
		if want := []string{nurseDev.OverlayAddr + "/32"}; !slices.Equal(p.allowedIPs, want) {
			t.Errorf("nurse's peer on the gateway: allowed IPs %v, want %v", p.allowedIPs, want)
		}
		if p.latestHandshake == "0" {
			t.Errorf("nurse's peer on the gateway: no handshake after traffic flowed")
		}
	}

	cl := wgDump(t, w.cl1, w.nurse.iface)
	if len(cl) != 1 || cl[0].publicKey != gwKey {
		t.Fatalf("nurse's device peers %+v, want exactly the gateway %s", cl, gwKey)
	}
	if want := w.gatewayAllowedIPs(); !slices.Equal(sorted(cl[0].allowedIPs), want) {
		t.Errorf("nurse's device: gateway allowed IPs %v, want only ehr's address and the gateway's overlay address %v", cl[0].allowedIPs, want)
	}
	if cl[0].endpoint != gwWANAddr+":51820" {
		t.Errorf("nurse's device: gateway endpoint %q, want %s:51820", cl[0].endpoint, gwWANAddr)
	}
	if ck := wgDump(t, w.cl2, w.clerk.iface); len(ck) != 0 {
		t.Errorf("clerk's device has peers %+v, want none", ck)
	}
}

type wgPeer struct {
	publicKey       string
	endpoint        string
	allowedIPs      []string
	latestHandshake string
}

// wgDump parses 'wg show IFACE dump' run in ns.
func wgDump(t *testing.T, ns netNS, iface string) []wgPeer {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", ns.name, "wg", "show", iface, "dump")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var peers []wgPeer
	for _, l := range lines[1:] { // line 1 is the interface
		f := strings.Split(l, "\t")
		if len(f) < 8 {
			t.Fatalf("wg show %s dump: bad peer line %q", iface, l)
		}
		p := wgPeer{publicKey: f[0], endpoint: f[2], latestHandshake: f[4]}
		if f[3] != "(none)" {
			p.allowedIPs = strings.Split(f[3], ",")
		}
		peers = append(peers, p)
	}
	return peers
}

// gatewayOverlay returns the gateway's overlay address.
func (w *world) gatewayOverlay() string {
	w.t.Helper()
	for _, g := range w.gateways() {
		if g.Name == gwName {
			return g.OverlayAddr
		}
	}
	w.t.Fatalf("gateway %s not in gateway list", gwName)
	return ""
}

// gatewayAllowedIPs is what a nurse's device may route to the gateway:
// ehr's address and the gateway's overlay address (its DNS server).
func (w *world) gatewayAllowedIPs() []string {
	return sorted([]string{"10.20.0.10/32", w.gatewayOverlay() + "/32"})
}

// gatewayHostService starts a TCP listener on all addresses of the gateway
// namespace (think: the appliance's SSH) and returns it as a service dialed
// at addr:2222.
func (w *world) gatewayHostService(addr string) *service {
	w.t.Helper()
	s := &service{name: "gateway-host-ssh", addr: addr + ":2222"}
	ln, err := w.gw.listen("tcp", "0.0.0.0:2222")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			c.Close()
		}
	}()
	return s
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

func deref(p *string) string {
	if p == nil {
		return "<nothing>"
	}
	return *p
}
