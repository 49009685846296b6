package policyfile

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// WithMembers gives what FromDirectory gives for the new members, for
// random directories and random member changes, and leaves its input as
// it was.
func TestWithMembersMatchesFromDirectory(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	users := func() []string {
		var out []string
		for range r.IntN(8) {
			out = append(out, fmt.Sprintf("u%d", r.IntN(12)))
		}
		return out
	}
	build := func(members map[string][]string) *Policy {
		var groups []*Group
		for _, g := range slices.Sorted(maps.Keys(members)) {
			groups = append(groups, &Group{Name: g, Members: members[g]})
		}
		return FromDirectory(groups, nil, nil, []DirectoryRule{{Name: "r", Group: "g0", App: "a"}})
	}
	for round := range 500 {
		members := map[string][]string{}
		for i := range 1 + r.IntN(5) {
			members[fmt.Sprintf("g%d", i)] = users()
		}
		pol := build(members)
		before := build(members)
		change := map[string][]string{}
		next := map[string][]string{}
		for g, m := range members {
			next[g] = m
			if r.IntN(2) == 0 {
				change[g] = users()
				next[g] = change[g]
			}
		}
		got, ok := pol.WithMembers(change)
		if !ok {
			t.Fatalf("round %d: refused a plain directory", round)
		}
		want := build(next)
		for name, pair := range map[string][2]any{
			"groupUsers": {got.groupUsers, want.groupUsers},
			"userGroups": {got.userGroups, want.userGroups},
			"groupIdP":   {got.groupIdP, want.groupIdP},
		} {
			if !reflect.DeepEqual(pair[0], pair[1]) {
				t.Fatalf("round %d, change %v: %s\n got %v\nwant %v", round, change, name, pair[0], pair[1])
			}
		}
		for g := range next {
			if !slices.Equal(got.Groups[g].Members, want.Groups[g].Members) {
				t.Fatalf("round %d: group %s members %v, want %v", round, g, got.Groups[g].Members, want.Groups[g].Members)
			}
		}
		for u := range 12 {
			user := fmt.Sprintf("u%d", u)
			if g, w := got.GroupsOf(user, nil), want.GroupsOf(user, nil); !slices.Equal(g, w) {
				t.Fatalf("round %d: GroupsOf(%s) = %v, want %v", round, user, g, w)
			}
		}
		if !reflect.DeepEqual(pol.groupUsers, before.groupUsers) || !reflect.DeepEqual(pol.userGroups, before.userGroups) {
			t.Fatalf("round %d: WithMembers changed its input", round)
		}
	}
	// Groups it cannot patch alone.
	pol := FromDirectory([]*Group{{Name: "g"}}, nil, nil, nil)
	if _, ok := pol.WithMembers(map[string][]string{"nope": {"u"}}); ok {
		t.Error("a group not in the policy was patched")
	}
	nested := &Policy{Groups: map[string]*Group{"a": {Name: "a", Groups: []string{"b"}}, "b": {Name: "b"}}}
	if _, ok := nested.WithMembers(map[string][]string{"b": {"u"}}); ok {
		t.Error("a group inside another was patched alone")
	}
}
