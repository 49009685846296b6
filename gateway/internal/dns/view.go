package dns

import (
	"fmt"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
	"github.com/cordonhq/cordon/pkg/policy"
)

// app is one app as the DNS server sees it. probes are the (proto, port)
// pairs asked of the policy: the app is visible to a device if any of them
// is allowed, so a rule admitting even one of its ports reveals the name.
type app struct {
	name   string
	fqdn   string
	addr   netip.Addr // valid only for single-address apps (A/AAAA, PTR)
	proto  policy.Proto
	ports  []uint16 // SRV targets: the first port of each range
	probes []probe
	dst    netip.Addr // address the policy is asked about
}

type probe struct {
	proto policy.Proto
	port  uint16
}

// node is one owner name in the internal zones. below holds every app that
// makes the name exist: those owning records at it and those owning names
// under it (it is then an empty non-terminal for their viewers).
type node struct {
	hosts []*app // A/AAAA owners: the name is these apps' DNSName
	alias *app   // the name is a CNAME to alias.fqdn
	ptrs  []*app // the name is the reverse name of these apps' address
	below []*app
}

// view is the immutable DNS data of one gateway map, swapped atomically.
type view struct {
	zones *dnszone.Set
	names map[string]*node
	apps  int
}

var emptyView = &view{names: map[string]*node{}}

// newView indexes the map's zones and apps. Apps whose names lie outside
// every zone are not served (the controller keeps zones covering them).
func newView(zones []controlproto.DNSZone, apps []controlproto.App) (*view, error) {
	zs := make([]dnszone.Zone, len(zones))
	for i, z := range zones {
		zs[i] = dnszone.Zone{Name: z.Name, TTL: z.TTL}
	}
	set, err := dnszone.NewSet(zs)
	if err != nil {
		return nil, err
	}
	v := &view{zones: set, names: map[string]*node{}}
	get := func(name string) *node {
		n := v.names[name]
		if n == nil {
			n = &node{}
			v.names[name] = n
		}
		return n
	}
	// mark adds a to name and every ancestor of it up to its zone apex.
	mark := func(name string, a *app) bool {
		z, ok := set.Match(name)
		if !ok {
			return false
		}
		for off, end := 0, false; !end; off, end = mdns.NextLabel(name, off) {
			n := get(name[off:])
			if len(n.below) == 0 || n.below[len(n.below)-1] != a {
				n.below = append(n.below, a)
			}
			if name[off:] == z.Name {
				break
			}
		}
		return true
	}
	for _, wa := range apps {
		if wa.DNSName == "" {
			continue
		}
		fqdn := dnszone.Canonical(wa.DNSName)
		if _, ok := mdns.IsDomainName(fqdn); !ok {
			return nil, fmt.Errorf("app %q: bad DNS name %q", wa.Name, wa.DNSName)
		}
		a := &app{name: wa.Name, fqdn: fqdn, proto: wa.Proto, dst: wa.Addr.Addr()}
		if wa.Addr.IsSingleIP() {
			a.addr = wa.Addr.Addr().Unmap()
		}
		a.dst = a.dst.Unmap()
		protos := []policy.Proto{wa.Proto}
		if wa.Proto == policy.ProtoAny {
			protos = []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoAny}
		}
		for _, pr := range protos {
			if len(wa.Ports) == 0 {
				a.probes = append(a.probes, probe{pr, 0})
			}
			for _, r := range wa.Ports {
				a.probes = append(a.probes, probe{pr, r.First})
			}
		}
		for _, r := range wa.Ports {
			a.ports = append(a.ports, r.First)
		}
		if !mark(fqdn, a) {
			continue
		}
		v.apps++
		n := get(fqdn)
		n.hosts = append(n.hosts, a)
		for _, al := range wa.DNSAliases {
			al = dnszone.Canonical(al)
			if _, ok := mdns.IsDomainName(al); !ok || al == fqdn {
				return nil, fmt.Errorf("app %q: bad DNS alias %q", wa.Name, al)
			}
			if mark(al, a) {
				get(al).alias = a
			}
		}
		if a.addr.IsValid() {
			rev, err := mdns.ReverseAddr(a.addr.String())
			if err == nil && mark(rev, a) {
				n := get(rev)
				n.ptrs = append(n.ptrs, a)
			}
		}
	}
	for name, n := range v.names {
		if n.alias != nil && (len(n.hosts) > 0 || len(n.ptrs) > 0) {
			return nil, fmt.Errorf("DNS name %s is both an alias of app %q and an app's name", strings.TrimSuffix(name, "."), n.alias.name)
		}
	}
	return v, nil
}
