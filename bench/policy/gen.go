package policybench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Size is the shape of a synthetic hospital system.
type Size struct {
	Devices, Apps, Rules, Denies int
	Depts, Roles, Segments       int
}

// Hospital is the target: 100,000 devices, 10,000 apps, 20,000
// rules. Users are role-based, as in a real hospital: each is in one
// department group and one role group (400 x 25), with two devices each;
// one device in ten carries a "shared-ws" tag.
var Hospital = Size{Devices: 100_000, Apps: 10_000, Rules: 20_000, Denies: 100, Depts: 400, Roles: 25, Segments: 50}

// Small is for quick runs and the agreement test.
var Small = Size{Devices: 2_000, Apps: 500, Rules: 1_000, Denies: 20, Depts: 40, Roles: 10, Segments: 10}

func appAddr(i, segments int) netip.Addr {
	k := i / segments
	return netip.AddrFrom4([4]byte{10, byte(i % segments), byte(k / 250), byte(k%250 + 1)})
}

// Generate writes the policy file and the device directory.
func Generate(sz Size, seed uint64) ([]byte, []policyfile.Device) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var b strings.Builder
	b.WriteString("version: 1\nposture_checks:\n  disk-encrypted: full-disk encryption\n  screen-lock: screen lock\n")
	users := sz.Devices / 2
	b.WriteString("groups:\n")
	deptMembers := make([][]string, sz.Depts)
	roleMembers := make([][]string, sz.Roles)
	userGroups := make([][2]int, users)
	for u := range users {
		d, r := rng.IntN(sz.Depts), rng.IntN(sz.Roles)
		name := fmt.Sprintf("u%06d", u)
		deptMembers[d] = append(deptMembers[d], name)
		roleMembers[r] = append(roleMembers[r], name)
		userGroups[u] = [2]int{d, r}
	}
	for d, m := range deptMembers {
		fmt.Fprintf(&b, "  dept-%03d:\n    members: [%s]\n", d, strings.Join(m, ", "))
	}
	for r, m := range roleMembers {
		fmt.Fprintf(&b, "  role-%02d:\n    members: [%s]\n", r, strings.Join(m, ", "))
	}
	b.WriteString("segments:\n")
	for s := range sz.Segments {
		fmt.Fprintf(&b, "  seg-%02d:\n    prefixes: [10.%d.0.0/16]\n    gateways: [gw-%02d]\n", s, s, s)
	}
	b.WriteString("apps:\n")
	classes := make([]string, sz.Apps)
	for i := range sz.Apps {
		classes[i] = []string{"phi", "phi", "phi", "phi", "phi", "phi", "internal", "internal", "internal", "public"}[rng.IntN(10)]
		ports := "tcp/443"
		if rng.IntN(3) == 0 {
			ports += ", tcp/8000-8099"
		}
		fmt.Fprintf(&b, "  a%05d:\n    segment: seg-%02d\n    names: [a%05d.hospital.internal]\n    addresses: [%s]\n    ports: [%s]\n    classification: %s\n    tags: [svc-%02d]\n",
			i, i%sz.Segments, i, appAddr(i, sz.Segments), ports, classes[i], rng.IntN(100))
	}
	b.WriteString("rules:\n")
	// Rules name groups uniformly: a role group is named as often as a
	// department group, so a device gets about 2*Rules/(Depts+Roles)
	// rules (about 100 at hospital size).
	group := func() string {
		if g := rng.IntN(sz.Depts + sz.Roles); g < sz.Depts {
			return fmt.Sprintf("group:dept-%03d", g)
		}
		return fmt.Sprintf("group:role-%02d", rng.IntN(sz.Roles))
	}
	for i := range sz.Rules {
		from := group()
		if rng.IntN(4) == 0 {
			from += ", " + group()
		}
		if rng.IntN(50) == 0 {
			from += ", tag:shared-ws"
		}
		app := rng.IntN(sz.Apps)
		fmt.Fprintf(&b, "  - name: r%05d\n    from: [%s]\n    to: [app:a%05d]\n", i, from, app)
		var when []string
		if classes[app] == "phi" {
			when = append(when, "mfa_max_age: 12h", "posture: [disk-encrypted]")
		}
		if rng.IntN(20) == 0 {
			when = append(when, `hours: ["Mon-Fri 06:00-20:00 America/New_York"]`)
		}
		if len(when) > 0 {
			fmt.Fprintf(&b, "    when: {%s}\n", strings.Join(when, ", "))
		}
	}
	b.WriteString("deny:\n")
	for i := range sz.Denies {
		fmt.Fprintf(&b, "  - name: d%03d\n    from: [group:role-%02d]\n    to: [app:a%05d]\n", i, sz.Roles-1, rng.IntN(sz.Apps))
	}
	devices := make([]policyfile.Device, 0, sz.Devices)
	for i := range sz.Devices {
		d := policyfile.Device{
			ID: fmt.Sprintf("dev%06d", i), User: fmt.Sprintf("u%06d", i/2),
			Addr: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}),
		}
		if rng.IntN(10) == 0 {
			d.Tags = []string{"shared-ws"}
		}
		devices = append(devices, d)
	}
	return []byte(b.String()), devices
}

// Request is one new flow with its session context.
type Request struct {
	Device  policyfile.Device
	Groups  []string
	Dst     netip.Addr
	Proto   policy.Proto
	Port    uint16
	Session policy.Session
	At      time.Time
}

// Requests draws n flows: half toward an app one of the device's rules
// names (so conditions are evaluated), half toward a random app.
func Requests(pol *policyfile.Policy, devices []policyfile.Device, sz Size, n int, seed uint64) []Request {
	rng := rand.New(rand.NewPCG(seed, 2))
	base := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	var out []Request
	for len(out) < n {
		d := devices[rng.IntN(len(devices))]
		groups := pol.GroupsOf(d.User, nil)
		app := rng.IntN(sz.Apps)
		if rng.IntN(2) == 0 {
			if acc := pol.Access(d.User, nil, d.Tags); len(acc) > 0 {
				fmt.Sscanf(acc[rng.IntN(len(acc))].App, "a%d", &app)
			}
		}
		q := Request{Device: d, Groups: groups, Dst: appAddr(app, sz.Segments), Proto: policy.ProtoTCP,
			Port: []uint16{443, 443, 8042, 22}[rng.IntN(4)], At: base.Add(time.Duration(rng.IntN(7*24)) * time.Hour)}
		q.Session = policy.Session{Groups: groups, Tags: d.Tags}
		if rng.IntN(5) > 0 {
			q.Session.MFAAt = q.At.Add(-time.Duration(rng.IntN(16*60)) * time.Minute)
		}
		if rng.IntN(5) > 0 {
			q.Session.Posture = []string{"disk-encrypted", "screen-lock"}
		}
		out = append(out, q)
	}
	return out
}
