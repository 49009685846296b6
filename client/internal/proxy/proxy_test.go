package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/client/internal/proxy"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/netstack/netstacktest"
	xproxy "golang.org/x/net/proxy"
)

// mapResolver is the client's view of the network map: entitled names only.
type mapResolver struct {
	mu      sync.Mutex
	names   map[string]netip.Addr
	lookups []string
}

func (r *mapResolver) LookupHost(name string) (netip.Addr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups = append(r.lookups, name)
	a, ok := r.names[name]
	return a, ok
}

// recordingDialer wraps the tunnel and records every address dialed; it
// answers ErrNotAllowed for addresses in deny.
type recordingDialer struct {
	proxy.Dialer
	mu    sync.Mutex
	addrs []string
	deny  map[string]bool
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	deny := d.deny[addr]
	d.mu.Unlock()
	if deny {
		return nil, fmt.Errorf("client filter: %w", proxy.ErrNotAllowed)
	}
	return d.Dialer.DialContext(ctx, network, addr)
}

func (d *recordingDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// world is a client tunnel (netstack over WireGuard to a forwarding gateway)
// with two apps on the gateway host's loopback, as in the no-root demo.
type world struct {
	ehr, billing netip.AddrPort // real listen addresses on the host
	deadPort     netip.AddrPort // 127.0.0.2 port with no listener
	resolver     *mapResolver
	dialer       *recordingDialer
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{}
	w.ehr = serveApp(t, "127.0.0.2", "ehr")
	w.billing = serveApp(t, "127.0.0.3", "billing")
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	w.deadPort = ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()

	pair := netstacktest.NewPair(t, netstacktest.PairConfig{})
	w.resolver = &mapResolver{names: map[string]netip.Addr{
		"ehr.example.internal":     w.ehr.Addr(),
		"billing.example.internal": w.billing.Addr(),
	}}
	w.dialer = &recordingDialer{Dialer: pair.Client, deny: map[string]bool{}}
	// Any use of the system resolver during the test is a leak.
	trapSystemDNS(t)
	return w
}

func serveApp(t *testing.T, ip, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s here: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s says hello to %s %s", name, r.Method, r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// trapSystemDNS makes any lookup through Go's resolver fail the test.
func trapSystemDNS(t *testing.T) {
	t.Helper()
	oldPreferGo, oldDial := net.DefaultResolver.PreferGo, net.DefaultResolver.Dial
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		t.Errorf("system DNS used: %s %s", network, address)
		return nil, errors.New("system DNS is forbidden in this test")
	}
	t.Cleanup(func() {
		net.DefaultResolver.PreferGo = oldPreferGo
		net.DefaultResolver.Dial = oldDial
	})
}

// startProxy serves kind on a fresh loopback listener until the test ends.
func startProxy(t *testing.T, w *world, kind proxy.Kind, opts ...func(*proxy.Config)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{Kind: kind, Dialer: w.dialer, Resolver: w.resolver}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func readAllString(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSOCKS5ByNameReachesAppThroughTunnel(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	addr := startProxy(t, w, proxy.SOCKS5)
	d, err := xproxy.SOCKS5("tcp", addr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       d.(xproxy.ContextDialer).DialContext,
		DisableKeepAlives: true,
	}}
	for _, tc := range []struct{ url, want string }{
		{fmt.Sprintf("http://ehr.example.internal:%d/chart", w.ehr.Port()), "ehr says hello to GET /chart"},
		{fmt.Sprintf("http://BILLING.example.internal.:%d/inv", w.billing.Port()), "billing says hello to GET /inv"},
		{fmt.Sprintf("http://%s/ip", w.ehr), "ehr says hello to GET /ip"}, // IP literal
	} {
		resp, err := client.Get(tc.url)
		if err != nil {
			t.Fatalf("GET %s via SOCKS5: %v", tc.url, err)
		}
		if got := readAllString(t, resp.Body); got != tc.want {
			t.Errorf("GET %s = %q, want %q", tc.url, got, tc.want)
		}
		resp.Body.Close()
	}
}

// socksExchange performs a raw SOCKS5 greeting and request and returns the
// reply code.
func socksExchange(t *testing.T, addr string, greeting, request []byte) (method, rep byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(greeting); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		t.Fatalf("method selection: %v", err)
	}
	if sel[1] != 0 {
		return sel[1], 0
	}
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	var reply [10]byte // IPv4 bound address form
	if _, err := io.ReadFull(c, reply[:4]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return sel[1], reply[1]
}

func socksDomainReq(cmd byte, name string, port uint16) []byte {
	b := []byte{5, cmd, 0, 3, byte(len(name))}
	b = append(b, name...)
	return binary.BigEndian.AppendUint16(b, port)
}

func socksIPReq(ap netip.AddrPort) []byte {
	b := []byte{5, 1, 0, 1}
	if ap.Addr().Is6() {
		b[3] = 4
	}
	b = append(b, ap.Addr().AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func TestSOCKS5ReplyCodes(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	denied := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), 443)
	w.dialer.deny[denied.String()] = true
	addr := startProxy(t, w, proxy.SOCKS5)
	noAuth := []byte{5, 1, 0}

	tests := []struct {
		name     string
		greeting []byte
		request  []byte
		method   byte
		rep      byte
	}{
		{"unknown name is not allowed", noAuth, socksDomainReq(1, "secret.example.internal", 443), 0, 2},
		{"closed port is refused", noAuth, socksIPReq(w.deadPort), 0, 5},
		{"policy denial is not allowed", noAuth, socksIPReq(denied), 0, 2},
		{"BIND is unsupported", noAuth, socksDomainReq(2, "ehr.example.internal", 80), 0, 7},
		{"UDP ASSOCIATE is unsupported", noAuth, socksDomainReq(3, "ehr.example.internal", 80), 0, 7},
		{"unknown address type", noAuth, []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, 0, 8},
		{"username/password only gets no acceptable method", []byte{5, 1, 2}, nil, 0xff, 0},
		{"ok", []byte{5, 2, 2, 0}, socksDomainReq(1, "ehr.example.internal", w.ehr.Port()), 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, rep := socksExchange(t, addr, tc.greeting, tc.request)
			if method != tc.method || rep != tc.rep {
				t.Fatalf("method %#x rep %#x, want method %#x rep %#x", method, rep, tc.method, tc.rep)
			}
		})
	}
	for _, a := range w.dialer.dialed() {
		if strings.Contains(a, "secret") {
			t.Errorf("unknown name reached the dialer: %s", a)
		}
	}
	w.resolver.mu.Lock()
	defer w.resolver.mu.Unlock()
	if !contains(w.resolver.lookups, "secret.example.internal") {
		t.Errorf("resolver not asked about the unknown name; lookups = %v", w.resolver.lookups)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestSOCKS5HandshakeTimeout(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	addr := startProxy(t, w, proxy.SOCKS5, func(c *proxy.Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5}) // half a greeting, then silence
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %v, want EOF from the server closing a stalled handshake", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stalled handshake closed after %v", d)
	}
}

func httpProxyClient(proxyAddr string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
		DisableKeepAlives: false,
	}}
}

