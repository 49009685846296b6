package hostfw_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cordonhq/cordon/gateway/internal/hostfw"
	"github.com/cordonhq/cordon/internal/netnstest"
)

var cfg = hostfw.Config{
	Interface:  "cordon-gw0",
	Overlay:    netip.MustParsePrefix("100.64.0.0/10"),
	ListenPort: 51820,
	Management: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("2001:db8::/64")},
	Segments:   []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")},
}

func chains(t *testing.T, c *nftables.Conn) map[string]*nftables.Chain {
	t.Helper()
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*nftables.Chain{}
	for _, ch := range all {
		if ch.Table.Name == hostfw.TableName {
			out[ch.Name] = ch
		}
	}
	return out
}

// acceptRules counts the rules of chain that end in accept.
func acceptRules(t *testing.T, c *nftables.Conn, ch *nftables.Chain) int {
	t.Helper()
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); ok && v.Kind == expr.VerdictAccept {
			n++
		}
	}
	return n
}

// clampRules counts the rules of chain that set the TCP MSS option on the
// interface's traffic.
func clampRules(t *testing.T, c *nftables.Conn, ch *nftables.Chain) int {
	t.Helper()
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		// google/nftables v0.3.0 does not decode the rt and byteorder
		// expressions it reads back, so only the write is checked here;
		// e2e/mtu_test.go checks the rule as nft prints it.
		var write, iface bool
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Exthdr:
				write = write || (e.Op == expr.ExthdrOpTcpopt && e.Type == 2 && e.SourceRegister != 0)
			case *expr.Cmp:
				iface = iface || string(e.Data[:len(cfg.Interface)]) == cfg.Interface
			}
		}
		if write && iface {
			n++
		}
	}
	return n
}

