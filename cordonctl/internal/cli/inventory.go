package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// Inventory and map export: the assets and the allowed flows between
// them, from the live policy through the same evaluation as policy
// who-can (no second evaluator).

// inventory is the JSON form of cordonctl inventory export.
type inventory struct {
	Generated time.Time          `json:"generated"`
	Policy    string             `json:"policy"` // which policy is in force
	Segments  []inventorySegment `json:"segments"`
	Apps      []inventoryApp     `json:"apps"`
	Gateways  []adminapi.Gateway `json:"gateways"`
	Groups    []inventoryGroup   `json:"groups"`
	Users     []adminapi.User    `json:"users"`
	Devices   []adminapi.Device  `json:"devices"`
	// Flows are the allowed flows: who reaches which app on which ports,
	// through which rule (policy who-can for every app).
	Flows []policyfile.Entitlement `json:"flows"`
}

type inventorySegment struct {
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes"`
	Gateways []string `json:"gateways"`
}

type inventoryApp struct {
	Name           string   `json:"name"`
	Segment        string   `json:"segment"`
	Classification string   `json:"classification"`
	Names          []string `json:"names"`
	Addresses      []string `json:"addresses"`
	Ports          []string `json:"ports"`
}

type inventoryGroup struct {
	Name    string              `json:"name"`
	Members []string            `json:"members"`
	Groups  []string            `json:"groups"`
	IdP     []policyfile.IdPRef `json:"idp"`
}

func (a *app) inventoryCmd() *cobra.Command {
	var out string
	export := &cobra.Command{
		Use:   "export [-o json|dot] [--out FILE]",
		Short: "Export the asset inventory and network map: devices, users, apps, segments, gateways and the allowed flows between them",
		Long: `Export every device, user, group, app, segment and gateway, and the
allowed flows between them: who (a user, an IdP group, a device tag) may
reach which app on which ports, through which rule and group, as
'cordonctl policy who-can' lists them for each app of the policy in force
(the active version, or the directory). A flow a deny rule overrides
names it.

-o json (the default) is the data; -o dot is a Graphviz diagram: segments
as boxes holding their apps and gateways, people and groups on the left,
allowed flows as arrows labelled with the rule and ports (red: overridden
by a deny rule), devices beside their users. Render it with
'dot -Tsvg map.dot > map.svg'.`,
		Example: `  cordonctl inventory export --out inventory.json
  cordonctl inventory export -o dot --out map.dot && dot -Tsvg map.dot > map.svg`,
		Annotations: map[string]string{outputsAnnotation: "dot"},
		Args:        args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			inv, err := a.inventory(cmd)
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if a.output == "dot" {
				writeDOT(&buf, inv)
			} else {
				b, err := json.MarshalIndent(inv, "", "  ")
				if err != nil {
					return err
				}
				buf.Write(append(b, '\n'))
			}
			return a.writeOut(out, buf.Bytes(), "inventory")
		}),
	}
	export.Flags().StringVar(&out, "out", "", "write to FILE (mode 0600) instead of stdout")
	return a.group("inventory", "Asset inventory and network map", export)
}

// inventory gathers the inventory from the controller.
func (a *app) inventory(cmd *cobra.Command) (*inventory, error) {
	ctx := cmd.Context()
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	exp, name, err := a.fetchPolicy(cmd)
	if err != nil {
		return nil, err
	}
	pol, err := policyfile.Parse(name, []byte(exp.Source))
	if err != nil {
		return nil, fmt.Errorf("the controller's policy (%s) does not parse: %w", name, err)
	}
	inv := &inventory{Generated: a.io.Now().UTC(), Policy: name, Segments: []inventorySegment{}, Apps: []inventoryApp{},
		Groups: []inventoryGroup{}, Flows: []policyfile.Entitlement{}}
	if inv.Users, err = c.ListUsers(ctx); err != nil {
		return nil, err
	}
	if inv.Devices, err = c.ListDevices(ctx); err != nil {
		return nil, err
	}
	if inv.Gateways, err = c.ListGateways(ctx); err != nil {
		return nil, err
	}
	for _, s := range pol.SegmentNames {
		seg := pol.Segments[s]
		inv.Segments = append(inv.Segments, inventorySegment{Name: s, Prefixes: strs(seg.Prefixes), Gateways: nonNilStrs(seg.Gateways)})
	}
	for _, g := range pol.GroupNames {
		grp := pol.Groups[g]
		inv.Groups = append(inv.Groups, inventoryGroup{Name: g, Members: nonNilStrs(grp.Members), Groups: nonNilStrs(grp.Groups),
			IdP: append([]policyfile.IdPRef{}, grp.IdP...)})
	}
	for _, name := range pol.AppNames {
		app := pol.Apps[name]
		ia := inventoryApp{Name: name, Segment: app.Segment, Classification: string(app.Classification),
			Names: nonNilStrs(app.Names), Addresses: strs(app.Addrs), Ports: strs(app.Services)}
		inv.Apps = append(inv.Apps, ia)
		es, err := pol.WhoCan(name)
		if err != nil {
			return nil, err
		}
		if es, err = a.whoCanByClaims(cmd, pol, name, es); err != nil {
			return nil, err
		}
		inv.Flows = append(inv.Flows, es...)
	}
	return inv, nil
}

