// Package proxy is the client's local proxy for userspace mode: a SOCKS5
// (RFC 1928) or HTTP proxy on loopback that lets a browser or curl reach the
// apps behind Cordon without admin rights.
//
// Names are resolved only through the client's Resolver, which knows the
// entitled app names from the network map. A name it does not know is
// refused with a message saying so; it is never sent to the system resolver,
// so internal names do not leak. IP literals go straight to the tunnel.
//
// One Server serves one protocol on one listener; the client runs one of
// each (DefaultSOCKSAddr, DefaultHTTPAddr).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/client/internal/reach"
)

// Default listen addresses.
const (
	DefaultSOCKSAddr = "127.0.0.1:1080"
	DefaultHTTPAddr  = "127.0.0.1:8080"
)

// Dialer opens connections through the tunnel. *netstack.Stack satisfies
// it. addr is always an IP literal and port.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Resolver maps an entitled app name (lower case, no trailing dot) to its
// address. The client fills it from its network map.
type Resolver interface {
	LookupHost(name string) (netip.Addr, bool)
}

// Kind is the protocol a Server speaks.
type Kind int

// Kinds of proxy.
const (
	SOCKS5 Kind = iota + 1 // RFC 1928, no authentication, CONNECT only
	HTTP                   // CONNECT and absolute-URI http:// requests
)

func (k Kind) String() string {
	switch k {
	case SOCKS5:
		return "socks5"
	case HTTP:
		return "http"
	default:
		return fmt.Sprintf("proxy.Kind(%d)", int(k))
	}
}

// ErrNotAllowed may be wrapped by a Dialer's error to say policy forbids the
// destination; SOCKS5 answers "connection not allowed by ruleset" and HTTP
// answers 403.
var ErrNotAllowed = errors.New("destination not allowed by policy")

// Explainer says why host (a name or address the user asked for) cannot be
// reached, given the error the proxy got. It returns reach.ReasonOK when the
// client's state shows nothing wrong, and must not block.
type Explainer interface {
	Explain(host string, dialErr error) reach.Verdict
}

// NotEntitledError is returned for a name the Resolver does not know.
type NotEntitledError struct {
	Host string
}

func (e *NotEntitledError) Error() string {
	return fmt.Sprintf("cordon: %s is not an app you are entitled to (check the name, or ask your administrator for access)", e.Host)
}

// Config configures a Server.
type Config struct {
	Kind     Kind
	Dialer   Dialer   // required
	Resolver Resolver // required

	// HandshakeTimeout bounds reading a client's SOCKS5 greeting and request
	// or HTTP request header. Default 10s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds one dial through the tunnel. Default 15s.
	DialTimeout time.Duration

	// Explainer, if set, says why a destination cannot be reached, from the
	// client's session, map and gateway health. Without it the HTTP proxy
	// judges from the dial error alone.
	Explainer Explainer

	// Logger receives per-connection debug records. Nil discards them.
	Logger *slog.Logger
}

// Log field names.
const (
	logKind   = "kind"
	logClient = "client"
	logTarget = "target"
	logErr    = "err"
	logApp    = "app"
	logReason = "reason"
)

// Server is one proxy listener's worth of state. Create it with New and run
// it with Serve.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	stopping bool
	conns    map[net.Conn]struct{} // client and tunnel conns to close on shutdown
	wg       sync.WaitGroup
}

// New returns a Server for cfg. Configuration errors are reported by Serve.
func New(cfg Config) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log.With(logKind, cfg.Kind.String()), conns: make(map[net.Conn]struct{})}
}

// Serve accepts connections on ln until ctx is cancelled or ln fails. On
// return ln is closed, every connection the Server opened (client and
// tunnel side) is closed, and all its goroutines have exited. It returns nil
// after cancellation. A Server serves once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	if s.cfg.Dialer == nil || s.cfg.Resolver == nil {
		return errors.New("proxy: Dialer and Resolver are required")
	}
	if s.cfg.Kind != SOCKS5 && s.cfg.Kind != HTTP {
		return fmt.Errorf("proxy: unknown kind %v", s.cfg.Kind)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer s.shutdown() // after cancel: in-flight dials are aborted first
	defer cancel()
	if s.cfg.Kind == HTTP {
		return s.serveHTTPProxy(ctx, ln)
	}
	return s.acceptLoop(ctx, ln, s.serveSOCKS5)
}

// acceptLoop runs handle for each accepted connection until ctx ends or ln
// fails.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, handle func(context.Context, net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || isTemporary(err) {
				// Out of file descriptors and the like: wait, don't spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("proxy: accept", logErr, err)
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		if !s.track(c) || !s.enter() {
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			handle(ctx, c)
		}()
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ECONNABORTED)
}

// track registers c for closing on shutdown; false once shutdown began.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// enter registers a goroutine that shutdown waits for; false once shutdown
// began.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.stopping = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

// resolve turns a client-supplied host into an address without ever asking
// the system resolver.
func (s *Server) resolve(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, &NotEntitledError{Host: host}
		}
		return a.Unmap(), nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if !validName(name) {
		return netip.Addr{}, &NotEntitledError{Host: sanitize(host)}
	}
	a, ok := s.cfg.Resolver.LookupHost(name)
	if !ok || !a.IsValid() {
		return netip.Addr{}, &NotEntitledError{Host: name}
	}
	return a.Unmap(), nil
}

// dial resolves host and dials it through the tunnel. The returned conn is
// tracked and closed by shutdown.
func (s *Server) dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	a, err := s.resolve(host)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	c, err := s.cfg.Dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(a, port).String())
	if err != nil {
		return nil, err
	}
	if !s.track(c) {
		c.Close()
		return nil, net.ErrClosed
	}
	return &trackedConn{Conn: c, s: s}, nil
}

// trackedConn is a tunnel connection that leaves the Server's set when
// closed, whoever closes it (the HTTP transport's pool, for one).
type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.untrack(c.Conn)
	return nil
}

// CloseWrite half-closes when the tunnel connection can.
func (c *trackedConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.ErrUnsupported
}

// validName accepts DNS names made of letters, digits, '-', '_' and '.'.
// Anything else cannot be an app name, and is not worth a lookup.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// sanitize makes untrusted text safe to echo in an error or a log line.
func sanitize(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// logName is host (a name or address, with or without a port, as the
// client gave it) for the app field of a log record: as it is when it is
// a valid name or address (the log handler quotes as it needs), else
// sanitized.
func logName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if _, err := netip.ParseAddr(host); err == nil || validName(strings.TrimSuffix(strings.ToLower(host), ".")) {
		return host
	}
	return sanitize(host)
}

// failure classifies a dial error for protocol replies.
type failure int

const (
	failGeneral failure = iota
	failNotEntitled
	failNotAllowed
	failRefused
	failHostUnreachable
	failNetUnreachable
	failTimeout
)

func classify(err error) failure {
	var ne *NotEntitledError
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &ne):
		return failNotEntitled
	case errors.Is(err, ErrNotAllowed):
		return failNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.EHOSTUNREACH):
		return failHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return failNetUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &te) && te.Timeout():
		return failTimeout
	default:
		return failGeneral
	}
}

// splice copies both ways until both directions end. EOF half-closes the
// other side's write end when it can; an error closes both.
func splice(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	defer closeBoth()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(b, a, closeBoth)
	}()
	pipe(a, b, closeBoth)
	wg.Wait()
}

func pipe(dst, src net.Conn, abort func()) {
	if _, err := io.Copy(dst, src); err != nil {
		abort()
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
		return
	}
	abort()
}
