package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// service is one HTTP app in the app namespace. GET / answers its name;
// GET /echo switches the connection to a line echo (a long-lived flow);
// GET /bulk?n=BYTES sends n zero bytes.
type service struct {
	name    string
	addr    string       // host:port in the app subnet
	accepts atomic.Int64 // TCP connections accepted, whoever made them
	// lastPeer is the remote address of the last request (the gateway's
	// app-side address when it masquerades).
	lastPeer atomic.Pointer[string]

	// echoEnded receives how each /echo connection ended, seen from the
	// app's side (nil error: clean EOF).
	echoEnded chan error
}

// Services in the app subnet.
const (
	ehrAddr      = "10.20.0.10:80"
	ehrAdminAddr = "10.20.0.10:8080"
	billingAddr  = "10.20.0.11:80"
	labAddr      = "10.20.0.12:80"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startServices starts the app servers inside ns and stops them in
// t.Cleanup (before the namespace goes: a socket keeps its namespace alive).
func startServices(t *testing.T, ns netNS) map[string]*service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	svcs := map[string]*service{}
	for _, s := range []*service{
		{name: "ehr", addr: ehrAddr},
		{name: "ehr-admin", addr: ehrAdminAddr},
		{name: "billing", addr: billingAddr},
		{name: "lab", addr: labAddr},
	} {
		s.echoEnded = make(chan error, 16)
		ln, err := ns.listen("tcp", s.addr)
		if err != nil {
			t.Fatalf("listen for %s on %s in %s: %v", s.name, s.addr, ns.name, err)
		}
		srv := &http.Server{Handler: s.handler(ctx), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { srv.Serve(countingListener{ln, &s.accepts}) })
		wg.Go(func() {
			<-ctx.Done()
			srv.Close()
		})
		svcs[s.name] = s
	}
	return svcs
}

func (s *service) handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		peer := r.RemoteAddr
		s.lastPeer.Store(&peer)
		fmt.Fprintln(w, s.name)
	})
	// /bulk?n=BYTES sends that many zero bytes (at most 1 GiB), for
	// throughput measurements.
	mux.HandleFunc("GET /bulk", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > 1<<30 {
			http.Error(w, "want n=BYTES, at most 1 GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, zeros{}, n)
	})
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		if err := brw.Flush(); err != nil {
			s.echoEnded <- err
			return
		}
		_, err = io.Copy(conn, brw.Reader)
		select {
		case s.echoEnded <- err:
		default:
		}
	})
	return mux
}

// echoConn is a client's open /echo connection.
type echoConn struct {
	net.Conn
	r *bufio.Reader
	n int
}

// openEcho dials addr from ns and switches the connection to echo.
func openEcho(ns netNS, addr string) (*echoConn, error) {
	c, err := ns.dialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read echo upgrade: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		c.Close()
		return nil, fmt.Errorf("echo upgrade: got %q", status)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("read echo upgrade headers: %w", err)
		}
		if line == "\r\n" {
			break
		}
	}
	c.SetDeadline(time.Time{})
	return &echoConn{Conn: c, r: r}, nil
}

// errNoEcho says a probe got no answer in time (the connection still looks
// open, but carries nothing).
var errNoEcho = errors.New("no echo within the probe window")

// probe sends one line and waits up to wait for it to come back. It returns
// nil if it did, errNoEcho on a timeout, or the connection's error (a reset,
// EOF).
func (e *echoConn) probe(wait time.Duration) error {
	e.n++
	want := fmt.Sprintf("ping %d\n", e.n)
	e.SetWriteDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(e.Conn, want); err != nil {
		return err
	}
	e.SetReadDeadline(time.Now().Add(wait))
	for {
		got, err := e.r.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errNoEcho
			}
			return err
		}
		if got == want {
			return nil
		}
		// A late echo of an earlier probe: keep reading for ours.
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
