package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/netstack"
	"github.com/cordonhq/cordon/pkg/policy"
)

// dnsServices admits DNS queries from every known device to the gateway's
// own overlay address, whatever its rules: the DNS server decides what each
// device may see.
func dnsServices(overlay netip.Addr) []flow.LocalService {
	return []flow.LocalService{
		{Name: "dns", Addr: overlay, Proto: policy.ProtoUDP, Port: dns.Port},
		{Name: "dns", Addr: overlay, Proto: policy.ProtoTCP, Port: dns.Port},
	}
}

// startDNS serves split-horizon DNS on the overlay address: in userspace
// mode on the netstack, in tun mode on the host (the tun device holds the
// address, so only packets the authorizer let through reach the socket).
//
// In tun mode the sockets are also bound to the tun interface (bindDev):
// the host accepts a packet for any of its addresses on any interface, and
// the DNS server must answer the overlay only, never the WAN.
func startDNS(dev tun.Device, authz *flow.Authorizer, overlay netip.Addr, bindDev string, events chan<- controlproto.FlowEvent, log *slog.Logger) (*dns.Server, error) {
	srv, err := dns.New(dns.Config{
		Addr:   overlay,
		Policy: func() dns.Decider { return authz.Policy() },
		Events: events,
		Logger: log.With("component", "dns"),
	})
	if err != nil {
		return nil, err
	}
	lc := &net.ListenConfig{}
	if bindDev != "" {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, bindDev)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind the DNS socket to %s: %w", bindDev, serr)
			}
			return nil
		}
	}
	listenUDP := func(ap netip.AddrPort) (net.PacketConn, error) {
		return lc.ListenPacket(context.Background(), "udp", ap.String())
	}
	listenTCP := func(ap netip.AddrPort) (net.Listener, error) {
		return lc.Listen(context.Background(), "tcp", ap.String())
	}
	if ns, ok := dev.(*netstack.Stack); ok {
		listenUDP, listenTCP = ns.ListenUDP, ns.ListenTCP
	}
	if err := srv.Listen(context.Background(), overlay, listenUDP, listenTCP); err != nil {
		srv.Close()
		return nil, fmt.Errorf("serve dns on %s:%d (tun mode needs CAP_NET_BIND_SERVICE for port 53): %w", overlay, dns.Port, err)
	}
	log.Info("dns listening", "addr", netip.AddrPortFrom(overlay, dns.Port))
	return srv, nil
}