func TestHTTPProxyPlainRequests(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	addr := startProxy(t, w, proxy.HTTP)
	client := httpProxyClient(addr)
	defer client.CloseIdleConnections()

	for i := 0; i < 3; i++ { // several requests over a kept-alive proxy connection
		u := fmt.Sprintf("http://ehr.example.internal:%d/visit/%d", w.ehr.Port(), i)
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s via HTTP proxy: %v", u, err)
		}
		want := fmt.Sprintf("ehr says hello to GET /visit/%d", i)
		if got := readAllString(t, resp.Body); resp.StatusCode != 200 || got != want {
			t.Errorf("GET %s = %d %q, want 200 %q", u, resp.StatusCode, got, want)
		}
		resp.Body.Close()
	}
	resp, err := client.Post(fmt.Sprintf("http://billing.example.internal:%d/claims", w.billing.Port()), "text/plain", strings.NewReader("claim"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAllString(t, resp.Body); got != "billing says hello to POST /claims" {
		t.Errorf("POST = %q", got)
	}
	resp.Body.Close()
}

func TestHTTPProxyRefusals(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	denied := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), 80)
	w.dialer.deny[denied.String()] = true
	addr := startProxy(t, w, proxy.HTTP)
	client := httpProxyClient(addr)
	defer client.CloseIdleConnections()

	tests := []struct {
		url      string
		status   int
		bodyHave string
	}{
		{"http://secret.example.internal/", 403, "cordon: not an app you are entitled to; ask your IT service desk"},
		{"http://" + w.deadPort.String() + "/", 502, "refused the connection"},
		{"http://" + denied.String() + "/", 403, "policy does not allow"},
	}
	for _, tc := range tests {
		resp, err := client.Get(tc.url)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.url, err)
		}
		body := readAllString(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.bodyHave) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.url, resp.StatusCode, body, tc.status, tc.bodyHave)
		}
	}

	// Opening the proxy as a web server is explained, not forwarded.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body := readAllString(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(body, "configure it as") {
		t.Errorf("origin-form request = %d %q", resp.StatusCode, body)
	}
	if b := readAllString(t, mustGet(t, client, "http://secret.example.internal/").Body); strings.Contains(b, "secret") {
		t.Errorf("the refusal names an app the user is not entitled to: %q", b)
	}
	if b := readAllString(t, mustGet(t, client, "http://secret.example.internal/").Body); strings.Contains(b, "secret") {
		t.Errorf("the refusal names an app the user is not entitled to: %q", b)
	}
	for _, a := range w.dialer.dialed() {
		if strings.Contains(a, "secret") {
			t.Errorf("unknown name reached the dialer: %s", a)
		}
	}
}

