package api

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Limits on list fields, so one request cannot build an enormous object.
const (
	maxCIDRs    = 256
	maxPorts    = 64
	maxHostname = 253
	maxEndpoint = 300
)

// checkName validates an object name for the named field.
func checkName(field, v string) error {
	if v == "" {
		return invalidf("field %q: required", field)
	}
	if !nameRE.MatchString(v) {
		return invalidf("field %q: %q is not a valid name: use 1-63 lower-case letters, digits and '-', starting with a letter or digit", field, clip(v))
	}
	return nil
}

// checkPathName validates a name taken from the URL path. A name that can
// never exist is simply not found.
func checkPathName(kind, v string) error {
	if !nameRE.MatchString(v) {
		return notFoundf("%s %q not found", kind, clip(v))
	}
	return nil
}

// clip shortens user input echoed in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func parseSegment(req *adminapi.CreateSegmentRequest) (store.Segment, error) {
	if err := checkName("name", req.Name); err != nil {
		return store.Segment{}, err
	}
	if len(req.CIDRs) == 0 {
		return store.Segment{}, invalidf("field \"cidrs\": give at least one prefix, e.g. 10.20.0.0/24")
	}
	if len(req.CIDRs) > maxCIDRs {
		return store.Segment{}, invalidf("field \"cidrs\": at most %d prefixes", maxCIDRs)
	}
	s := store.Segment{Name: req.Name}
	for i, c := range req.CIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return s, invalidf("field \"cidrs\"[%d]: %q is not a CIDR prefix like 10.20.0.0/24", i, clip(c))
		}
		if p.Addr().Zone() != "" {
			return s, invalidf("field \"cidrs\"[%d]: %q: zones are not allowed", i, clip(c))
		}
		if p.Addr().Is4In6() {
			return s, invalidf("field \"cidrs\"[%d]: %q: write IPv4 prefixes in dotted form", i, clip(c))
		}
		if m := p.Masked(); m != p {
			return s, invalidf("field \"cidrs\"[%d]: %s has host bits set: did you mean %s?", i, p, m)
		}
		if p.Overlaps(store.OverlayPrefix) {
			return s, invalidf("field \"cidrs\"[%d]: %s overlaps the overlay address pool %s", i, p, store.OverlayPrefix)
		}
		if slices.Contains(s.CIDRs, p) {
			return s, invalidf("field \"cidrs\"[%d]: %s is listed twice", i, p)
		}
		s.CIDRs = append(s.CIDRs, p)
	}
	return s, nil
}

// parseApp validates an app on its own; the caller checks that the address
// lies inside the segment ([appInSegment]).
func parseApp(req *adminapi.CreateAppRequest) (store.App, error) {
	var app store.App
	if err := checkName("name", req.Name); err != nil {
		return app, err
	}
	if err := checkName("segment", req.Segment); err != nil {
		return app, err
	}
	app.Name, app.Segment = req.Name, req.Segment

	dns, err := normalizeDNSName(req.DNSName)
	if err != nil {
		return app, invalidf("field \"dns_name\": %v", err)
	}
	app.DNSName = dns

	addr, err := parseAppAddress(req.Address)
	if err != nil {
		return app, invalidf("field \"address\": %v", err)
	}
	app.Addr = addr

	if req.Proto == "" {
		return app, invalidf("field \"proto\": required: tcp, udp, icmp or any")
	}
	proto, err := policy.ParseProto(req.Proto)
	if err != nil {
		return app, invalidf("field \"proto\": %v", err)
	}
	app.Proto = proto

	if len(req.Ports) > maxPorts {
		return app, invalidf("field \"ports\": at most %d entries", maxPorts)
	}
	for i, s := range req.Ports {
		pr, err := policy.ParsePortRange(strings.TrimSpace(s))
		if err == nil && pr.First == 0 && pr != policy.AllPorts {
			err = fmt.Errorf("bad port %q: ports start at 1", s)
		}
		if err != nil {
			return app, invalidf("field \"ports\"[%d]: %v", i, err)
		}
		app.Ports = append(app.Ports, pr)
	}
	switch proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		if len(app.Ports) == 0 {
			return app, invalidf("field \"ports\": required for %s: give a port (443), a range (8000-8099) or * for all", proto)
		}
	case policy.ProtoICMP, policy.ProtoICMP6:
		if len(app.Ports) > 0 {
			return app, invalidf("field \"ports\": %s has no ports; leave it empty", proto)
		}
	}

	switch c := store.Classification(req.Classification); c {
	case "":
		app.Classification = store.ClassPHI // safest default
	case store.ClassPHI, store.ClassInternal, store.ClassPublic:
		app.Classification = c
	default:
		return app, invalidf("field \"classification\": %q: use phi, internal or public", clip(req.Classification))
	}
	app.Emergency = req.Emergency
	return app, nil
}