func strs[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

func nonNilStrs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// dotID quotes s as a DOT ID: every byte but the quote and the backslash
// stands for itself inside quotes; newlines are escaped so a label keeps
// one line per value.
func dotID(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}

// viaNode is the graph node of an entitlement's Via: the rule subject,
// without the note on IdP claims whoCanByClaims adds.
func viaNode(via string) string {
	n, _, _ := strings.Cut(via, " (")
	return n
}

// writeDOT writes the inventory as a Graphviz digraph.
func writeDOT(w io.Writer, inv *inventory) {
	fmt.Fprintln(w, "// Cordon network map: "+strings.ReplaceAll(inv.Policy, "\n", " ")+", generated "+inv.Generated.Format(time.RFC3339))
	fmt.Fprintln(w, "digraph cordon {")
	fmt.Fprintln(w, `  rankdir=LR; compound=true; node [fontname="Helvetica", fontsize=10]; edge [fontname="Helvetica", fontsize=9];`)
	gwBySeg := map[string][]adminapi.Gateway{}
	for _, g := range inv.Gateways {
		gwBySeg[g.Segment] = append(gwBySeg[g.Segment], g)
	}
	for i, s := range inv.Segments {
		fmt.Fprintf(w, "  subgraph cluster_%d {\n    label=%s; style=rounded;\n", i, dotID("segment "+s.Name+"\n"+strings.Join(s.Prefixes, ", ")))
		for _, app := range inv.Apps {
			if app.Segment != s.Name {
				continue
			}
			fill := "#e8f0fe"
			if app.Classification == string(policyfile.ClassPHI) {
				fill = "#fde2e1"
			}
			fmt.Fprintf(w, "    %s [shape=box, style=filled, fillcolor=%s, label=%s];\n", dotID("app:"+app.Name), dotID(fill),
				dotID(app.Name+"\n"+app.Classification+"\n"+strings.Join(app.Ports, " ")))
		}
		for _, g := range gwBySeg[s.Name] {
			fmt.Fprintf(w, "    %s [shape=hexagon, label=%s];\n", dotID("gateway:"+g.ID), dotID("gateway "+g.Name+"\n"+g.OverlayAddr.String()))
		}
		fmt.Fprintln(w, "  }")
	}
	shape := func(node string) string {
		switch {
		case strings.HasPrefix(node, "group:"):
			return "folder"
		case strings.HasPrefix(node, "idp:"):
			return "note"
		case strings.HasPrefix(node, "tag:"):
			return "cds"
		}
		return "ellipse"
	}
	var nodes []string
	seen := map[string]bool{}
	node := func(n string) {
		if !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
	}
	type edge struct{ from, to, label string }
	var edges []edge
	edgeSeen := map[edge]bool{}
	addEdge := func(e edge) {
		if !edgeSeen[e] {
			edgeSeen[e] = true
			edges = append(edges, e)
		}
	}
	for _, f := range inv.Flows {
		via := viaNode(f.Via)
		node(f.Who)
		if via != f.Who {
			node(via)
			addEdge(edge{f.Who, via, "member"})
		}
		label := f.Rule + "\n" + f.Ports
		if f.Conditions != "" {
			label += "\n" + f.Conditions
		}
		if f.DeniedBy != "" {
			label += "\ndenied by " + f.DeniedBy
		}
		addEdge(edge{via, "app:" + f.App, label})
	}
	for _, u := range inv.Users {
		node("user:" + u.Name)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		fmt.Fprintf(w, "  %s [shape=%s];\n", dotID(n), shape(n))
	}
	for _, d := range inv.Devices {
		state := ""
		switch {
		case !d.RevokedAt.IsZero():
			state = "\nrevoked"
		case d.Quarantine != nil:
			state = "\nquarantined"
		}
		fmt.Fprintf(w, "  %s [shape=component, label=%s];\n", dotID("device:"+d.ID), dotID(d.ID+"\n"+d.Hostname+"\n"+d.OverlayAddr.String()+state))
		fmt.Fprintf(w, "  %s -> %s [style=dotted, arrowhead=none];\n", dotID("device:"+d.ID), dotID("user:"+d.User))
	}
	for _, e := range edges {
		attrs := "label=" + dotID(e.label)
		switch {
		case e.label == "member":
			attrs += ", style=dashed"
		case strings.Contains(e.label, "\ndenied by "):
			attrs += ", color=red, fontcolor=red"
		}
		fmt.Fprintf(w, "  %s -> %s [%s];\n", dotID(e.from), dotID(e.to), attrs)
	}
	fmt.Fprintln(w, "}")
}
