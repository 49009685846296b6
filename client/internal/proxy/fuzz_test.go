package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

type fakeResolver map[string]netip.Addr

func (r fakeResolver) LookupHost(name string) (netip.Addr, bool) {
	a, ok := r[name]
	return a, ok
}

// refusingDialer never touches the network.
type refusingDialer struct{}

func (refusingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		panic("proxy dialed a non-literal address: " + addr)
	}
	return nil, errors.New("fuzz: no network")
}

func fuzzServer(kind Kind) *Server {
	return New(Config{
		Kind:     kind,
		Dialer:   refusingDialer{},
		Resolver: fakeResolver{"ehr.example.internal": netip.MustParseAddr("10.20.0.5")},
	})
}

func FuzzSOCKS5Handshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 10, 20, 0, 5, 1, 187})
	f.Add(append([]byte{5, 2, 0, 2, 5, 1, 0, 3, 20}, append([]byte("ehr.example.internal"), 0, 80)...))
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 187})
	f.Add([]byte{5, 1, 0, 5, 2, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 0})
	f.Add([]byte{4, 1, 0, 80, 10, 0, 0, 1, 0})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 255})
	s := fuzzServer(SOCKS5)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		noAuth, err := readGreeting(r)
		if err != nil || !noAuth {
			return
		}
		req, err := readRequest(r)
		if err != nil {
			var se *socksError
			if errors.As(err, &se) && se.rep == repSucceeded {
				t.Fatalf("error %v carries the success reply", err)
			}
			return
		}
		if req.cmd != cmdConnect || req.host == "" {
			t.Fatalf("accepted request %+v", req)
		}
		if consumed := len(data) - r.Len(); consumed > 2+255+4+1+255+2 {
			t.Fatalf("parser read %d bytes", consumed)
		}
		// Resolution of whatever name came in must be total, too.
		if a, err := s.resolve(req.host); err == nil && !a.IsValid() {
			t.Fatalf("resolve(%q) gave an invalid address and no error", req.host)
		}
		rep := socksReply(socksRep(classify(errors.New("x"))), nil)
		if len(rep) != 10 {
			t.Fatalf("reply length %d", len(rep))
		}
	})
}

// FuzzHTTPProxyRequest feeds arbitrary bytes through Go's request parser and
// then the whole proxy handler (target extraction, resolution, error
// mapping, CONNECT and forwarding), with a dialer that never connects.
func FuzzHTTPProxyRequest(f *testing.F) {
	f.Add([]byte("GET http://ehr.example.internal/ HTTP/1.1\r\nHost: ehr.example.internal\r\n\r\n"))
	f.Add([]byte("CONNECT ehr.example.internal:443 HTTP/1.1\r\nHost: ehr.example.internal:443\r\n\r\n"))
	f.Add([]byte("CONNECT secret.example.internal:443 HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET http://[fd00::1%25eth0]:80/ HTTP/1.1\r\n\r\n"))
	f.Add([]byte("POST http://10.20.0.5:8080/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"))
	f.Add([]byte("GET https://ehr.example.internal/ HTTP/1.1\r\n\r\n"))
	f.Add([]byte("CONNECT :0 HTTP/1.1\r\n\r\n"))
	s := fuzzServer(HTTP)
	rp, transport := s.newReverseProxy()
	defer transport.CloseIdleConnections()
	h := s.httpHandler(rp)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxHeaderBytes {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		host, port, err := requestTarget(req)
		if err == nil && (host == "" || port == 0) {
			t.Fatalf("requestTarget = %q, %d with no error", host, port)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			t.Fatalf("request succeeded with a dialer that never connects: %q", data)
		}
		if body := rec.Body.String(); !strings.HasPrefix(body, "cordon: ") {
			t.Fatalf("error body %q does not say where it came from", body)
		}
	})
}
