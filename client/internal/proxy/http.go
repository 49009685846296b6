package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/cordonhq/cordon/client/internal/reach"
)

// maxHeaderBytes bounds an HTTP proxy request's header.
const maxHeaderBytes = 16 << 10

// serveHTTPProxy runs net/http's server on ln with a handler that tunnels
// CONNECT and forwards absolute-URI http:// requests through the tunnel.
func (s *Server) serveHTTPProxy(ctx context.Context, ln net.Listener) error {
	rp, transport := s.newReverseProxy()
	defer transport.CloseIdleConnections()

	var conns sync.WaitGroup // net/http's per-connection goroutines
	srv := &http.Server{
		Handler:           s.httpHandler(rp),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateHijacked, http.StateClosed:
				conns.Done()
			}
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
		srv.Close()
		<-errc
	case err = <-errc:
		srv.Close()
		err = fmt.Errorf("proxy: serve http: %w", err)
	}
	// srv.Close does not wait for handlers or hijacked connections: close
	// ours and wait for every goroutine before returning.
	s.shutdown()
	conns.Wait()
	return err
}

// newReverseProxy builds the forwarder for absolute-URI requests. Its
// transport dials only through s.dial (the Resolver and the tunnel), never
// through the system resolver or an environment proxy.
func (s *Server) newReverseProxy() (*httputil.ReverseProxy, *http.Transport) {
	transport := &http.Transport{
		Proxy: nil, // never a proxy from the environment
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := splitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return s.dial(ctx, host, port)
		},
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The request already carries the absolute target; keep it and
			// add no X-Forwarded-* headers (they would only leak the
			// workstation's loopback address).
			u := *pr.In.URL
			pr.Out.URL = &u
			pr.Out.Host = pr.In.Host
		},
		Transport:     transport,
		FlushInterval: -1, // stream (server-sent events, long polls)
		ErrorHandler:  s.httpError,
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return rp, transport
}

