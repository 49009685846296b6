package netmap

import (
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
)

// DNSConfig is how the controller knows the internal DNS zones.
//
// Zones are the zones an operator names (cordon-controller --dns-zone,
// repeatable), e.g. "hosp.internal". Beyond them, every app name outside all
// configured zones makes its parent domain a zone (ehr.lab.example →
// lab.example), so no app name is ever sent to a client's system resolver,
// and every segment prefix makes its reverse zone internal (10.20.0.0/24 →
// 0.20.10.in-addr.arpa), so reverse lookups of app addresses stay inside
// too. TTL is the TTL of every answer, positive and negative (default
// dnszone.DefaultTTL).
type DNSConfig struct {
	Zones []string
	TTL   uint32
}

// Validate checks the configured zone names.
func (c DNSConfig) Validate() error {
	for _, z := range c.Zones {
		name := dnszone.Canonical(z)
		if _, ok := dns.IsDomainName(name); !ok || name == "." || strings.HasSuffix(name, "..") {
			return fmt.Errorf("--dns-zone %q: not a domain name (want e.g. hosp.internal)", z)
		}
	}
	return nil
}

// impliedZone is the zone an app name outside every configured zone makes
// internal: its parent domain (the name itself if it has one label).
// outside is false for a name in a configured zone, or no name.
func impliedZone(set *dnszone.Set, dnsName string) (zone string, outside bool) {
	if dnsName == "" {
		return "", false
	}
	name := dnszone.Canonical(dnsName)
	if _, ok := set.Match(name); ok {
		return "", false
	}
	if off, end := dns.NextLabel(name, 0); !end && name[off:] != "." {
		name = name[off:]
	}
	return name, true
}

// OutsideZones says, for an app's DNS name in none of the configured
// zones, which domain it makes internal (its parent): clients then send no
// name under it to their system resolver, which an admin should know when
// creating the app. ok is false for a name inside a zone.
func (c DNSConfig) OutsideZones(dnsName string) (implied string, ok bool) {
	var zs []dnszone.Zone
	for _, z := range c.Zones {
		zs = append(zs, dnszone.Zone{Name: dnszone.Canonical(z), TTL: dnszone.DefaultTTL})
	}
	set, err := dnszone.NewSet(zs)
	if err != nil {
		return "", false
	}
	z, outside := impliedZone(set, dnsName)
	return strings.TrimSuffix(z, "."), outside
}

// DNSZones returns every internal zone, sorted. Every agent gets the same
// list.
func (ix *Index) DNSZones(cfg DNSConfig) []controlproto.DNSZone {
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = dnszone.DefaultTTL
	}
	names := map[string]bool{}
	for _, z := range cfg.Zones {
		names[dnszone.Canonical(z)] = true
	}
	configured := make([]dnszone.Zone, 0, len(names))
	for n := range names {
		configured = append(configured, dnszone.Zone{Name: n, TTL: ttl})
	}
	set, err := dnszone.NewSet(configured)
	if err != nil {
		set, _ = dnszone.NewSet(nil) // Validate at startup keeps this from happening
	}
	for _, a := range ix.snap.Apps {
		if z, outside := impliedZone(set, a.DNSName); outside {
			names[z] = true
		}
	}
	for _, sg := range ix.snap.Segments {
		for _, p := range sg.CIDRs {
			z := dnszone.ReverseZone(p)
			if z != "in-addr.arpa." && z != "ip6.arpa." {
				names[z] = true
			}
		}
	}
	out := make([]controlproto.DNSZone, 0, len(names))
	for n := range names {
		out = append(out, controlproto.DNSZone{Name: n, TTL: ttl})
	}
	slices.SortFunc(out, func(a, b controlproto.DNSZone) int { return strings.Compare(a.Name, b.Name) })
	return out
}
