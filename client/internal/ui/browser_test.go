package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/internal/browsertest"
	"github.com/cordonhq/cordon/internal/oidctest"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// browser starts one headless chromium for the whole test, with a fresh
// profile; rebind.test resolves to 127.0.0.1 in it (a DNS rebinding
// attacker's name).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := browsertest.Chromium(t, "the status page")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true), chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1"),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// shot saves a screenshot of the tab as dir/name.png.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Error(err)
	}
}

// open navigates the tab to u and returns the document's status and text.
func open(t *testing.T, ctx context.Context, u string) (int64, string) {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(u))
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	return resp.Status, text(t, ctx, "body")
}

func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("read %s: %v", css, err)
	}
	return s
}

// TestPageInBrowser: the status page in headless chromium, against a
// real controller for the sign-ins. One browser for every case.
func TestPageInBrowser(t *testing.T) {
	ctx := browser(t)
	shots := browsertest.Artifacts(t)

	// A controller with a local user (password and recovery codes) and an
	// identity provider; the device signed in once through the provider
	// as alice, as 'cordon login --controller ... --ca-cert ... --idp test'
	// leaves it.
	idp, err := oidctest.Start(oidctest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddUser(oidctest.User{Username: "alice", Password: "alice-pw", Groups: []string{"Physicians"}})
	ctl := apitest.New(t, apitest.Options{OIDCIssuer: idp.Issuer})
	admin, err := adminapi.New(ctl.URL, ctl.AdminToken, ctl.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const pw = "correct horse battery"
	nurse, err := admin.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: "nurse", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, ctl.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := client.LoginOIDC(t.Context(), client.OIDCLoginConfig{StateDir: state, Controller: ctl.URL, CACert: ca, IdP: "test", Browser: idp.Browser("alice", "alice-pw")})
	if err != nil {
		t.Fatal(err)
	}

	cfg := Config{Tunnel: nurseTunnel(), SignIn: ClientSignIn{StateDir: state}}
	srv := startServer(t, cfg)
	base := "http://" + srv.Addr().String()

	t.Run("refused without the link", func(t *testing.T) {
		code, body := open(t, ctx, base+"/")
		shot(t, ctx, shots, "01-no-token")
		if code != http.StatusForbidden || !strings.Contains(body, whyNoSession) {
			t.Errorf("no token: %d %q, want 403 %q", code, body, whyNoSession)
		}
	})
	t.Run("refused under a rebinding name", func(t *testing.T) {
		code, body := open(t, ctx, strings.Replace(srv.URL(), "127.0.0.1", "rebind.test", 1))
		shot(t, ctx, shots, "02-rebinding")
		if code != http.StatusForbidden || !strings.Contains(body, whyHost) {
			t.Errorf("rebinding: %d %q, want 403 %q", code, body, whyHost)
		}
	})
	t.Run("status", func(t *testing.T) {
		code, body := open(t, ctx, srv.URL())
		shot(t, ctx, shots, "03-status")
		if code != http.StatusOK {
			t.Fatalf("start link: %d %q", code, body)
		}
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); loc != base+"/" {
			t.Errorf("after the start link the address is %q, want %q (the token must leave the address bar)", loc, base+"/")
		}
		for css, want := range map[string]string{
			"#user":                               "Signed in as nurse",
			"#session-left":                       "Time left: 2h 00m",
			"#idle":                               "15m without activity",
			`tr[data-app="ehr"] .state`:           "reachable",
			`tr[data-app="pacs"] .state`:          "gateway-unreachable",
			`tr[data-app="pacs"]`:                 "retrying automatically",
			"#posture":                            "disk-encryption",
			"#posture tr.posture td:nth-child(3)": "turn on disk encryption",
		} {
			if got := text(t, ctx, css); !strings.Contains(got, want) {
				t.Errorf("%s: %q, want %q", css, got, want)
			}
		}
	})
	t.Run("identity provider sign-in", func(t *testing.T) {
		tab := chromedp.WaitNewTarget(ctx, func(i *target.Info) bool { return i.URL != "" && !strings.HasPrefix(i.URL, base) })
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("signin-test"))); err != nil {
			t.Fatal(err)
		}
		var id target.ID
		select {
		case id = <-tab:
		case <-ctx.Done():
			t.Fatal("no tab opened for the identity provider")
		}
		idpCtx, closeTab := chromedp.NewContext(ctx, chromedp.WithTargetID(id))
		defer closeTab()
		if err := chromedp.Do(idpCtx,
			chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), "alice"),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "alice-pw"),
		); err != nil {
			t.Fatalf("identity provider's form: %v", err)
		}
		if _, err := chromedp.RunResponse(idpCtx, chromedp.Click(chromedp.CSS("button"))); err != nil {
			t.Fatal(err)
		}
		shot(t, idpCtx, shots, "04-identity-provider-done")
		if got := text(t, idpCtx, "body"); !strings.Contains(got, "Signed in to Cordon") {
			t.Errorf("the identity provider's redirect ended on %q", got)
		}
		// The page follows the sign-in until the controller has answered.
		deadline := time.Now().Add(30 * time.Second)
		var job string
		for time.Now().Before(deadline) {
			if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(base+"/")); err != nil {
				t.Fatal(err)
			}
			if job = text(t, ctx, "#job"); !strings.Contains(job, "Signing in") {
				break
			}
			time.Sleep(100 * time.Millisecond) // polling the page for the outcome
		}
		shot(t, ctx, shots, "05-identity-provider-sign-in")
		if !strings.Contains(job, "Signed in as alice") {
			t.Errorf("after the identity provider's sign-in the page says %q", job)
		}
		if st, err := agentstate.Load(state); err != nil || st.Enrollment.User != "alice" || st.Enrollment.ID != first.ID {
			t.Errorf("enrollment after the identity provider's sign-in: %+v %v; want alice on device %s", st.Enrollment, err, first.ID)
		}
	})
	t.Run("password sign-in", func(t *testing.T) {
		before, err := agentstate.Load(state)
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx,
			chromedp.Clear(chromedp.ID("in-user")), // prefilled with the last user, alice
			chromedp.SendKeys(chromedp.ID("in-user"), "nurse"),
			chromedp.SendKeys(chromedp.ID("in-password"), pw),
			chromedp.SendKeys(chromedp.ID("in-code"), nurse.RecoveryCodes[0]),
		); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("signin-password"))); err != nil {
			t.Fatal(err)
		}
		shot(t, ctx, shots, "06-password-sign-in")
		if got := text(t, ctx, "#job"); !strings.Contains(got, "Signed in as nurse") {
			t.Errorf("after the sign-in the page says %q", got)
		}
		st, err := agentstate.Load(state)
		if err != nil || st.Enrollment.User != "nurse" || string(st.CertPEM) == string(before.CertPEM) {
			t.Errorf("enrollment after the page's sign-in: %+v %v; want nurse with a new certificate", st.Enrollment, err)
		}
	})
	t.Run("cross-site form refused", func(t *testing.T) {
		// Another local port (same site, other origin) posts to the page:
		// the browser sends the cookie (SameSite does not tell ports
		// apart), so the origin check must refuse it.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<form method="post" action="%s/signin/password"><input name="csrf" value="guess"><input name="user" value="mallory"><button id="go">go</button></form>`, base)
		}))
		defer evil.Close()
		open(t, ctx, evil.URL)
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("go")))
		if err != nil {
			t.Fatal(err)
		}
		shot(t, ctx, shots, "07-cross-site")
		if body := text(t, ctx, "body"); resp.Status != http.StatusForbidden || !strings.Contains(body, whyCrossSite) {
			t.Errorf("cross-site POST: %d %q, want 403 %q", resp.Status, body, whyCrossSite)
		}
	})
	t.Run("session ended by an administrator", func(t *testing.T) {
		// The map of an ended session carries no apps.
		ended := fixedTunnel{st: &client.Status{Mode: "tun", User: "nurse", DeviceID: "dev-1", Controller: "https://ctl.example:8443", ControlConnected: true,
			Session: &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "admin",
				Message: "an administrator ended your session at 07:55: sign in again with 'cordon login'"}}}
		srv := startServer(t, Config{Tunnel: ended, SignIn: ClientSignIn{StateDir: state}})
		code, body := open(t, ctx, srv.URL())
		shot(t, ctx, shots, "08-session-ended")
		if code != http.StatusOK {
			t.Fatalf("start link: %d %q", code, body)
		}
		for css, want := range map[string]string{
			"#user":          "Not signed in (last: nurse)",
			"#session-ended": "an administrator ended your session",
			"#apps-closed":   "closed until you sign in again",
		} {
			if got := text(t, ctx, css); !strings.Contains(got, want) {
				t.Errorf("%s: %q, want %q", css, got, want)
			}
		}
	})
	t.Run("another page's cookie", func(t *testing.T) {
		// The browser holds this page's cookie and sends it to every
		// loopback port: a second page must not take it.
		other := startServer(t, cfg)
		code, body := open(t, ctx, "http://"+other.Addr().String()+"/")
		shot(t, ctx, shots, "09-other-instance")
		if code != http.StatusForbidden || !strings.Contains(body, whyNoSession) {
			t.Errorf("second page with the first one's cookie: %d %q, want 403", code, body)
		}
	})
}