func TestHTTPProxyCONNECT(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	addr := startProxy(t, w, proxy.HTTP)

	connect := func(target string, pipelined string) (*http.Response, *bufio.Reader, net.Conn) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, pipelined)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("CONNECT %s: %v", target, err)
		}
		return resp, br, c
	}

	// The app request is sent in the same write as the CONNECT, so it sits
	// in the proxy's read buffer when the tunnel opens.
	target := fmt.Sprintf("ehr.example.internal:%d", w.ehr.Port())
	get := "GET /over-connect HTTP/1.1\r\nHost: ehr\r\nConnection: close\r\n\r\n"
	resp, br, _ := connect(target, get)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT status %d", resp.StatusCode)
	}
	appResp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAllString(t, appResp.Body); got != "ehr says hello to GET /over-connect" {
		t.Errorf("through CONNECT: %q", got)
	}

	resp, _, _ = connect("secret.example.internal:443", "")
	body := readAllString(t, resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(body, "not an app you are entitled to") || strings.Contains(body, "secret") {
		t.Errorf("CONNECT unknown = %d %q, want 403 that does not name the app", resp.StatusCode, body)
	}
}

func TestServeClosesActiveConnectionsOnCancel(t *testing.T) {
	netstacktest.LeakCheck(t)
	w := newWorld(t)
	for _, kind := range []proxy.Kind{proxy.SOCKS5, proxy.HTTP} {
		t.Run(kind.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- proxy.New(proxy.Config{Kind: kind, Dialer: w.dialer, Resolver: w.resolver}).Serve(ctx, ln)
			}()

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			target := fmt.Sprintf("ehr.example.internal:%d", w.ehr.Port())
			if kind == proxy.SOCKS5 {
				c.Write(append([]byte{5, 1, 0}, socksDomainReq(1, "ehr.example.internal", w.ehr.Port())...))
				reply := make([]byte, 2+10)
				if _, err := io.ReadFull(c, reply); err != nil || reply[3] != 0 {
					t.Fatalf("SOCKS5 connect: %v %v", reply, err)
				}
			} else {
				fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
				resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("CONNECT: %v", err)
				}
			}
			// An established, idle tunnel. Cancelling must end it and Serve.
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve = %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("client connection still open after Serve returned")
			}
		})
	}
}

func TestServeRejectsIncompleteConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.New(proxy.Config{Kind: proxy.SOCKS5}).Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve without Dialer and Resolver succeeded")
	}
}

