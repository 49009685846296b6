package nat_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/cordonhq/cordon/internal/netnstest"

	"github.com/cordonhq/cordon/gateway/internal/nat"
)

func inNewNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	return netnstest.Enter(t, "creates a network namespace and installs nftables rules in it")
}

func conn(t *testing.T, ns netns.NsHandle) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cordonTables returns the tables named nat.TableName, of any family.
func cordonTables(t *testing.T, c *nftables.Conn) []*nftables.Table {
	t.Helper()
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []*nftables.Table
	for _, tb := range tables {
		if tb.Name == nat.TableName {
			out = append(out, tb)
		}
	}
	return out
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// checkInstalled verifies the cordon table holds exactly the expected
// chains and rules for iface and overlay.
func checkInstalled(t *testing.T, c *nftables.Conn, iface string, overlay netip.Prefix) {
	t.Helper()
	tables := cordonTables(t, c)
	if len(tables) != 1 || tables[0].Family != nftables.TableFamilyIPv4 {
		t.Fatalf("cordon tables: %+v, want one IPv4 table", tables)
	}
	table := tables[0]
	all, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range all {
		if ch.Table.Name == nat.TableName {
			chains[ch.Name] = ch
		}
	}
	if len(chains) != 2 || chains["postrouting"] == nil || chains["forward"] == nil {
		t.Fatalf("chains in the cordon table: %v, want postrouting and forward", slices.Collect(func(yield func(string) bool) {
			for n := range chains {
				if !yield(n) {
					return
				}
			}
		}))
	}
	post, fwd := chains["postrouting"], chains["forward"]
	if post.Type != nftables.ChainTypeNAT || post.Hooknum == nil || *post.Hooknum != *nftables.ChainHookPostrouting ||
		post.Priority == nil || *post.Priority != *nftables.ChainPriorityNATSource {
		t.Errorf("postrouting chain: type %q hook %v priority %v", post.Type, deref(post.Hooknum), deref(post.Priority))
	}
	if fwd.Type != nftables.ChainTypeFilter || fwd.Hooknum == nil || *fwd.Hooknum != *nftables.ChainHookForward ||
		fwd.Policy == nil || *fwd.Policy != nftables.ChainPolicyAccept {
		t.Errorf("forward chain: type %q hook %v policy %v", fwd.Type, deref(fwd.Hooknum), deref(fwd.Policy))
	}

	mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), overlay.Bits()).Masked().Addr().As4()
	if overlay.Bits() == 0 {
		mask = [4]byte{}
	}
	network := overlay.Masked().Addr().As4()
	rules, err := c.GetRules(table, post)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 {
		t.Fatalf("postrouting has %d rules, want 1", len(rules))
	}
	// Masquerade what comes from the overlay and does not leave by the tun.
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(iface)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network[:]},
		&expr.Masq{},
	}
	if !reflect.DeepEqual(rules[0].Exprs, want) {
		t.Errorf("postrouting rule:\n got %s\nwant %s", dump(rules[0].Exprs), dump(want))
	}

	rules, err = c.GetRules(table, fwd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 {
		t.Fatalf("forward has %d rules, want 2", len(rules))
	}
	for i, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		want := []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(iface)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
		if !reflect.DeepEqual(rules[i].Exprs, want) {
			t.Errorf("forward rule %d:\n got %s\nwant %s", i, dump(rules[i].Exprs), dump(want))
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func dump(es []expr.Any) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("\n\t%#v", e)
	}
	return s
}

func TestInstall(t *testing.T) {
	tests := []struct {
		name    string
		iface   string
		overlay netip.Prefix
	}{
		{"rfc6598 /10", "cordon0", netip.MustParsePrefix("100.64.0.0/10")},
		{"unmasked /24", "wg-gw", netip.MustParsePrefix("100.64.3.7/24")},
		{"odd bits /13", "tun1", netip.MustParsePrefix("10.8.0.0/13")},
		{"one host", "t", netip.MustParsePrefix("100.64.0.9/32")},
		{"15-byte name", "cordon-gateway0", netip.MustParsePrefix("100.64.0.0/10")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := inNewNetns(t)
			c := conn(t, ns)
			if got := cordonTables(t, c); len(got) != 0 {
				t.Fatalf("fresh namespace already has a cordon table")
			}
			n, err := nat.Install(tt.iface, tt.overlay)
			if err != nil {
				t.Fatal(err)
			}
			checkInstalled(t, c, tt.iface, tt.overlay)
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if got := cordonTables(t, c); len(got) != 0 {
				t.Errorf("Close left %d cordon tables", len(got))
			}
		})
	}
}

// Installing again (a restart, or a crashed run's leftovers) replaces the
// table whole: no duplicate rules, no stale chains, the host's own tables
// untouched.
func TestInstallReplaces(t *testing.T) {
	ns := inNewNetns(t)
	c := conn(t, ns)
	overlay := netip.MustParsePrefix("100.64.0.0/10")

	// The host's own table, which must survive everything below.
	host := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
	c.AddChain(&nftables.Chain{Name: "input", Table: host, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	// A crashed earlier run's cordon table with a chain Install never makes.
	stale := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nat.TableName})
	c.AddChain(&nftables.Chain{Name: "leftover", Table: stale})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	if _, err := nat.Install("old0", overlay); err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, c, "old0", overlay)
	second, err := nat.Install("cordon0", overlay)
	if err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, c, "cordon0", overlay)

	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if got := cordonTables(t, c); len(got) != 0 {
		t.Fatalf("Close left %d cordon tables", len(got))
	}
	if _, err := c.ListTableOfFamily("filter", nftables.TableFamilyIPv4); err != nil {
		t.Errorf("the host's own table is gone: %v", err)
	}
}

func TestInstallRejectsIPv6(t *testing.T) {
	ns := inNewNetns(t)
	if n, err := nat.Install("cordon0", netip.MustParsePrefix("fd7a:115c:a1e0::/48")); err == nil {
		n.Close()
		t.Fatal("Install accepted an IPv6 overlay")
	}
	if got := cordonTables(t, conn(t, ns)); len(got) != 0 {
		t.Errorf("a rejected Install left %d cordon tables", len(got))
	}
}
