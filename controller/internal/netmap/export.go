package netmap

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// ExportFile is the file name Export's output is parsed under, for the
// positions in its errors.
const ExportFile = "directory.yaml"

// Export renders the skeleton directory of snap (segments, apps, groups
// with their local members, rules) as a policy file that grants exactly
// what the directory grants:
//
//   - each segment keeps its name and prefixes (a gateway serves the policy
//     segment named like the segment it enrolled into, so no gateways: list
//     is needed);
//   - each app keeps its segment, DNS name, address and classification; its
//     protocol and ports become services ("tcp/443" per range, "tcp" for
//     every port; "any" with ports becomes tcp and udp on those ports plus
//     icmp and icmp6, which is what the gateway admits for it);
//   - each group keeps its members;
//   - each directory rule becomes one allow rule, named like it, from the
//     group to the app. Directory rules carry no conditions, so a rule to a
//     phi app carries the written waiver the language requires, dated now,
//     saying that MFA and posture conditions are still to be added.
//
// Users stay in the directory: disabled users keep their memberships and
// are refused by the controller, as before. The output is deterministic
// (every list sorted) and is parsed with policyfile.Parse before it is
// returned, so it is always a valid policy file; a directory that cannot
// be rendered as one (it breaks a rule the language enforces) is an error.
func Export(snap *store.Snapshot, now time.Time) ([]byte, error) {
	date := now.UTC().Format("2006-01-02")
	root := mapping()
	root.HeadComment = fmt.Sprintf("Exported from the cordonctl directory (segment/app/group/rule commands) on %s.\n"+
		"It grants what the directory grants. Rules to phi apps carry a waiver because\n"+
		"directory rules have no conditions: add MFA and posture conditions, remove\n"+
		"the waivers, then 'cordonctl policy plan' and 'cordonctl policy apply'.", date)
	add(root, "version", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "1"})

	segs := sortedBy(snap.Segments, func(s store.Segment) string { return s.Name })
	if len(segs) > 0 {
		m := mapping()
		for _, s := range segs {
			sm := mapping()
			add(sm, "prefixes", flow(strs(s.CIDRs)...))
			add(m, s.Name, sm)
		}
		add(root, "segments", m)
	}

	apps := sortedBy(snap.Apps, func(a store.App) string { return a.Name })
	class := map[string]store.Classification{}
	if len(apps) > 0 {
		m := mapping()
		for _, a := range apps {
			am := mapping()
			add(am, "segment", scalar(a.Segment))
			if a.DNSName != "" {
				add(am, "names", flow(a.DNSName))
			}
			if !a.Addr.IsValid() {
				return nil, fmt.Errorf("app %q has no address", a.Name)
			}
			add(am, "addresses", flow(addrString(a)))
			add(am, "ports", flow(services(a)...))
			c := a.Classification
			if c == "" {
				c = store.ClassPHI
			}
			class[a.Name] = c
			add(am, "classification", scalar(string(c)))
			add(m, a.Name, am)
		}
		add(root, "apps", m)
	}

	groups := sortedBy(snap.Groups, func(g store.Group) string { return g.Name })
	if len(groups) > 0 {
		m := mapping()
		for _, g := range groups {
			gm := mapping()
			members := slices.Sorted(slices.Values(g.Members))
			add(gm, "members", flow(slices.Compact(members)...))
			add(m, g.Name, gm)
		}
		add(root, "groups", m)
	}

	rules := sortedBy(snap.Rules, func(r store.Rule) string { return r.Name })
	if len(rules) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range rules {
			rm := mapping()
			add(rm, "name", scalar(r.Name))
			add(rm, "from", flow("group:"+r.Group))
			add(rm, "to", flow("app:"+r.App))
			if class[r.App] == store.ClassPHI {
				add(rm, "waiver", scalar(fmt.Sprintf(
					"migrated from the cordonctl directory on %s; add MFA and posture conditions", date)))
			}
			seq.Content = append(seq.Content, rm)
		}
		add(root, "rules", seq)
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
		return nil, fmt.Errorf("render the directory as a policy file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render the directory as a policy file: %w", err)
	}
	out := buf.Bytes()
	if _, err := policyfile.Parse(ExportFile, out); err != nil {
		return nil, fmt.Errorf("the directory is not a valid policy file: %w", err)
	}
	return out, nil
}

// services renders an app's protocol and ports as policy services.
func services(a store.App) []string {
	all := len(a.Ports) == 0 || slices.Contains(a.Ports, policy.AllPorts)
	ranges := slices.SortedFunc(slices.Values(a.Ports), func(x, y policy.PortRange) int {
		return cmp.Or(cmp.Compare(x.First, y.First), cmp.Compare(x.Last, y.Last))
	})
	ranges = slices.Compact(ranges)
	ported := func(proto string) []string {
		if all {
			return []string{proto}
		}
		var out []string
		for _, r := range ranges {
			out = append(out, proto+"/"+r.String())
		}
		return out
	}
	switch a.Proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		return ported(a.Proto.String())
	case policy.ProtoAny:
		if all {
			return []string{"any"}
		}
		// The gateway applies ports to tcp and udp only and admits every
		// other protocol of an "any" app; the language has no "any with
		// ports", so spell it out.
		return slices.Concat(ported("tcp"), ported("udp"), []string{"icmp", "icmp6"})
	}
	return []string{a.Proto.String()} // icmp, icmp6: no ports
}

// addrString writes a host as an address and anything wider as a prefix.
func addrString(a store.App) string {
	if a.Addr.IsSingleIP() {
		return a.Addr.Addr().String()
	}
	return a.Addr.String()
}

func sortedBy[T any](s []T, key func(T) string) []T {
	return slices.SortedFunc(slices.Values(s), func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}

func strs[T fmt.Stringer](s []T) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = v.String()
	}
	return out
}

func mapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

// scalar is a string scalar; the encoder quotes it where YAML would read
// it as anything else ("true", "1", "null").
func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func flow(items ...string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, scalar(s))
	}
	return n
}

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, scalar(key), v)
}
