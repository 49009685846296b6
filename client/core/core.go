// Package core is the Cordon client as a library that a mobile or desktop
// shell embeds: the shell configures it, signs the user in, hands it the
// TUN file descriptor its OS gave (Android VpnService, iOS
// NEPacketTunnelProvider) or asks for userspace mode, and learns what
// happens through Events. The logic stays in client/internal/client; this
// package only adapts it to an API that gomobile can bind: every exported
// function, method, field and interface method uses only string, bool,
// int, int32, int64, float64, []byte, error, and the interfaces and struct
// pointers of this package (TestBindableAPI checks it; structured data
// travels as JSON strings). docs/clients.md shows the calls in order.
//
// A Client owns one goroutine for event delivery (from New to Close) and,
// while the tunnel runs, the tunnel's (from StartTUN or StartUserspace to
// Stop, Close, the controller ending the session, or 'cordon down').
//
//	New ──► Configure ──► SignIn / SignInOIDC ──► SetPosture ──► StartTUN ──► Stop ──► Close
//	                                                             StartUserspace
package core

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/sysdns"
	"github.com/cordonhq/cordon/internal/buildinfo"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/privdir"
)

// MTU is the tunnel's MTU: the shell sets it on the TUN device it opens.
const MTU = client.MTU

// signInTimeout bounds a password sign-in; an OIDC sign-in waits for the
// browser (oidcflow.BrowserTimeout) on top.
const signInTimeout = 30 * time.Second

// caFileName is where Configure keeps the controller CA the shell gave, in
// the state directory.
const caFileName = "controller-ca.pem"

// ErrRunning is returned by StartTUN and StartUserspace while the tunnel
// runs: Stop it first.
var ErrRunning = errors.New("the tunnel is already running: call Stop first")

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("the client core is closed: make a new one with core.New")

// Client is one device's Cordon client (Java core.Client, Objective-C
// CoreClient). Its methods may be called from any thread; the sign-in
// calls block (call them off the UI thread).
type Client struct {
	stateDir string
	log      *slog.Logger
	ev       *dispatcher

	ctx    context.Context // Close cancels it
	cancel context.CancelCauseFunc

	facts atomic.Pointer[[]byte] // posture facts from the shell (SetPosture)

	mu         sync.Mutex
	closed     bool
	controller string // Configure; "": the last one this device signed in with
	caFile     string
	run        *run        // the running tunnel; nil: none
	handback   chan string // the OIDC sign-in waiting for its redirect (OIDCRedirect)
}

// run is one tunnel run.
type run struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// errStopped is the cause of a tunnel stopped by Stop or Close.
var errStopped = errors.New("stopped by the app")

// New makes the core for the device whose state (keys, enrollment, the
// local control socket) lives in stateDir, a directory the shell names and
// only this app can read (it is created 0700 if missing). events receives
// what happens (nil: nothing is sent); logs receives the log lines (nil:
// none).
func New(stateDir string, events Events, logs LogSink) (*Client, error) {
	if stateDir == "" {
		return nil, errors.New("no state directory given: pass a directory only this app can read (e.g. the app's files directory)")
	}
	log := slog.New(newLogHandler(logs, slog.LevelInfo))
	if err := privdir.Ensure(stateDir, log); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Client{stateDir: stateDir, log: log, ctx: ctx, cancel: cancel, ev: newDispatcher(events)}
	return c, nil
}

