// Package nat installs the gateway's nftables rules for the tun data-plane
// mode through netlink (github.com/google/nftables, no shelling out): flows
// from client overlay addresses leaving toward the app subnet are
// masqueraded, so apps need no route back to the overlay, and forwarding
// between the tun device and the app subnet is accepted. The rules live in
// one table of their own ("cordon"), replaced whole on Install and removed on
// Close, so they never mix with the host's own rules.
package nat

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TableName is the nftables table Cordon owns.
const TableName = "cordon"

// NAT is an installed rule set.
type NAT struct {
	conn  *nftables.Conn
	table *nftables.Table
	once  sync.Once
	err   error
}

// Install replaces the cordon table with rules for tunIface and overlay.
func Install(tunIface string, overlay netip.Prefix) (*NAT, error) {
	if !overlay.Addr().Is4() {
		return nil, fmt.Errorf("nat: overlay prefix %s is not IPv4", overlay)
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	// Replace any table a crashed earlier run left behind: add (no-op if it
	// exists), delete, and add again in one batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	name := ifname(tunIface)
	masked := overlay.Masked()
	maskBytes := prefixMask(overlay.Bits())
	netBytes := masked.Addr().As4()

	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: name},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskBytes[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netBytes[:]},
		&expr.Masq{},
	}})

	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("install nftables rules: %w", err)
	}
	return &NAT{conn: c, table: t}, nil
}

// Close removes the cordon table. Further calls return the first result.
func (n *NAT) Close() error {
	n.once.Do(func() {
		n.conn.DelTable(n.table)
		if err := n.conn.Flush(); err != nil {
			n.err = fmt.Errorf("remove nftables rules: %w", err)
		}
	})
	return n.err
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func prefixMask(bits int) [4]byte {
	var m [4]byte
	for i := range 4 {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}
