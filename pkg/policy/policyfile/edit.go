package policyfile

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// DenyRule is a deny rule [AppendDenies] adds to a policy file: From (a
// subject, "user:alice" or "tag:kiosk") may no longer reach App, on
// Ports only when given (services as the file writes them, "tcp/443"),
// else on any port.
type DenyRule struct {
	Name        string
	Description string
	From        string
	App         string
	Ports       []string
}

// AppendDenies returns src with rules appended to its deny list (which it
// creates if the file has none); everything else, comments included, is
// kept, though the YAML is re-indented. It is how an access review takes
// an entitlement away in a policy file: a deny rule overrides every allow
// rule, so the entitlement ends whatever grants it. The result is not
// checked: Validate it before use.
func AppendDenies(src []byte, rules []DenyRule) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("read the policy file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the policy file is not a YAML mapping")
	}
	root := doc.Content[0]
	var deny *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "deny" {
			deny = root.Content[i+1]
		}
	}
	if deny == nil {
		deny = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, scalar("deny"), deny)
	}
	if deny.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("the policy file's deny is not a list")
	}
	for _, r := range rules {
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		m.Content = append(m.Content, scalar("name"), scalar(r.Name))
		if r.Description != "" {
			m.Content = append(m.Content, scalar("description"), scalar(r.Description))
		}
		m.Content = append(m.Content, scalar("from"), flowSeq(r.From), scalar("to"), flowSeq("app:"+r.App))
		if len(r.Ports) > 0 {
			m.Content = append(m.Content, scalar("ports"), flowSeq(r.Ports...))
		}
		deny.Content = append(deny.Content, m)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("write the policy file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write the policy file: %w", err)
	}
	return b.Bytes(), nil
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

func flowSeq(vs ...string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for _, v := range vs {
		n.Content = append(n.Content, scalar(v))
	}
	return n
}
