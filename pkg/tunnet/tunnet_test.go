package tunnet_test

import (
	"cmp"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"golang.org/x/sys/unix"

	"github.com/cordonhq/cordon/internal/netnstest"

	"github.com/cordonhq/cordon/pkg/tunnet"
)

func inNewNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	return netnstest.Enter(t, "creates a network namespace with links and routes in it")
}

// addTun creates a TUN link like the agents' (the package only configures
// the kernel side; this test keeps the device's file open so the link has a
// carrier, and closes it at cleanup).
func addTun(t *testing.T, name string, up bool) netlink.Link {
	t.Helper()
	tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI, NonPersist: true, Queues: 1}
	if err := netlink.LinkAdd(tun); err != nil {
		t.Fatalf("add tun %s: %v", name, err)
	}
	t.Cleanup(func() {
		for _, f := range tun.Fds {
			f.Close()
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// routesVia lists the main-table routes through link that someone added
// (not the kernel's own), sorted.
func routesVia(t *testing.T, link netlink.Link) []netip.Prefix {
	t.Helper()
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil {
			continue
		}
		out = append(out, prefixOf(r.Dst))
	}
	return sorted(out)
}

func sorted(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	return slices.Compact(ps)
}

func addRoute(t *testing.T, link netlink.Link, p netip.Prefix) {
	t.Helper()
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("add route %s: %v", p, err)
	}
}

func delRoute(t *testing.T, link netlink.Link, p netip.Prefix) {
	t.Helper()
	if err := netlink.RouteDel(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("delete route %s: %v", p, err)
	}
}

// routeWatch records the kernel's route notifications in the namespace,
// so a test sees every add and delete, not just the end state.
type routeWatch struct {
	ch     chan netlink.RouteUpdate
	errs   chan error
	marker netlink.Link
}

// tunDefaultMTU is the MTU the kernel gives a new TUN link.
const tunDefaultMTU = 1500

var markerRoute = netip.MustParsePrefix("198.51.100.0/24")

func watchRoutes(t *testing.T, ns netns.NsHandle) *routeWatch {
	t.Helper()
	w := &routeWatch{ch: make(chan netlink.RouteUpdate, 1024), errs: make(chan error, 1), marker: addTun(t, "marker0", true)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	if err := netlink.RouteSubscribeWithOptions(w.ch, done, netlink.RouteSubscribeOptions{
		Namespace: &ns,
		ErrorCallback: func(err error) {
			select {
			case w.errs <- err:
			default:
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// changes returns the routes added to and removed from link since the last
// call. Netlink notifications arrive in order, so it adds and deletes a
// marker route on another link and takes everything seen before it.
func (w *routeWatch) changes(t *testing.T, link netlink.Link) (added, removed []netip.Prefix) {
	t.Helper()
	addRoute(t, w.marker, markerRoute)
	w.until(t, unix.RTM_NEWROUTE, func(u netlink.RouteUpdate) {
		if u.LinkIndex != link.Attrs().Index || u.Protocol == unix.RTPROT_KERNEL || u.Table != unix.RT_TABLE_MAIN || u.Dst == nil {
			return
		}
		switch u.Type {
		case unix.RTM_NEWROUTE:
			added = append(added, prefixOf(u.Dst))
		case unix.RTM_DELROUTE:
			removed = append(removed, prefixOf(u.Dst))
		}
	})
	delRoute(t, w.marker, markerRoute)
	w.until(t, unix.RTM_DELROUTE, func(netlink.RouteUpdate) {})
	return sorted(added), sorted(removed)
}

// until hands fn every update before the marker's update of type typ.
func (w *routeWatch) until(t *testing.T, typ uint16, fn func(netlink.RouteUpdate)) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case u, ok := <-w.ch:
			if !ok {
				t.Fatal("route subscription ended")
			}
			if u.LinkIndex == w.marker.Attrs().Index && u.Dst != nil && prefixOf(u.Dst) == markerRoute && u.Type == typ {
				return
			}
			fn(u)
		case err := <-w.errs:
			t.Fatalf("route subscription: %v", err)
		case <-timeout.C:
			t.Fatal("marker route notification did not arrive within 10s")
		}
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		addr    netip.Prefix
		mtu     int
		wantMTU int
	}{
		{"gateway /32", netip.MustParsePrefix("100.64.0.1/32"), 1420, 1420},
		{"client /10", netip.MustParsePrefix("100.64.0.9/10"), 1280, 1280},
		{"mtu 0 keeps the link's", netip.MustParsePrefix("100.64.0.2/32"), 0, tunDefaultMTU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			addTun(t, "cordon0", false)
			for i := range 2 { // configuring again changes nothing
				l, err := tunnet.Configure("cordon0", tt.addr, tt.mtu)
				if err != nil {
					t.Fatalf("Configure #%d: %v", i+1, err)
				}
				t.Cleanup(func() { l.Close() })
				link, err := netlink.LinkByName("cordon0")
				if err != nil {
					t.Fatal(err)
				}
				if link.Attrs().Flags&net.FlagUp == 0 {
					t.Errorf("Configure #%d: link is not up", i+1)
				}
				if link.Attrs().MTU != tt.wantMTU {
					t.Errorf("Configure #%d: MTU %d, want %d", i+1, link.Attrs().MTU, tt.wantMTU)
				}
				addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
				if err != nil {
					t.Fatal(err)
				}
				if len(addrs) != 1 || prefixOf(addrs[0].IPNet) != tt.addr {
					t.Errorf("Configure #%d: addresses %v, want exactly %s", i+1, addrs, tt.addr)
				}
			}
		})
	}
}

func TestConfigureMissingInterface(t *testing.T) {
	inNewNetns(t)
	if _, err := tunnet.Configure("nope0", netip.MustParsePrefix("100.64.0.1/32"), 0); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("Configure of a missing interface = %v, want an error naming it", err)
	}
}

// SyncRoutes adds exactly the routes that are missing and removes exactly
// those no longer wanted, never touching the others (a route that stays
// is not deleted and re-added) nor routes it did not add.
func TestSyncRoutes(t *testing.T) {
	ns := inNewNetns(t)
	addTun(t, "cordon0", false)
	l, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.1/32"), 1420)
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	w := watchRoutes(t, ns)
	// Someone else's route through the same link.
	foreign := netip.MustParsePrefix("192.0.2.0/24")
	addRoute(t, link, foreign)

	p := netip.MustParsePrefix
	ehr, lab, lab7, wide := p("10.20.0.10/32"), p("10.30.0.0/24"), p("10.30.0.7/24"), p("10.40.0.0/16")
	steps := []struct {
		name           string
		want           []netip.Prefix
		added, removed []netip.Prefix
	}{
		{"first map", []netip.Prefix{ehr, lab}, []netip.Prefix{ehr, lab}, nil},
		{"same routes, unmasked", []netip.Prefix{lab7, ehr}, nil, nil},
		{"one goes, one comes", []netip.Prefix{lab, wide}, []netip.Prefix{wide}, []netip.Prefix{ehr}},
		{"unchanged", []netip.Prefix{wide, lab}, nil, nil},
		{"duplicates", []netip.Prefix{wide, wide, lab, lab7}, nil, nil},
		// Already there: adopted without a change, and from now on the
		// Link's to remove.
		{"foreign route wanted too", []netip.Prefix{wide, lab, foreign}, nil, nil},
		{"nothing", nil, nil, []netip.Prefix{lab, foreign, wide}},
	}
	w.changes(t, link) // discard the setup's notifications
	for _, s := range steps {
		if err := l.SyncRoutes(s.want); err != nil {
			t.Fatalf("%s: SyncRoutes: %v", s.name, err)
		}
		added, removed := w.changes(t, link)
		if !slices.Equal(added, sorted(s.added)) || !slices.Equal(removed, sorted(s.removed)) {
			t.Errorf("%s: kernel saw added %v removed %v, want added %v removed %v", s.name, added, removed, sorted(s.added), sorted(s.removed))
		}
		want := slices.Clone(s.want)
		if s.name != "nothing" {
			want = append(want, foreign)
		}
		for i, x := range want {
			want[i] = x.Masked()
		}
		if got := routesVia(t, link); !slices.Equal(got, sorted(want)) {
			t.Errorf("%s: routes via cordon0 %v, want %v", s.name, got, sorted(want))
		}
	}
}

// Close removes the routes the Link added, and only those; a route someone
// else already removed is no error.
func TestCloseRemovesOwnRoutes(t *testing.T) {
	inNewNetns(t)
	addTun(t, "cordon0", false)
	l, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.1/32"), 0)
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	foreign := netip.MustParsePrefix("192.0.2.0/24")
	addRoute(t, link, foreign)
	gone := netip.MustParsePrefix("10.20.0.10/32")
	if err := l.SyncRoutes([]netip.Prefix{gone, netip.MustParsePrefix("10.30.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	delRoute(t, link, gone) // removed behind the Link's back
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := routesVia(t, link); !slices.Equal(got, []netip.Prefix{foreign}) {
		t.Errorf("routes via cordon0 after Close: %v, want only the foreign %s", got, foreign)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A route the kernel refuses is reported by name, the others still go in,
// and the next SyncRoutes retries it.
func TestSyncRoutesPartialFailure(t *testing.T) {
	inNewNetns(t)
	addTun(t, "cordon0", false)
	l, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.1/32"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	link, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	// With IPv6 off on the link the kernel refuses IPv6 routes through it.
	// (/proc/sys/net is this thread's namespace.)
	sysctl := "/proc/sys/net/ipv6/conf/cordon0/disable_ipv6"
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil {
		t.Skipf("cannot turn IPv6 off on the link (no IPv6?): %v", err)
	}
	good, v6 := netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("2001:db8::/32")
	err = l.SyncRoutes([]netip.Prefix{good, v6})
	if err == nil || !strings.Contains(err.Error(), v6.String()) {
		t.Fatalf("SyncRoutes with a refused route = %v, want an error naming %s", err, v6)
	}
	if got := routesVia(t, link); !slices.Equal(got, []netip.Prefix{good}) {
		t.Errorf("routes via cordon0 %v, want %s despite the failure", got, good)
	}
	if err := os.WriteFile(sysctl, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncRoutes([]netip.Prefix{good, v6}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: v6.Addr().AsSlice(), Mask: net.CIDRMask(32, 128)}}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 {
		t.Errorf("after the retry, routes to %s: %v (%v), want one", v6, rs, err)
	}
}

// A route the Link added and someone flushed is put back by the next sync,
// even though the wanted set did not change.
func TestSyncRoutesRestoresFlushedRoute(t *testing.T) {
	inNewNetns(t)
	addTun(t, "cordon0", false)
	l, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.1/32"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	link, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	ehr, lab := netip.MustParsePrefix("10.20.0.10/32"), netip.MustParsePrefix("10.30.0.0/24")
	want := []netip.Prefix{ehr, lab}
	if err := l.SyncRoutes(want); err != nil {
		t.Fatal(err)
	}
	delRoute(t, link, ehr)
	if got := routesVia(t, link); !slices.Equal(got, []netip.Prefix{lab}) {
		t.Fatalf("after the flush: %v", got)
	}
	if err := l.SyncRoutes(want); err != nil {
		t.Fatal(err)
	}
	if got := routesVia(t, link); !slices.Equal(got, sorted(want)) {
		t.Fatalf("after resync: routes %v, want %v", got, sorted(want))
	}
}

// viaLink is the interface index the kernel picks for dst (0 and the
// error when it picks none: a blackhole, or no route).
func viaLink(t *testing.T, dst string) (int, error) {
	t.Helper()
	rs, err := netlink.RouteGet(net.ParseIP(dst))
	if err != nil {
		return 0, err
	}
	if len(rs) == 0 {
		return 0, nil
	}
	return rs[0].LinkIndex, nil
}

func rulesOfTable(t *testing.T, table int) int {
	t.Helper()
	rs, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rs {
		if r.Table == table {
			n++
		}
	}
	return n
}

// An isolated link's routes win over a more specific route the local
// network pushed into the main table (TunnelVision), and when the link
// vanishes (the agent crashed) the destinations are blackholed, not sent
// out on the local network; the next run clears what the crashed one left.
func TestIsolateTunnelVision(t *testing.T) {
	inNewNetns(t)
	lan := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan1"}
	if err := netlink.LinkAdd(lan); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lan0", "lan1"} {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.AddrAdd(lan, &netlink.Addr{IPNet: ipnetOf("192.168.1.2/24")}); err != nil {
		t.Fatal(err)
	}
	// The rogue DHCP server's option 121: the app's address, via the LAN.
	if err := netlink.RouteAdd(&netlink.Route{Dst: ipnetOf("10.20.0.10/32"), Gw: net.ParseIP("192.168.1.1"), LinkIndex: lan.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	const table, priority = 7380, 5300

	addTun(t, "cordon0", false)
	l, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.2/32"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Isolate(table, priority); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncRoutes([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	tun, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := viaLink(t, "10.20.0.10"); err != nil || got != tun.Attrs().Index {
		t.Fatalf("10.20.0.10 goes via link %d (%v), want the tunnel %d despite the more specific LAN route", got, err, tun.Attrs().Index)
	}
	if got, err := viaLink(t, "192.168.1.7"); err != nil || got != lan.Attrs().Index {
		t.Fatalf("the LAN itself goes via link %d (%v), want lan0", got, err)
	}
	if n := rulesOfTable(t, table); n < 1 {
		t.Fatalf("%d rules look up table %d", n, table)
	}
	// A second SyncRoutes keeps the routes (the table's routes are read back).
	if err := l.SyncRoutes([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}); err != nil {
		t.Fatal(err)
	}

	// The agent crashes: its TUN link goes, its table and rule stay.
	if err := netlink.LinkDel(tun); err != nil {
		t.Fatal(err)
	}
	if got, err := viaLink(t, "10.20.0.10"); got == lan.Attrs().Index {
		t.Fatalf("with the tunnel gone 10.20.0.10 goes out on the LAN in clear (%v)", err)
	}

	// The next run clears the crashed run's blackholes and rule.
	addTun(t, "cordon0", false)
	l2, err := tunnet.Configure("cordon0", netip.MustParsePrefix("100.64.0.2/32"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Isolate(table, priority); err != nil {
		t.Fatal(err)
	}
	if n := rulesOfTable(t, table); n != 1 && n != 2 { // IPv4, and IPv6 if on
		t.Fatalf("%d rules look up table %d after a restart, want one per family", n, table)
	}
	if got, _ := viaLink(t, "10.20.0.10"); got != lan.Attrs().Index {
		t.Fatalf("before any map the old blackhole is still there (via %d)", got)
	}
	if err := l2.SyncRoutes([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	// A clean stop closes the TUN device first (its routes go with it);
	// Close must still take the blackholes away.
	tun2, err := netlink.LinkByName("cordon0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(tun2); err != nil {
		t.Fatal(err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rulesOfTable(t, table); n != 0 {
		t.Fatalf("%d rules still look up table %d after Close", n, table)
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil || len(rs) != 0 {
		t.Fatalf("table %d after Close: %v (%v)", table, rs, err)
	}
	if err := l2.Isolate(unix.RT_TABLE_MAIN, priority); err == nil {
		t.Fatal("Isolate accepted the main table")
	}
}

func ipnetOf(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
