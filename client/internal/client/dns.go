package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/client/internal/sysdns"
)

// startStub serves the DNS stub on the device's overlay address (port 53)
// in tun mode and prepares the system's DNS settings; they change once the
// first map says which zones are internal.
func (t *tunnel) startStub(overlay netip.Addr) error {
	t.stub = dnsstub.New(dnsstub.Config{Tunnel: &net.Dialer{}, Logger: t.log.With("component", "dns")})
	ap := netip.AddrPortFrom(overlay, 53).String()
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(context.Background(), "udp", ap)
	if err != nil {
		return fmt.Errorf("dns stub: listen on %s/udp (port 53 needs root or CAP_NET_BIND_SERVICE): %w", ap, err)
	}
	ln, err := lc.Listen(context.Background(), "tcp", ap)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns stub: listen on %s/tcp: %w", ap, err)
	}
	t.stub.Serve(pc, ln)
	sys, err := sysdns.New(sysdns.Config{
		Mode: t.cfg.DNS, Interface: t.cfg.Interface, Stub: overlay, StateDir: t.cfg.StateDir,
		ResolvConf: t.cfg.ResolvConf, Logger: t.log.With("component", "sysdns"),
	})
	if err != nil {
		return err
	}
	t.sys = sys
	t.stub.SetUpstream(sys.Upstream())
	t.log.Info("dns stub listening", "addr", ap, "mode", t.cfg.DNS)
	return nil
}