func (s *Server) httpHandler(rp *httputil.ReverseProxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.enter() {
			http.Error(w, "cordon: proxy is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer s.wg.Done()
		host, port, err := requestTarget(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Resolve before anything else so an unknown name gets the clear
		// answer, whatever the method.
		if _, err := s.resolve(host); err != nil {
			s.httpError(w, r, err)
			return
		}
		if r.Method == http.MethodConnect {
			s.connect(w, r, host, port)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

var (
	errNotProxyRequest     = errors.New("cordon: this is an HTTP proxy; configure it as your browser's or tool's proxy instead of opening it directly")
	errHTTPSWithoutConnect = errors.New("cordon: https:// needs CONNECT; configure this address as your HTTPS proxy too")
)

// requestTarget extracts the host and port a proxy request is for: the
// authority of a CONNECT, or the host of an absolute http:// URI.
func requestTarget(r *http.Request) (host string, port uint16, err error) {
	if r.Method == http.MethodConnect {
		if r.URL == nil || r.URL.Host == "" {
			return "", 0, errors.New("cordon: CONNECT needs host:port")
		}
		return splitHostPort(r.URL.Host)
	}
	if r.URL == nil || !r.URL.IsAbs() || r.URL.Host == "" {
		return "", 0, errNotProxyRequest
	}
	switch r.URL.Scheme {
	case "http":
	case "https":
		return "", 0, errHTTPSWithoutConnect
	default:
		return "", 0, fmt.Errorf("cordon: scheme %s is not supported by the HTTP proxy", sanitize(r.URL.Scheme))
	}
	host = r.URL.Hostname()
	if host == "" {
		return "", 0, errors.New("cordon: request URI has no host")
	}
	port = 80
	if p := r.URL.Port(); p != "" {
		if port, err = parsePort(p); err != nil {
			return "", 0, err
		}
	}
	return host, port, nil
}

func splitHostPort(hostport string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("cordon: bad target %s: need host:port", sanitize(hostport))
	}
	if host == "" {
		return "", 0, fmt.Errorf("cordon: bad target %s: no host", sanitize(hostport))
	}
	port, err := parsePort(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("cordon: bad port %s", sanitize(p))
	}
	return uint16(n), nil
}

// connect dials the CONNECT target and, once it answers, hijacks the client
// connection and splices the two.
func (s *Server) connect(w http.ResponseWriter, r *http.Request, host string, port uint16) {
	up, err := s.dial(r.Context(), host, port)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cordon: CONNECT not supported on this connection", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		s.log.Debug("http: hijack", logErr, err)
		return
	}
	if !s.track(c) {
		c.Close()
		return
	}
	defer s.untrack(c)
	c.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	// Bytes the client sent after the request header (a TLS ClientHello,
	// typically) are already in the server's buffer.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	s.log.Debug("http: connected", logClient, r.RemoteAddr, logTarget, r.URL.Host)
	splice(c, up)
}

// httpError answers a failed proxy request with a status and a message the
// user can act on. With an Explainer, the reason comes from the client's
// state (session, entitlement, gateway health); without one, from the
// dial error alone.
func (s *Server) httpError(w http.ResponseWriter, r *http.Request, err error) {
	target := sanitize(r.Host)
	v, ok := s.explain(r.Host, err)
	if ok {
		code := reasonStatus(v.Reason)
		if v.Reason == reach.ReasonGatewayUnreachable {
			w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfter/time.Second)))
		}
		// The body never names a host the user is not entitled to: they
		// may not know the app exists.
		msg := "cordon: " + v.Detail
		if v.Next != "" {
			msg += "; " + v.Next
		}
		s.log.Info("http: request refused", logApp, logName(r.Host), logReason, v.Reason.String(), logErr, err)
		http.Error(w, msg, code)
		return
	}
	var code int
	var msg string
	switch classify(err) {
	case failNotAllowed:
		code, msg = http.StatusForbidden, fmt.Sprintf("cordon: policy does not allow you to reach %s", target)
	case failRefused:
		code, msg = http.StatusBadGateway, fmt.Sprintf("cordon: %s refused the connection (is the app running?)", target)
	case failHostUnreachable, failNetUnreachable:
		code, msg = http.StatusBadGateway, fmt.Sprintf("cordon: %s is unreachable through the tunnel", target)
	case failTimeout:
		code, msg = http.StatusGatewayTimeout, fmt.Sprintf("cordon: %s did not answer in time (is the tunnel up?)", target)
	default:
		code, msg = http.StatusBadGateway, fmt.Sprintf("cordon: cannot reach %s", target)
	}
	s.log.Debug("http: request failed", logClient, r.RemoteAddr, logTarget, target, logErr, err)
	http.Error(w, msg, code)
}

// RetryAfter is what the HTTP proxy puts in Retry-After while the gateway is
// unreachable: about one failover probe round.
const RetryAfter = 10 * time.Second

// explain turns a failure to reach host (a name or address as the client
// gave it, with or without a port) into a reach.Verdict when it can say
// more than the dial error: always for a name the Resolver does not know,
// and for every failure when the Server has an Explainer.
func (s *Server) explain(host string, err error) (reach.Verdict, bool) {
	f := classify(err)
	if s.cfg.Explainer != nil && f != failNotAllowed {
		v := s.cfg.Explainer.Explain(host, err)
		if v.Reason == reach.ReasonOK && f != failNotEntitled {
			// Signed in, entitled, gateway answering: the app is silent.
			v = reach.For(reach.ReasonNoAnswer)
		}
		if v.Reason != reach.ReasonOK && v.Reason != reach.ReasonUnknown {
			return v, true
		}
	}
	if f == failNotEntitled {
		return reach.For(reach.ReasonNotEntitled), true
	}
	return reach.Verdict{}, false
}

// reasonStatus is the HTTP status for a reason the proxy refuses with.
func reasonStatus(r reach.Reason) int {
	switch r {
	case reach.ReasonNotEntitled:
		return http.StatusForbidden
	case reach.ReasonSignedOut, reach.ReasonSessionEnded:
		return http.StatusNetworkAuthenticationRequired
	case reach.ReasonGatewayUnreachable:
		return http.StatusServiceUnavailable
	case reach.ReasonNoAnswer:
		return http.StatusGatewayTimeout
	default: // control down
		return http.StatusBadGateway
	}
}
