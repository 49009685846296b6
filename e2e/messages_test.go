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
//	billing (not hers)      → 403, the name not echoed
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
	want := map[string]string{"not-entitled": "billing.hosp.internal", "gateway-unreachable": "ehr.hosp.internal", "session-ended": "ehr.hosp.internal"}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(nurse.proc.logs()))
	for sc.Scan() {
		var rec struct {
			Msg    string `json:"msg"`
			App    string `json:"app"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "http: request refused" {
			continue
		}
		got[rec.Reason] = rec.App
	}
	for reason, app := range want {
		if !strings.Contains(got[reason], app) {
			t.Errorf("client log: no \"http: request refused\" record with reason=%s and app %s (got %v)", reason, app, got)
		}
	}
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