// Configure names the controller (https://HOST:PORT) and the CA that
// signed its certificate (PEM, as the hospital's IT department gives it).
// Needed before the first sign-in only: later sign-ins default to the
// controller and CA of the last one.
func (c *Client) Configure(controllerURL string, caPEM []byte) error {
	if controllerURL == "" {
		return errors.New("no controller URL given: pass https://HOST:PORT")
	}
	if err := checkCA(caPEM); err != nil {
		return err
	}
	path := filepath.Join(c.stateDir, caFileName)
	if err := os.WriteFile(path, caPEM, 0o600); err != nil {
		return fmt.Errorf("keep the controller CA: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.controller, c.caFile = controllerURL, path
	return nil
}

// checkCA checks that b holds at least one PEM certificate and nothing
// else.
func checkCA(b []byte) error {
	n := 0
	for len(b) > 0 {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("controller CA: a PEM block of type %q: want only CERTIFICATE blocks", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("controller CA: %w", err)
		}
		n++
	}
	if n == 0 {
		return errors.New("controller CA: no PEM certificate found: pass the controller's ca.pem as given by your IT department")
	}
	return nil
}

// config returns the controller and CA file Configure set.
func (c *Client) config() (controller, caFile string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", "", ErrClosed
	}
	return c.controller, c.caFile, nil
}

// SignIn signs user in with password and the code of the authenticator
// app (totp), and enrolls this device: its keys are made here and only
// their public halves leave it. Blocks up to 30 s.
func (c *Client) SignIn(user, password, totp string) error {
	controller, caFile, err := c.config()
	if err != nil {
		return err
	}
	if totp == "" {
		return errors.New("no authenticator code given: ask the user for the 6-digit code")
	}
	ctx, cancel := context.WithTimeout(c.ctx, signInTimeout)
	defer cancel()
	e, err := client.Login(ctx, client.LoginConfig{
		StateDir: c.stateDir, Controller: controller, CACert: caFile, User: user, Password: password, TOTP: totp,
	})
	if err != nil {
		return err
	}
	c.log.Info("signed in", "user", e.User, "device", e.ID, "overlay_addr", e.OverlayAddr)
	return nil
}

// SignInOIDC signs the user in through the identity provider idp (a name
// the controller offers) and enrolls this device. It calls
// browser.OpenURL with the provider's sign-in page: the shell opens it in
// the system browser (Custom Tabs, ASWebAuthenticationSession). The
// provider redirects to http://127.0.0.1:PORT/callback; the core listens
// there, or the shell that caught the redirect itself hands it over with
// OIDCRedirect. Blocks until the sign-in completes, fails or times out
// (5 minutes).
func (c *Client) SignInOIDC(idp string, browser URLOpener) error {
	if browser == nil {
		return errors.New("no browser given: pass a URLOpener that opens the system browser")
	}
	handback := make(chan string)
	c.mu.Lock()
	controller, caFile := c.controller, c.caFile
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.handback != nil {
		c.mu.Unlock()
		return errors.New("a sign-in through the identity provider is already waiting for the browser")
	}
	c.handback = handback
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.handback = nil
		c.mu.Unlock()
	}()
	var answer *controlproto.EnrollResponse
	ctx, cancel := context.WithTimeout(c.ctx, 16*time.Minute) // the browser's wait has its own, shorter limit
	defer cancel()
	e, err := client.LoginOIDC(ctx, client.OIDCLoginConfig{
		StateDir: c.stateDir, Controller: controller, CACert: caFile, IdP: idp,
		Browser:  func(_ context.Context, url string) error { return browser.OpenURL(url) },
		Handback: handback,
		Answer:   func(r *controlproto.EnrollResponse) { answer = r },
	})
	if err != nil {
		return err
	}
	c.log.Info("signed in", "user", e.User, "device", e.ID, "overlay_addr", e.OverlayAddr)
	if answer != nil && answer.NoMFA != nil {
		c.ev.send(KindNoMFA, answer.NoMFA)
	}
	return nil
}

// OIDCRedirect hands the core the redirect URL (http://127.0.0.1:PORT/
// callback?code=...&state=...) that the shell's browser session caught,
// for the SignInOIDC waiting for it. It is checked as the core's own
// listener checks it (the state must match).
func (c *Client) OIDCRedirect(redirectURL string) error {
	c.mu.Lock()
	h := c.handback
	c.mu.Unlock()
	if h == nil {
		return errors.New("no sign-in is waiting for a redirect: call SignInOIDC first")
	}
	select {
	case h <- redirectURL:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("the sign-in did not take the redirect: it may have ended; check the SignInOIDC result")
	}
}

// SignOut ends this device's session at the controller: every gateway
// drops it at once, and a running tunnel reaches nothing until the next
// sign-in. It reports whether a session was active.
func (c *Client) SignOut() (bool, error) {
	if _, _, err := c.config(); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, signInTimeout)
	defer cancel()
	return client.Logout(ctx, c.stateDir)
}

// SetPosture gives the core the posture facts only the OS shell knows, as
// JSON with any of the report's fields (docs/clients.md): "os",
// "os_version", "os_name", "disk_encryption", "screen_lock", "firewall",
// "integrity" (rooted or jailbroken: state "no"), each check as
// {"state":"yes|no|unknown","detail":"..."}. They override what the core
// collects itself and are reported, as everything in posture, as
// self-reported. A running tunnel sends them at its next collection. An
// empty string clears them. Bad JSON, an unknown field or a value the
// controller would refuse is an error, and the facts before stay.
func (c *Client) SetPosture(factsJSON string) error {
	if factsJSON == "" {
		c.facts.Store(nil)
		return nil
	}
	b := []byte(factsJSON)
	if err := client.CheckPostureFacts(b, time.Now()); err != nil {
		return err
	}
	c.facts.Store(&b)
	return nil
}

func (c *Client) postureFacts() []byte {
	if p := c.facts.Load(); p != nil {
		return *p
	}
	return nil
}

