package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestClientMessages: the nurse's client in userspace mode answers through
// its HTTP proxy with what is really wrong, says the same in 'cordon
// status', and logs app and reason (JSON logs, as a log shipper reads
// them):
//
//	billing (not hers)      → 403, the name not echoed (SOCKS5: reply 2)
//	gateway SIGKILLed       → 503 + Retry-After; status: gateway-unreachable
//	session ended by admin  → 511 "sign in"; status: sign in again
func TestClientMessages(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	nurse := w.nurse
	nurse.proc.stop()
	const proxyAddr = "127.0.0.1:8080"
	w.upWith(nurse, "cordon-nurse-userspace", "--mode", "userspace", "--http-proxy", proxyAddr, "--socks5", "127.0.0.1:1080",
		"--log-format", "json")

	// get fetches rawURL through the nurse's proxy from her namespace.
	proxyURL := &url.URL{Scheme: "http", Host: proxyAddr}
	hc := &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(proxyURL),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nurse.ns.dial(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
	get := func(rawURL string) (int, http.Header, string, error) {
		resp, err := hc.Get(rawURL)
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, resp.Header, strings.TrimSpace(string(b)), err
	}
	const ehrURL, billingURL = "http://ehr.hosp.internal/", "http://billing.hosp.internal/"
	waitFor(t, 20*time.Second, "the nurse to reach ehr through her HTTP proxy", func() error {
		code, _, body, err := get(ehrURL)
		if err != nil || code != http.StatusOK || body != "ehr" {
			return fmt.Errorf("GET %s: %d %q %v", ehrURL, code, body, err)
		}
		return nil
	})

	// Not entitled: 403, and the body does not confirm the app exists.
	code, _, body, err := get(billingURL)
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "not an app you are entitled to") || strings.Contains(body, "billing") {
		t.Errorf("GET %s (not hers) = %d %q %v; want 403 saying not entitled, without the name", billingURL, code, body, err)
	}

	// The SOCKS5 proxy refuses it too: "not allowed by ruleset" (2).
	if rep, err := socks5Connect(nurse.ns, "127.0.0.1:1080", "billing.hosp.internal", 80); err != nil || rep != 2 {
		t.Errorf("SOCKS5 CONNECT billing.hosp.internal:80 = reply %d, %v; want 2 (not allowed)", rep, err)
	}

	// Gateway down: 503 with Retry-After, once the client has noticed
	// (its prober, within a second of the first packets; the dial that
	// starts them waits for its own timeout).
	w.killGateway()
	waitFor(t, 60*time.Second, "the proxy to answer 503 for ehr with the gateway down", func() error {
		code, hdr, body, err := get(ehrURL)
		if err != nil || code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "gateway for this app does not answer") {
			return fmt.Errorf("GET %s: %d Retry-After %q %q %v", ehrURL, code, hdr.Get("Retry-After"), body, err)
		}
		return nil
	})
	st, err := nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	if got := appState(st, "ehr"); got != "gateway-unreachable" {
		t.Errorf("cordon status -o json: ehr is %q with the gateway down, want gateway-unreachable", got)
	}
	out, errOut, rc := nurse.cordon("", "status")
	t.Logf("cordon status with the gateway down:\n%s", out)
	if rc != 0 || !strings.Contains(out, "gateway-unreachable: the hospital gateway for this app does not answer; retrying") || !strings.Contains(out, "STATE") {
		t.Errorf("cordon status with the gateway down: exit %d\n%s%s", rc, out, errOut)
	}

	// Session ended by an administrator: 511, sign in again.
	w.mustCtl("", "session", "end", "--user", "nurse", "--comment", "e2e: messages")
	waitFor(t, 20*time.Second, "the proxy to answer 511 after the admin ended the session", func() error {
		code, _, body, err := get(ehrURL)
		if err != nil || code != http.StatusNetworkAuthenticationRequired || !strings.Contains(body, "cordon login") {
			return fmt.Errorf("GET %s: %d %q %v", ehrURL, code, body, err)
		}
		return nil
	})
	out, errOut, rc = nurse.cordon("", "status")
	t.Logf("cordon status after the admin ended the session:\n%s", out)
	if rc != 0 || !strings.Contains(out, "Session:     An administrator ended your session") || !strings.Contains(out, "sign in again with 'cordon login'") {
		t.Errorf("cordon status after the admin ended the session: exit %d\n%s%s", rc, out, errOut)
	}

	// The client's log: one JSON record per refusal, with app and reason.
	want := map[string]string{
		"http: request refused not-entitled":        "billing.hosp.internal",
		"socks5: connect refused not-entitled":      "billing.hosp.internal",
		"http: request refused gateway-unreachable": "ehr.hosp.internal",
		"http: request refused session-ended":       "ehr.hosp.internal",
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(nurse.proc.logs()))
	for sc.Scan() {
		var rec struct {
			Msg    string `json:"msg"`
			App    string `json:"app"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Reason == "" {
			continue
		}
		got[rec.Msg+" "+rec.Reason] = rec.App
	}
	for k, app := range want {
		if got[k] != app {
			t.Errorf("client log: no %q record with app %s (got %v)", k, app, got)
		}
	}
}

// socks5Connect asks the SOCKS5 proxy at proxyAddr, from ns, to connect
// to host:port and returns its reply code (RFC 1928: 0 succeeded).
func socks5Connect(ns netNS, proxyAddr, host string, port uint16) (byte, error) {
	c, err := ns.dialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...) // greeting (no auth), then CONNECT by name
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var b [2 + 4]byte // method selection, then the reply's VER REP RSV ATYP
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	if b[1] != 0 {
		return 0, fmt.Errorf("the proxy refused the no-auth method (%#x)", b[1])
	}
	return b[3], nil
}

// appState is the state 'cordon status -o json' gives app.
func appState(st *clientStatus, app string) string {
	for _, g := range st.Gateways {
		for _, a := range g.Apps {
			if a.Name == app {
				return a.State.Reason
			}
		}
	}
	return ""
}