func mustGet(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// fixedExplainer answers every question with one reason, as the client
// would in that state.
type fixedExplainer reach.Reason

func (f fixedExplainer) Explain(string, error) reach.Verdict { return reach.For(reach.Reason(f)) }

// syncBuffer is a log sink safe for the proxy's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Each reason the client knows gets its own status, body and log line,
// where a blanket 502 "not entitled" used to answer them all.
func TestHTTPProxySaysWhatIsWrong(t *testing.T) {
	netstacktest.LeakCheck(t)
	tests := []struct {
		reason     reach.Reason
		url        string // the entitled app is refused on the dial, like a dead gateway
		status     int
		body       string
		retryAfter string
	}{
		{reach.ReasonNotEntitled, "http://secret.example.internal/", 403, "not an app you are entitled to; ask your IT service desk", ""},
		{reach.ReasonSignedOut, "", 511, "you are not signed in; run cordon login", ""},
		{reach.ReasonSessionEnded, "", 511, "your session ended; run cordon login", ""},
		{reach.ReasonGatewayUnreachable, "", 503, "gateway for this app does not answer; retrying", "10"},
		{reach.ReasonControlDown, "", 502, "controller cannot be reached", ""},
		{reach.ReasonNoAnswer, "", 504, "the app itself does not answer", ""},
		// Nothing wrong in the client's state, yet the dial failed: the app is silent.
		{reach.ReasonOK, "", 504, "the app itself does not answer", ""},
	}
	for _, tc := range tests {
		t.Run(tc.reason.String(), func(t *testing.T) {
			w := newWorld(t)
			var logs syncBuffer
			addr := startProxy(t, w, proxy.HTTP, func(c *proxy.Config) {
				c.Explainer = fixedExplainer(tc.reason)
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			client := httpProxyClient(addr)
			defer client.CloseIdleConnections()
			u := tc.url
			if u == "" {
				u = "http://" + w.deadPort.String() + "/"
			}
			resp := mustGet(t, client, u)
			body := readAllString(t, resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("GET %s = %d %q, want %d containing %q", u, resp.StatusCode, body, tc.status, tc.body)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			want := reach.For(tc.reason).Reason
			if tc.reason == reach.ReasonOK {
				want = reach.ReasonNoAnswer
			}
			if l := logs.String(); !strings.Contains(l, "reason="+want.String()) || !strings.Contains(l, "app=") {
				t.Errorf("log has no app and reason=%v: %q", want, l)
			}
		})
	}
}

// The SOCKS5 proxy refuses by the same reasons as the HTTP proxy, with
// the nearest reply code RFC 1928 has, and logs the app and the reason.
func TestSOCKS5SaysWhatIsWrong(t *testing.T) {
	netstacktest.LeakCheck(t)
	tests := []struct {
		reason reach.Reason
		host   string // "": the entitled app, refused on the dial
		rep    byte
	}{
		{reach.ReasonNotEntitled, "secret.example.internal", 2},
		{reach.ReasonSignedOut, "", 2},
		{reach.ReasonSessionEnded, "", 2},
		{reach.ReasonGatewayUnreachable, "", 3},
		{reach.ReasonControlDown, "", 1},
		{reach.ReasonNoAnswer, "", 5}, // the dial was refused
		{reach.ReasonOK, "", 5},       // nothing wrong in the client's state: the app refused
	}
	for _, tc := range tests {
		t.Run(tc.reason.String(), func(t *testing.T) {
			w := newWorld(t)
			var logs syncBuffer
			addr := startProxy(t, w, proxy.SOCKS5, func(c *proxy.Config) {
				c.Explainer = fixedExplainer(tc.reason)
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			req := socksIPReq(w.deadPort)
			if tc.host != "" {
				req = socksDomainReq(1, tc.host, 443)
			}
			if _, rep := socksExchange(t, addr, []byte{5, 1, 0}, req); rep != tc.rep {
				t.Errorf("rep %#x, want %#x", rep, tc.rep)
			}
			want := tc.reason
			if want == reach.ReasonOK {
				want = reach.ReasonNoAnswer
			}
			if l := logs.String(); !strings.Contains(l, "reason="+want.String()) || !strings.Contains(l, "app=") {
				t.Errorf("log has no app and reason=%v: %q", want, l)
			}
		})
	}
}

// hostExplainer says the gateway of one app is down and that every other
// host is not entitled, as the client does from its map.
type hostExplainer struct{ down string }

func (e hostExplainer) Explain(host string, _ error) reach.Verdict {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == e.down {
		return reach.For(reach.ReasonGatewayUnreachable)
	}
	return reach.For(reach.ReasonNotEntitled)
}

// Regression: the proxies asked the Explainer about the quoted name
// they print ("\"ehr.example.internal\""), which is in no map, so a dead
// gateway's app was answered "not entitled". The Explainer gets the host
// as the client gave it, and the log names it plainly.
func TestExplainerGetsTheHostAsGiven(t *testing.T) {
	netstacktest.LeakCheck(t)
	const name = "gone.example.internal" // the resolver does not know it: its gateway's DNS is down
	w := newWorld(t)
	var logs syncBuffer
	cfg := func(c *proxy.Config) {
		c.Explainer = hostExplainer{down: name}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}
	httpAddr, socksAddr := startProxy(t, w, proxy.HTTP, cfg), startProxy(t, w, proxy.SOCKS5, cfg)
	client := httpProxyClient(httpAddr)
	defer client.CloseIdleConnections()
	resp := mustGet(t, client, "http://"+name+":8080/")
	if body := readAllString(t, resp.Body); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HTTP proxy: %d %q, want 503 gateway unreachable", resp.StatusCode, body)
	}
	if _, rep := socksExchange(t, socksAddr, []byte{5, 1, 0}, socksDomainReq(1, name, 443)); rep != 3 {
		t.Errorf("SOCKS5 proxy: rep %#x, want 3 (network unreachable)", rep)
	}
	if l := logs.String(); strings.Count(l, "app="+name+" reason=gateway-unreachable") != 2 {
		t.Errorf("want two records with app=%s reason=gateway-unreachable:\n%s", name, l)
	}
}
