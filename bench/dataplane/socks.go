package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// socks5Connect asks the SOCKS5 proxy on conn (RFC 1928, no
// authentication) for a TCP connection to addr, an IP:port, and returns
// when the proxy has it. The Cordon client's userspace mode offers only
// this proxy.
func socks5Connect(ctx context.Context, conn net.Conn, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("socks5: want an IPv4 address:port, got %q", addr)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte{5, 1, 0}); err != nil {
		return fmt.Errorf("socks5 greeting: %w", err)
	}
	var reply [2]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return fmt.Errorf("socks5 greeting reply: %w", err)
	}
	if reply[0] != 5 || reply[1] != 0 {
		return fmt.Errorf("socks5: proxy wants method %d, not 'no authentication'", reply[1])
	}
	req := []byte{5, 1, 0, 1}
	a4 := ap.Addr().As4()
	req = append(req, a4[:]...)
	req = binary.BigEndian.AppendUint16(req, ap.Port())
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("socks5 connect: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return fmt.Errorf("socks5 connect reply: %w", err)
	}
	if head[0] != 5 {
		return errors.New("socks5 connect reply: not SOCKS version 5")
	}
	if head[1] != 0 {
		return fmt.Errorf("socks5 connect to %s refused, reply code %d", addr, head[1])
	}
	var rest int
	switch head[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return fmt.Errorf("socks5 connect reply: %w", err)
		}
		rest = int(l[0]) + 2
	default:
		return fmt.Errorf("socks5 connect reply: address type %d", head[3])
	}
	if _, err := io.ReadFull(conn, make([]byte, rest)); err != nil {
		return fmt.Errorf("socks5 connect reply: %w", err)
	}
	return nil
}
