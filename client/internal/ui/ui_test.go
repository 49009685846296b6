package ui

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// fixedTunnel is a tunnel's answer over the local socket, fixed for a
// test (the tunnel side is tested in client/).
type fixedTunnel struct {
	st  *client.Status
	err error
}

func (f fixedTunnel) Status() (*client.Status, error) { return f.st, f.err }

// clock is the tests' injected time.
var clock = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// gatewayWith is gateway gw serving one app in state v.
func gatewayWith(gw, name, dns, addr string, v reach.Verdict) client.GatewayStatus {
	return client.GatewayStatus{ID: gw, Apps: []client.AppStatus{{
		App: controlproto.App{Name: name, DNSName: dns, Addr: netip.MustParsePrefix(addr), Proto: policy.ProtoTCP,
			Ports: []policy.PortRange{{First: 443, Last: 443}}},
		State: v,
	}}}
}

// nurseTunnel: nurse signed in, 2 hours of session left, the EHR
// reachable, PACS behind a gateway that does not answer, and a posture
// check failing for the lab app.
func nurseTunnel() fixedTunnel {
	return fixedTunnel{
		st: &client.Status{Mode: "userspace", User: "nurse", DeviceID: "dev-1", Controller: "https://ctl.example:8443", ControlConnected: true,
			Session: &controlproto.SessionInfo{State: controlproto.SessionActive, StartedAt: clock.Add(-time.Hour), ExpiresAt: clock.Add(2 * time.Hour),
				IdleLimit: 15 * time.Minute,
				Posture:   []controlproto.PostureFinding{{Check: "disk-encryption", Fix: "turn on disk encryption (ask IT)", Apps: []string{"lab"}}}},
			Gateways: []client.GatewayStatus{
				gatewayWith("gw-2", "pacs", "pacs.hospital.internal.", "10.20.0.9/32", reach.For(reach.ReasonGatewayUnreachable)),
				gatewayWith("gw-1", "ehr", "ehr.hospital.internal.", "10.20.0.5/32", reach.For(reach.ReasonOK)),
			}},
	}
}

// startServer serves a page until the test ends.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return clock }
	}
	srv, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

// noRedirects is an HTTP client that shows redirects instead of following.
func noRedirects() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	code int
	body string
	resp *http.Response
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := noRedirects().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp}
}

func get(t *testing.T, u string, mod func(*http.Request)) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(req)
	}
	return do(t, req)
}

func post(t *testing.T, u string, form url.Values, mod func(*http.Request)) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if mod != nil {
		mod(req)
	}
	return do(t, req)
}

