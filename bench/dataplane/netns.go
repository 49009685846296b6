package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// netNS is a named network namespace (/var/run/netns/<name>).
type netNS string

// do runs fn on an OS thread switched into the namespace. Sockets fn
// creates stay in the namespace after the thread switches back.
func (n netNS) do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open this thread's netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + string(n))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", n, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime retires it with this
		// goroutine instead of running other code in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("return from netns %s: %w", n, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// dial connects from inside the namespace.
func (n netNS) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// socksDial returns a dialFunc that connects through the SOCKS5 proxy at
// proxy, reached from inside the namespace.
func (n netNS) socksDial(proxy string) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network != "tcp" {
			return nil, fmt.Errorf("socks5: %s is not proxied (CONNECT only)", network)
		}
		c, err := n.dial(ctx, "tcp", proxy)
		if err != nil {
			return nil, fmt.Errorf("dial the socks5 proxy %s: %w", proxy, err)
		}
		if err := socks5Connect(ctx, c, addr); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// listen opens TCP and UDP sockets on addr inside the namespace.
func (n netNS) listen(addr string) (net.Listener, net.PacketConn, error) {
	var l net.Listener
	var p net.PacketConn
	err := n.do(func() error {
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		if p, err = net.ListenPacket("udp", addr); err != nil {
			l.Close()
			return err
		}
		return nil
	})
	return l, p, err
}
