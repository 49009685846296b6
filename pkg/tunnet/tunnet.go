// Package tunnet sets up the kernel side of a TUN interface through netlink
// (no shelling out): its address, link state and the routes that steer
// traffic into it. Routes are reconciled declaratively: SyncRoutes takes the
// whole desired set and adds or removes only the difference.
//
// Needs CAP_NET_ADMIN (the tun data-plane mode); the userspace mode does not
// use this package.
package tunnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is a configured TUN interface.
type Link struct {
	name string
	link netlink.Link
	// table is the routing table of the routes (0: main); see Isolate.
	table int

	mu     sync.Mutex
	routes map[netip.Prefix]bool
}

// blackholeMetric orders an isolated table's blackhole routes after the
// routes through the link: they win only once the link is gone.
const blackholeMetric = 1 << 20

// Isolate puts the link's routes, from now on, in their own routing table
// looked up by a policy rule of the given priority, ahead of the main
// table: a more specific route that the local network pushes into the
// main table (DHCP option 121, "TunnelVision", CVE-2024-3661) or a local
// subnet that overlaps (LocalNet) cannot pull traffic for those
// destinations out of the tunnel. Each route has a blackhole twin in the
// table: when the link disappears (the agent crashed) the destinations
// are unreachable, not sent in clear. Close removes the table's routes
// and the rule. Call it once, before the first SyncRoutes; it clears what
// an earlier run that crashed left in the table.
func (l *Link) Isolate(table, priority int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if table <= 0 || table == unix.RT_TABLE_MAIN || table == unix.RT_TABLE_LOCAL || table == unix.RT_TABLE_DEFAULT {
		return fmt.Errorf("isolate the routes of %s: table %d is reserved; choose another", l.name, table)
	}
	l.table = table
	if err := l.flushTable(); err != nil {
		return err
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		// One rule, whatever an earlier run left.
		for netlink.RuleDel(l.rule(fam, -1)) == nil {
		}
		err := netlink.RuleAdd(l.rule(fam, priority))
		if fam == netlink.FAMILY_V6 && errors.Is(err, unix.EAFNOSUPPORT) {
			continue // IPv6 is off on this host
		}
		if err != nil {
			return fmt.Errorf("add the routing rule for table %d (priority %d): %w", table, priority, err)
		}
	}
	return nil
}

func (l *Link) rule(family, priority int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family, r.Table, r.Priority = family, l.table, priority
	return r
}

// flushTable removes every route of the isolated table.
func (l *Link) flushTable() error {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: l.table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list the routes of table %d: %w", l.table, err)
	}
	var errs []error
	for _, r := range rs {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s from table %d: %w", r.Dst, l.table, err))
		}
	}
	return errors.Join(errs...)
}

// Configure gives the named interface its address and brings it up.
func Configure(name string, addr netip.Prefix, mtu int) (*Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", name, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set MTU of %s: %w", name, err)
		}
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipnet(addr)}); err != nil {
		return nil, fmt.Errorf("set address %s on %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring %s up: %w", name, err)
	}
	return &Link{name: name, link: l, routes: map[netip.Prefix]bool{}}, nil
}

// SyncRoutes makes the routes through this interface exactly want. Routes
// it added that have since disappeared from the kernel (a link flap, an
// admin's `ip route flush`) are put back.
func (l *Link) SyncRoutes(want []netip.Prefix) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	wantSet := map[netip.Prefix]bool{}
	for _, p := range want {
		wantSet[p.Masked()] = true
	}
	var errs []error
	if len(l.routes) > 0 {
		live, err := l.kernelRoutes()
		if err != nil {
			errs = append(errs, err)
		} else {
			for p := range l.routes {
				if !live[p] {
					delete(l.routes, p) // gone behind our back: re-add below if wanted
				}
			}
		}
	}
	for p := range l.routes {
		if !wantSet[p] {
			if err := netlink.RouteDel(l.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("remove route %s: %w", p, err))
				continue
			}
			if l.table != 0 {
				if err := netlink.RouteDel(l.blackhole(p)); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("remove blackhole route %s: %w", p, err))
					continue
				}
			}
			delete(l.routes, p)
		}
	}
	for p := range wantSet {
		if l.routes[p] {
			continue
		}
		if l.table != 0 {
			if err := netlink.RouteReplace(l.blackhole(p)); err != nil {
				errs = append(errs, fmt.Errorf("add blackhole route %s: %w", p, err))
				continue
			}
		}
		if err := netlink.RouteReplace(l.route(p)); err != nil {
			errs = append(errs, fmt.Errorf("add route %s via %s: %w", p, l.name, err))
			continue
		}
		l.routes[p] = true
	}
	return errors.Join(errs...)
}

// kernelRoutes lists the destinations routed through the link now.
func (l *Link) kernelRoutes() (map[netip.Prefix]bool, error) {
	filter, mask := &netlink.Route{LinkIndex: l.link.Attrs().Index, Table: l.table}, uint64(netlink.RT_FILTER_OIF)
	if l.table != 0 {
		mask |= netlink.RT_FILTER_TABLE
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, mask)
	if err != nil {
		return nil, fmt.Errorf("list routes via %s: %w", l.name, err)
	}
	live := make(map[netip.Prefix]bool, len(rs))
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		live[netip.PrefixFrom(a.Unmap(), ones).Masked()] = true
	}
	return live, nil
}

func (l *Link) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: l.link.Attrs().Index, Dst: ipnet(p), Scope: netlink.SCOPE_LINK, Table: l.table}
}

func (l *Link) blackhole(p netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: ipnet(p), Type: unix.RTN_BLACKHOLE, Table: l.table, Priority: blackholeMetric}
}

// Close removes the routes it added, and an isolated table's rule.
func (l *Link) Close() error {
	err := l.SyncRoutes(nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.table == 0 {
		return err
	}
	// The whole table: routes through a TUN device already closed went
	// with it, and their blackhole twins are no longer in l.routes.
	errs := []error{err, l.flushTable()}
	clear(l.routes)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if e := netlink.RuleDel(l.rule(fam, -1)); e != nil && !errors.Is(e, unix.ENOENT) && !errors.Is(e, unix.EAFNOSUPPORT) {
			errs = append(errs, fmt.Errorf("remove the routing rule for table %d: %w", l.table, e))
		}
	}
	return errors.Join(errs...)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// EnableForwarding turns on IPv4 forwarding (the gateway routes between its
// tun device and the app subnet).
func EnableForwarding() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}
