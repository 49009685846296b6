package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// netNS is a named network namespace (/var/run/netns/<name>).
type netNS struct{ name string }

// do runs fn on an OS thread switched into the namespace. Sockets fn creates
// stay in the namespace after the thread switches back.
func (n netNS) do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", n.name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime retires it with this
		// goroutine instead of running other code in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("return from netns %s: %w", n.name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// dial opens a connection from inside the namespace.
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

// dialTimeout dials with a timeout from inside the namespace.
func (n netNS) dialTimeout(network, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.dial(ctx, network, addr)
}

// listen opens a listener inside the namespace.
func (n netNS) listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// httpClient returns a client whose connections start inside the namespace,
// one fresh TCP connection per request (every request is a new flow for the
// gateway to authorize).
func (n netNS) httpClient(dialTimeout, timeout time.Duration, tlsConf *tls.Config) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			return n.dial(ctx, network, addr)
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	if tlsConf != nil {
		tr.TLSClientConfig = tlsConf
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}
