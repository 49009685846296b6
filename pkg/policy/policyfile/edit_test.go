package policyfile

import (
	"os"
	"strings"
	"testing"
)

// TestAppendDenies: the deny rules an access review adds take exactly the
// entitlement named (alice to ehr; pharmacy narrowed to one port), keep
// everything else of the file, and the result parses.
func TestAppendDenies(t *testing.T) {
	src, err := os.ReadFile("testdata/hospital.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := AppendDenies(src, []DenyRule{
		{Name: "review-r1-1", Description: "access review r1 line 1", From: "user:alice", App: "ehr"},
		{Name: "review-r1-2", From: "user:erin", App: "pharmacy", Ports: []string{"tcp/8443"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "# St. Example Hospital") {
		t.Error("the file's comments were lost")
	}
	pol, err := Parse("hospital.yaml", out)
	if err != nil {
		t.Fatalf("the edited file does not parse: %v\n%s", err, out)
	}
	before, err := Parse("hospital.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	denied := func(p *Policy, user, app string) string {
		for _, e := range p.Access(user, nil, nil) {
			if e.App == app {
				return e.DeniedBy
			}
		}
		return "no entitlement"
	}
	for _, tc := range []struct{ user, app, want string }{
		{"alice", "ehr", "review-r1-1"},
		{"erin", "pharmacy", "review-r1-2"},
		{"bob", "ehr", ""}, // alice's group mate keeps it
	} {
		if got := denied(pol, tc.user, tc.app); got != tc.want {
			t.Errorf("%s → %s denied by %q, want %q", tc.user, tc.app, got, tc.want)
		}
		if got := denied(before, tc.user, tc.app); got != "" {
			t.Errorf("before the edit, %s → %s denied by %q", tc.user, tc.app, got)
		}
	}
	if len(pol.Denies) != len(before.Denies)+2 {
		t.Errorf("%d deny rules, want %d", len(pol.Denies), len(before.Denies)+2)
	}
	for _, bad := range []string{"- a\n- b\n", "version: 1\ndeny: nope\n", "{"} {
		if _, err := AppendDenies([]byte(bad), []DenyRule{{Name: "x", From: "user:a", App: "b"}}); err == nil {
			t.Errorf("AppendDenies(%q) succeeded", bad)
		}
	}
}