func TestInstallDefaultDrop(t *testing.T) {
	ns := netnstest.Enter(t, "installs nftables rules in a private network namespace")
	opt := hostfw.WithNetNS(int(ns))
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := hostfw.Installed(opt); err != nil || ok {
		t.Fatalf("Installed before Install = %v, %v; want false", ok, err)
	}
	fw, err := hostfw.Install(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	chs := chains(t, c)
	for _, name := range []string{"prerouting", "input", "forward", "output", "postrouting"} {
		if chs[name] == nil {
			t.Fatalf("chain %s missing; have %v", name, chs)
		}
	}
	for _, name := range []string{"input", "forward"} {
		if p := chs[name].Policy; p == nil || *p != nftables.ChainPolicyDrop {
			t.Errorf("%s policy = %v, want drop", name, p)
		}
	}
	// One segment: its accept plus the replies' accept.
	if n := acceptRules(t, c, chs["forward"]); n != 2 {
		t.Errorf("forward accept rules = %d, want 2", n)
	}
	if err := fw.SetSegments([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("10.30.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if n := acceptRules(t, c, chs["forward"]); n != 3 {
		t.Errorf("forward accept rules after two segments = %d, want 3", n)
	}
	counts, err := fw.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if n := clampRules(t, c, chs["forward"]); n != 2 {
		t.Errorf("forward MSS clamp rules = %d, want 2 (into and out of the tunnel)", n)
	}
	for _, name := range []string{hostfw.CounterForwardDropped, hostfw.CounterInputDropped, hostfw.CounterSpoofed, hostfw.CounterPacketTooBigSent} {
		if _, ok := counts[name]; !ok {
			t.Errorf("counter %s missing: %v", name, counts)
		}
	}

	// A clean stop forwards nothing, and leaves the drop policies.
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	chs = chains(t, c)
	if n := acceptRules(t, c, chs["forward"]); n != 1 {
		t.Errorf("forward accept rules after Close = %d, want only the replies' rule", n)
	}
	if n := clampRules(t, c, chs["forward"]); n != 2 {
		t.Errorf("forward MSS clamp rules after Close = %d, want 2 (replies of open flows still pass)", n)
	}
	if p := chs["forward"].Policy; p == nil || *p != nftables.ChainPolicyDrop {
		t.Errorf("forward policy after Close = %v, want drop", p)
	}

	// A restart replaces the table whole: still one, same chains.
	if _, err := hostfw.Install(cfg, opt); err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	if n := slices.IndexFunc(tables, func(tb *nftables.Table) bool { return tb.Name == hostfw.TableName }); n < 0 || len(tables) != 1 {
		t.Fatalf("tables after reinstall: %v", tables)
	}
	if err := hostfw.Uninstall(opt); err != nil {
		t.Fatal(err)
	}
	if ok, err := hostfw.Installed(opt); err != nil || ok {
		t.Fatalf("Installed after Uninstall = %v, %v; want false", ok, err)
	}
	if err := hostfw.Uninstall(opt); err != nil {
		t.Fatalf("second Uninstall: %v", err)
	}
}

// The cluster port is open to the listed peers only: the input chain
// jumps to cluster_peers for it, and that chain holds one UDP and one TCP
// accept per peer, replaced whole on each update.
func TestClusterPeers(t *testing.T) {
	ns := netnstest.Enter(t, "installs nftables rules in a private network namespace")
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	withCluster := cfg
	withCluster.ClusterPort = 7946
	fw, err := hostfw.Install(withCluster, hostfw.WithNetNS(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	chs := chains(t, c)
	if chs["cluster_peers"] == nil {
		t.Fatal("no cluster_peers chain")
	}
	if n := acceptRules(t, c, chs["cluster_peers"]); n != 0 {
		t.Errorf("cluster port open to %d rules before any peer is known", n)
	}
	peers := []netip.Addr{netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.3")}
	if err := fw.SetClusterPeers(peers); err != nil {
		t.Fatal(err)
	}
	if n := acceptRules(t, c, chs["cluster_peers"]); n != 4 {
		t.Errorf("cluster_peers accept rules = %d, want 4 (UDP and TCP per peer)", n)
	}
	if err := fw.SetClusterPeers(peers[:1]); err != nil {
		t.Fatal(err)
	}
	if n := acceptRules(t, c, chs["cluster_peers"]); n != 2 {
		t.Errorf("cluster_peers accept rules after a peer left = %d, want 2", n)
	}

	// Without a cluster port: no chain, and no way in.
	plain, err := hostfw.Install(cfg, hostfw.WithNetNS(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	if chains(t, c)["cluster_peers"] != nil {
		t.Error("cluster_peers chain without a cluster port")
	}
	if err := plain.SetClusterPeers(peers); err != nil {
		t.Errorf("SetClusterPeers without a cluster port: %v", err)
	}
}

func TestInstallRejectsBadConfig(t *testing.T) {
	for name, mod := range map[string]func(*hostfw.Config){
		"no interface": func(c *hostfw.Config) { c.Interface = "" },
		"long name":    func(c *hostfw.Config) { c.Interface = "a-very-long-interface-name" },
		"v6 overlay":   func(c *hostfw.Config) { c.Overlay = netip.MustParsePrefix("fd00::/64") },
		"no port":      func(c *hostfw.Config) { c.ListenPort = 0 },
		"bad mgmt":     func(c *hostfw.Config) { c.Management = []netip.Prefix{{}} },
	} {
		c := cfg
		mod(&c)
		if _, err := hostfw.Install(c); err == nil {
			t.Errorf("%s: Install accepted %+v", name, c)
		}
	}
}

// TestTCPPortAdmitted: --tcp-listen's port is admitted on input like the
// WireGuard UDP port, one rule, and only when configured.
func TestTCPPortAdmitted(t *testing.T) {
	ns := netnstest.Enter(t, "installs nftables rules in a private network namespace")
	opt := hostfw.WithNetNS(int(ns))
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	inputAccepts := func(cfg hostfw.Config) int {
		t.Helper()
		if _, err := hostfw.Install(cfg, opt); err != nil {
			t.Fatal(err)
		}
		return acceptRules(t, c, chains(t, c)["input"])
	}
	udpOnly := inputAccepts(cfg)
	withTCP := cfg
	withTCP.TCPPort = 443
	if n := inputAccepts(withTCP); n != udpOnly+1 {
		t.Fatalf("input accept rules with a TCP port = %d, want %d", n, udpOnly+1)
	}
	if err := hostfw.Uninstall(opt); err != nil {
		t.Fatal(err)
	}
}