// parseAppAddress takes a host address or a masked prefix.
func parseAppAddress(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("required: a host like 10.20.0.5 or a prefix like 10.20.0.0/28")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("%q is not an address or prefix", clip(s))
		}
		if m := p.Masked(); m != p {
			return p, fmt.Errorf("%s has host bits set: did you mean %s, or the host %s?", p, m, p.Addr())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or prefix", clip(s))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return p, fmt.Errorf("%q: use a plain IPv4 or IPv6 address", clip(s))
	}
	// Loopback is allowed: it names an app on the gateway host itself (a
	// sidecar deployment, or the no-root demo). A userspace gateway forwards
	// there only when started with --allow-loopback.
	if p.Addr().IsUnspecified() || p.Addr().IsMulticast() {
		return p, fmt.Errorf("%s is not a routable app address", p)
	}
	return p, nil
}

// appInSegment checks the app address lies inside one of seg's prefixes.
func appInSegment(app store.App, seg store.Segment) error {
	for _, c := range seg.CIDRs {
		if c.Bits() <= app.Addr.Bits() && c.Contains(app.Addr.Addr()) {
			return nil
		}
	}
	cidrs := make([]string, len(seg.CIDRs))
	for i, c := range seg.CIDRs {
		cidrs[i] = c.String()
	}
	return invalidf("field \"address\": %s is not inside segment %q (%s)", app.Addr, seg.Name, strings.Join(cidrs, ", "))
}

// normalizeDNSName lower-cases a DNS name, drops a trailing dot and checks
// RFC 1123 syntax. At least two labels: the client routes whole internal
// zones into the tunnel.
func normalizeDNSName(s string) (string, error) {
	s = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if s == "" {
		return "", fmt.Errorf("required: a name like ehr.hospital.internal")
	}
	if len(s) > 253 {
		return "", fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%q needs a domain: use a name like %s.hospital.internal", clip(s), clip(s))
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("%q: every label must be 1-63 characters", clip(s))
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%q: a label cannot start or end with '-'", clip(s))
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("%q: use only letters, digits, '-' and '.'", clip(s))
			}
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return "", fmt.Errorf("%q: the last label cannot be numeric", clip(s))
	}
	return s, nil
}

// parseTTL parses a Go duration or a whole number of days ("2d").
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return adminapi.DefaultGatewayTokenTTL, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, invalidf("field \"ttl\": %q is not a duration like 30m, 1h or 2d", clip(s))
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, invalidf("field \"ttl\": %q is not a duration like 30m, 1h or 2d", clip(s))
		}
	}
	if d < time.Minute {
		return 0, invalidf("field \"ttl\": %s is too short: at least 1m", s)
	}
	if d > adminapi.MaxGatewayTokenTTL {
		return 0, invalidf("field \"ttl\": %s is too long: at most 7d (168h)", s)
	}
	return d, nil
}

// checkEndpoint validates a gateway's WireGuard endpoint (host:port).
func checkEndpoint(s string) error {
	if s == "" {
		return nil // the gateway reports it later, in its hello
	}
	if len(s) > maxEndpoint {
		return invalidf("field \"endpoint\": too long")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return invalidf("field \"endpoint\": %q is not host:port (e.g. gw1.hospital.example:51820)", clip(s))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return invalidf("field \"endpoint\": port %q is not 1-65535", clip(port))
	}
	return nil
}

// checkHostname validates a device hostname (display only).
func checkHostname(s string) error {
	if len(s) > maxHostname {
		return invalidf("field \"hostname\": longer than %d characters", maxHostname)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalidf("field \"hostname\": control characters are not allowed")
		}
	}
	return nil
}
