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

	mu     sync.Mutex
	routes map[netip.Prefix]bool
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
			delete(l.routes, p)
		}
	}
	for p := range wantSet {
		if l.routes[p] {
			continue
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
	rs, err := netlink.RouteList(l.link, netlink.FAMILY_ALL)
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
	return &netlink.Route{LinkIndex: l.link.Attrs().Index, Dst: ipnet(p), Scope: netlink.SCOPE_LINK}
}

// Close removes the routes it added.
func (l *Link) Close() error { return l.SyncRoutes(nil) }

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