// redeem opens srv's start link and returns the session cookie it gives.
func redeem(t *testing.T, srv *Server) *http.Cookie {
	t.Helper()
	a := get(t, srv.URL(), nil)
	if a.code != http.StatusSeeOther || a.resp.Header.Get("Location") != "/" {
		t.Fatalf("start link: %d %q, want 303 to /", a.code, a.resp.Header.Get("Location"))
	}
	cs := a.resp.Cookies()
	if len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("start link set cookies %+v, want one HttpOnly SameSite=Strict cookie", cs)
	}
	return cs[0]
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestGuard: what the page refuses, and why, over plain HTTP; the same
// in a browser is TestPageInBrowser.
func TestGuard(t *testing.T) {
	cfg := Config{Tunnel: nurseTunnel(), SignIn: ClientSignIn{StateDir: t.TempDir()}}
	srv := startServer(t, cfg)
	base := "http://" + srv.Addr().String()

	// No token, a wrong token: refused.
	if a := get(t, base+"/", nil); a.code != http.StatusForbidden || !strings.Contains(a.body, whyNoSession) {
		t.Errorf("no token: %d %q, want 403 %q", a.code, a.body, whyNoSession)
	}
	if a := get(t, base+"/?token=guess", nil); a.code != http.StatusForbidden {
		t.Errorf("wrong token: %d, want 403", a.code)
	}
	// A rebinding name that resolves to 127.0.0.1: refused even with the
	// right token, and the token is not spent.
	if a := get(t, srv.URL(), func(r *http.Request) { r.Host = "attacker.example:" + portOf(srv) }); a.code != http.StatusForbidden || !strings.Contains(a.body, whyHost) {
		t.Errorf("rebinding Host: %d %q, want 403 %q", a.code, a.body, whyHost)
	}
	cookie := redeem(t, srv)
	if a := get(t, srv.URL(), nil); a.code != http.StatusForbidden || !strings.Contains(a.body, whyUsed) {
		t.Errorf("start link used twice: %d %q, want 403 %q", a.code, a.body, whyUsed)
	}
	withCookie := func(c *http.Cookie) func(*http.Request) { return func(r *http.Request) { r.AddCookie(c) } }
	page := get(t, base+"/", withCookie(cookie))
	if page.code != http.StatusOK || !strings.Contains(page.body, "nurse") {
		t.Fatalf("page with the cookie: %d\n%s", page.code, page.body)
	}
	if !strings.Contains(page.body, `id="first-sign-in"`) {
		t.Errorf("a device that never signed in is not told to run 'cordon login --controller' once:\n%s", page.body)
	}
	for h, want := range map[string]string{"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "DENY", "Access-Control-Allow-Origin": ""} {
		if got := page.resp.Header.Get(h); !strings.Contains(got, want) || (want == "" && got != "") {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if a := get(t, base+"/", func(r *http.Request) { r.AddCookie(cookie); r.Host = "attacker.example:" + portOf(srv) }); a.code != http.StatusForbidden {
		t.Errorf("rebinding Host with the cookie: %d, want 403", a.code)
	}
	m := csrfRE.FindStringSubmatch(page.body)
	if m == nil {
		t.Fatal("no CSRF token in the page")
	}
	form := url.Values{"csrf": {m[1]}, "user": {"nurse"}, "password": {"x"}, "code": {"123456"}}
	for _, tc := range []struct {
		name string
		form url.Values
		mod  func(*http.Request)
		why  string
	}{
		{"wrong Origin", form, func(r *http.Request) { r.AddCookie(cookie); r.Header.Set("Origin", "http://attacker.example") }, whyCrossSite},
		{"cross-site fetch", form, func(r *http.Request) { r.AddCookie(cookie); r.Header.Set("Sec-Fetch-Site", "cross-site") }, whyCrossSite},
		{"other port of loopback", form, func(r *http.Request) { r.AddCookie(cookie); r.Header.Set("Sec-Fetch-Site", "same-site") }, whyCrossSite},
		{"no CSRF token", url.Values{"user": {"nurse"}}, withCookie(cookie), whyCSRF},
		{"no cookie", form, nil, whyNoSession},
	} {
		if a := post(t, base+"/signin/password", tc.form, tc.mod); a.code != http.StatusForbidden || !strings.Contains(a.body, tc.why) {
			t.Errorf("%s: %d %q, want 403 %q", tc.name, a.code, a.body, tc.why)
		}
	}
	// The page's own form goes through (and the sign-in runs: this device
	// never signed in, so it says what is missing).
	a := post(t, base+"/signin/password", form, func(r *http.Request) {
		r.AddCookie(cookie)
		r.Header.Set("Origin", base)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	})
	if a.code != http.StatusSeeOther {
		t.Fatalf("same-origin sign-in: %d %q, want 303", a.code, a.body)
	}
	if p := get(t, base+"/", withCookie(cookie)); !strings.Contains(p.body, "Sign-in failed: no controller given") {
		t.Errorf("page after a sign-in without enrollment does not say why it failed:\n%s", p.body)
	}

	// A second server's cookie does not open this one, neither under its
	// own name nor under this server's.
	other := startServer(t, cfg)
	otherCookie := redeem(t, other)
	if otherCookie.Name == cookie.Name || otherCookie.Value == cookie.Value {
		t.Fatalf("two servers share a cookie name or value: %s=%s and %s=%s", cookie.Name, cookie.Value, otherCookie.Name, otherCookie.Value)
	}
	for _, c := range []*http.Cookie{otherCookie, {Name: cookie.Name, Value: otherCookie.Value}} {
		if a := get(t, base+"/", withCookie(c)); a.code != http.StatusForbidden {
			t.Errorf("cookie %s of another server: %d, want 403", c.Name, a.code)
		}
	}
}

func portOf(s *Server) string {
	_, p, _ := strings.Cut(s.Addr().String(), "]:")
	if p == "" {
		_, p, _ = strings.Cut(s.Addr().String(), ":")
	}
	return p
}

func TestHostAllowed(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1:8000", true},
		{"localhost:8000", true},
		{"[::1]:8000", true},
		{"127.0.0.1:8001", false},
		{"127.0.0.1", false},
		{"evil.example:8000", false},
		{"localhost.evil.example:8000", false},
		{"10.0.0.1:8000", false},
		{"[fe80::1%eth0]:8000", false},
		{"", false},
	} {
		if got := hostAllowed(tc.host, 8000); got != tc.want {
			t.Errorf("hostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", "localhost:0", ":0", "[::]:0"} {
		if s, err := Listen(addr, Config{}); err == nil {
			s.Close()
			t.Errorf("Listen(%q) accepted a non-loopback address", addr)
		}
	}
}

func TestBuildView(t *testing.T) {
	tun := nurseTunnel()
	v := View{Now: clock}
	buildView(&v, tun.st, nil)
	if v.User != "nurse" || v.Session == nil || v.Session.Left != 2*time.Hour || v.Session.IdleLimit != 15*time.Minute {
		t.Fatalf("view %+v session %+v", v, v.Session)
	}
	if len(v.Apps) != 2 || v.Apps[0].Name != "ehr" || !v.Apps[0].Reachable() || v.Apps[1].Reachable() || v.Apps[1].Next == "" {
		t.Errorf("apps %+v, want ehr reachable then pacs not, with a next step", v.Apps)
	}
	if len(v.Posture) != 1 || v.Posture[0].Apps != "lab" {
		t.Errorf("posture %+v", v.Posture)
	}
	if v.Session.IdleKnown {
		t.Errorf("idle time left known with no app traffic: %+v", v.Session)
	}

	// The idle time left, estimated from the last app traffic: 4 minutes
	// ago under a 15-minute limit, then longer ago than the limit.
	for _, c := range []struct{ ago, left time.Duration }{{4 * time.Minute, 11 * time.Minute}, {20 * time.Minute, 0}} {
		last := clock.Add(-c.ago)
		st := *tun.st
		st.LastAppTraffic = &last
		v = View{Now: clock}
		buildView(&v, &st, nil)
		if !v.Session.IdleKnown || v.Session.IdleLeft != c.left {
			t.Errorf("app traffic %v ago: idle left %v (known %v), want %v", c.ago, v.Session.IdleLeft, v.Session.IdleKnown, c.left)
		}
	}

	// The session past its end: no negative time left.
	v = View{Now: clock.Add(3 * time.Hour)}
	buildView(&v, tun.st, nil)
	if v.Session.Left != 0 {
		t.Errorf("time left after the end: %v", v.Session.Left)
	}

	// No tunnel.
	v = View{Now: clock}
	buildView(&v, nil, client.ErrNotUp)
	if v.Up || !strings.Contains(v.Down, "cordon up") {
		t.Errorf("no tunnel: %+v", v)
	}
}

func TestLeft(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2*time.Hour + 5*time.Minute: "2h 05m", 12*time.Minute + 30*time.Second: "12m", 40 * time.Second: "40s", 0: "0s",
	} {
		if got := Left(d); got != want {
			t.Errorf("Left(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestIsTOTP(t *testing.T) {
	for code, want := range map[string]bool{
		"123456": true, "12345678": true, "12345": false, "123456789": false, "12a456": false,
		"abcd-efgh-jkmn-pqrs": false, "": false,
	} {
		if got := isTOTP(code); got != want {
			t.Errorf("isTOTP(%q) = %v, want %v", code, got, want)
		}
	}
}

// waitingIdP is a sign-in whose identity provider never comes back: the
// user closed its tab.
type waitingIdP struct{ ClientSignIn }

func (waitingIdP) OIDC(ctx context.Context, idp string, open func(string), out io.Writer) (*agentstate.Enrollment, error) {
	open("https://idp.example/authorize")
	<-ctx.Done()
	return nil, context.Cause(ctx)
}

func (waitingIdP) Password(ctx context.Context, user, password, code string) (*agentstate.Enrollment, error) {
	return &agentstate.Enrollment{User: user}, nil
}

// TestSignInReplacesAbandoned: a provider sign-in left waiting does not
// block the next sign-in for its minutes of timeout.
func TestSignInReplacesAbandoned(t *testing.T) {
	j := &jobs{signIn: waitingIdP{}}
	defer j.wait()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u, err := j.oidc(ctx, "okta")
	if err != nil || u != "https://idp.example/authorize" {
		t.Fatalf("oidc: %q %v", u, err)
	}
	if v := j.view(); !v.Running || v.URL != u {
		t.Fatalf("job while waiting for the browser: %+v", v)
	}
	if err := j.password(ctx, "nurse", "pw", "123456"); err != nil {
		t.Fatalf("password sign-in after an abandoned provider sign-in: %v", err)
	}
	if v := j.view(); v.Running || v.What != "password" || v.User != "nurse" {
		t.Errorf("job after the password sign-in: %+v", v)
	}
}