// Who configures the host's network around the TUN device (StartTUN).
const (
	// NetworkOS: the OS configured the interface's address, routes and
	// DNS when it gave the descriptor (Android's VpnService.Builder, iOS's
	// NEPacketTunnelNetworkSettings); the core changes nothing else on the
	// host. The routes to set are the gateways' allowed_ips in the status;
	// the DNS server is the overlay address.
	NetworkOS = "os"
	// NetworkCore: the core configures the address, routes (in a table
	// of their own, docs/security.md) and the system's DNS, as
	// 'cordon up' does (Linux desktop, as root).
	NetworkCore = "core"
	// NetworkCoreNoDNS: as NetworkCore, but the system's DNS settings
	// stay as they are (the DNS stub serves on the overlay address), as
	// 'cordon up --dns none'.
	NetworkCoreNoDNS = "core-no-dns"
)

// StartTUN brings the tunnel up on the TUN device whose file descriptor
// fd the shell opened (with MTU). The core owns fd from then on and closes
// it when the tunnel stops, even when StartTUN fails. network says who
// configures the host around it: NetworkOS, NetworkCore or
// NetworkCoreNoDNS. It returns once the tunnel is starting; Events tells
// the rest (KindTunnel when it stops, and why).
func (c *Client) StartTUN(fd int, network string) error {
	cfg := client.UpConfig{Mode: client.ModeTUN}
	switch network {
	case NetworkOS:
		cfg.ShellNetwork = true
	case NetworkCore:
		cfg.DNS = sysdns.ModeAuto
	case NetworkCoreNoDNS:
		cfg.DNS = sysdns.ModeNone
	default:
		if fd >= 0 {
			unix.Close(fd) // owned from the call on
		}
		return fmt.Errorf("network %q: want %q (the OS configured it), %q or %q", network, NetworkOS, NetworkCore, NetworkCoreNoDNS)
	}
	dev, err := tunFromFD(fd, cfg.ShellNetwork)
	if err != nil {
		return err
	}
	cfg.TUN = dev
	return c.start(cfg)
}

// StartUserspace brings the tunnel up with no TUN device and no
// privileges: apps reach the hospital through the local SOCKS5 and HTTP
// proxies at socksAddr and httpAddr (HOST:PORT on loopback; empty turns
// one off).
func (c *Client) StartUserspace(socksAddr, httpAddr string) error {
	return c.start(client.UpConfig{Mode: client.ModeUserspace, Interface: "cordon0", SOCKSAddr: socksAddr, HTTPAddr: httpAddr})
}

func (c *Client) start(cfg client.UpConfig) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.run != nil {
		if cfg.TUN != nil {
			cfg.TUN.Close() // owned from the call on
		}
		if c.closed {
			return ErrClosed
		}
		return ErrRunning
	}
	cfg.StateDir, cfg.Version, cfg.Logger = c.stateDir, buildinfo.Version(), c.log
	cfg.PostureFacts = c.postureFacts
	cfg.OnStatus = c.ev.status
	ctx, cancel := context.WithCancelCause(c.ctx)
	r := &run{cancel: cancel, done: make(chan struct{})}
	c.run = r
	c.ev.send(KindTunnel, tunnelEvent{State: "starting", Mode: cfg.Mode})
	go func() {
		defer close(r.done)
		err := client.Up(ctx, cfg)
		ev := tunnelEvent{State: "stopped", Mode: cfg.Mode}
		if err != nil && !errors.Is(context.Cause(ctx), errStopped) {
			ev.Error = err.Error()
			c.log.Warn("tunnel stopped", "err", err)
		}
		c.ev.send(KindTunnel, ev)
		c.mu.Lock()
		if c.run == r {
			c.run = nil
		}
		c.mu.Unlock()
	}()
	return nil
}

// Stop brings the tunnel down and returns once it is: routes (when the
// core set them) and the TUN device are gone. Without a running tunnel it
// does nothing.
func (c *Client) Stop() {
	c.mu.Lock()
	r := c.run
	c.mu.Unlock()
	if r == nil {
		return
	}
	r.cancel(errStopped)
	<-r.done
}

// Running reports whether the tunnel runs in this core.
func (c *Client) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.run != nil
}

// Status is the tunnel's status as JSON, the same document as
// 'cordon status -o json': the device, the session, each gateway and each
// app with whether it is reachable now and why. An error when no tunnel
// runs for the state directory (in this process or another).
func (c *Client) Status() (string, error) {
	s, err := client.GetStatus(c.stateDir)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode status: %w", err)
	}
	return string(b), nil
}

// Close stops the tunnel and waits for it, makes a sign-in in flight
// return, and stops event delivery. Further calls fail with ErrClosed;
// Close again does nothing.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.Stop()
	c.cancel(ErrClosed)
	c.ev.close()
}
