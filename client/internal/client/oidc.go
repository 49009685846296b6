package client

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/enroll"
	"golang.org/x/oauth2"
)

// OIDCLoginConfig configures LoginOIDC.
type OIDCLoginConfig struct {
	StateDir   string
	Controller string
	CACert     string
	IdP        string // the provider's name (cordon login --idp)
	// DeviceCode uses the device authorization grant: the user confirms
	// a code on another device (headless machines).
	DeviceCode bool
	// Browser opens the sign-in URL. Nil: the command in $BROWSER, else
	// xdg-open, best effort (the URL is always printed too).
	Browser func(ctx context.Context, url string) error
	// Out receives what the user must read (the URL, the device code).
	Out io.Writer
}

// LoginOIDC signs the user in through an identity provider and enrolls
// (or re-enrolls) this device. The controller talks to the provider; this
// side only opens the browser and catches the redirect on a loopback port
// (RFC 8252), holding the PKCE verifier (RFC 7636) that makes the code
// useless to anyone else, or shows a device code (RFC 8628).
func LoginOIDC(ctx context.Context, cfg OIDCLoginConfig) (*agentstate.Enrollment, error) {
	if cfg.Controller == "" {
		return nil, errors.New("no controller given: pass --controller https://HOST:PORT")
	}
	if cfg.IdP == "" {
		return nil, errors.New("no identity provider given: pass --idp NAME")
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	caPEM, err := enroll.ReadCA(cfg.CACert)
	if err != nil {
		return nil, err
	}
	st, err := agentstate.Keys(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	var deviceID string
	if old, err := agentstate.Load(cfg.StateDir); err == nil && old.Enrollment.Controller == cfg.Controller {
		deviceID = old.Enrollment.ID // this device, whoever signed in on it last
	}
	csr, err := st.CSR("cordon-device")
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	dev := controlproto.DeviceEnroll{Hostname: host, PublicKey: st.WGKey.Public(), CSR: csr, DeviceID: deviceID}
	api, err := adminapi.New(cfg.Controller, "", caPEM)
	if err != nil {
		return nil, err
	}
	defer api.Close()

	var resp *controlproto.EnrollResponse
	if cfg.DeviceCode {
		resp, err = deviceLogin(ctx, api, cfg, dev)
	} else {
		resp, err = codeLogin(ctx, api, cfg, dev)
	}
	if err != nil {
		return nil, fmt.Errorf("sign in with %s: %w", cfg.IdP, err)
	}
	if err := enroll.Save(st, cfg.Controller, caPEM, resp); err != nil {
		return nil, err
	}
	return &st.Enrollment, nil
}

// callback is what the loopback listener received.
type callback struct {
	code string
	err  error
}

// codeLogin runs the authorization code flow with PKCE and a loopback
// redirect.
func codeLogin(ctx context.Context, api *adminapi.Client, cfg OIDCLoginConfig, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the sign-in redirect on a loopback port: %w", err)
	}
	redirect := "http://" + ln.Addr().String() + "/callback"
	verifier := oauth2.GenerateVerifier()
	var start controlproto.OIDCStartResponse
	if err := api.Do(ctx, http.MethodPost, "/v1/login/oidc/start", controlproto.OIDCStartRequest{
		IdP: cfg.IdP, RedirectURI: redirect, CodeChallenge: oauth2.S256ChallengeFromVerifier(verifier),
	}, &start); err != nil {
		ln.Close()
		return nil, err
	}

	got := make(chan callback, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(start.State)) != 1 {
			http.Error(w, "This sign-in response is not for this Cordon sign-in. Close this tab.", http.StatusBadRequest)
			return
		}
		var cb callback
		if e := q.Get("error"); e != "" {
			cb.err = fmt.Errorf("the identity provider refused the sign-in: %s %s", e, q.Get("error_description"))
		} else if cb.code = q.Get("code"); cb.code == "" {
			cb.err = errors.New("the identity provider sent no authorization code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if cb.err != nil {
			fmt.Fprintf(w, "<!doctype html><title>Cordon</title><p>Sign-in failed: %s</p>", html.EscapeString(cb.err.Error()))
		} else {
			io.WriteString(w, "<!doctype html><title>Cordon</title><p>Signed in to Cordon. You can close this tab.</p>")
		}
		select {
		case got <- cb:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintf(cfg.Out, "Sign in with %s in your browser. If it did not open, visit:\n\n  %s\n\n", cfg.IdP, start.AuthURL)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	browserErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later runs first): the browser stops
	defer cancel()
	wg.Go(func() { browserErr <- openBrowser(ctx, cfg.Browser, start.AuthURL) })
	var cb callback
	for cb.code == "" && cb.err == nil {
		select {
		case cb = <-got:
		case err := <-browserErr:
			if err != nil && cfg.Browser != nil {
				return nil, fmt.Errorf("browser: %w", err)
			}
			browserErr = nil // a missing xdg-open is fine: the URL was printed
		case <-ctx.Done():
			return nil, fmt.Errorf("no sign-in completed in the browser: %w", context.Cause(ctx))
		}
	}
	if cb.err != nil {
		return nil, cb.err
	}
	var out controlproto.EnrollResponse
	err = api.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{
		LoginID: start.LoginID, Code: cb.code, CodeVerifier: verifier, DeviceEnroll: dev,
	}, &out)
	return &out, err
}

// openBrowser opens url with open, or $BROWSER, or xdg-open.
func openBrowser(ctx context.Context, open func(context.Context, string) error, url string) error {
	if open != nil {
		return open(ctx, url)
	}
	var argv []string
	if b := strings.Fields(os.Getenv("BROWSER")); len(b) > 0 {
		argv = append(b, url)
	} else if p, err := exec.LookPath("xdg-open"); err == nil {
		argv = []string{p, url}
	} else {
		return nil
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	return cmd.Run()
}

// deviceLogin runs the device authorization grant: show the code, poll
// the controller at the interval it gives (longer after slow_down).
func deviceLogin(ctx context.Context, api *adminapi.Client, cfg OIDCLoginConfig, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
	var ds controlproto.OIDCDeviceResponse
	if err := api.Do(ctx, http.MethodPost, "/v1/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: cfg.IdP}, &ds); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "To sign in, open %s on any device and enter the code:\n\n  %s\n\n", ds.VerificationURI, ds.UserCode)
	if ds.VerificationURIComplete != "" {
		fmt.Fprintf(cfg.Out, "(or open %s)\n", ds.VerificationURIComplete)
	}
	interval := time.Duration(max(ds.Interval, 1)) * time.Second
	ctx, cancel := context.WithDeadline(ctx, ds.ExpiresAt.Add(interval))
	defer cancel()
	for {
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return nil, errors.New("the code was not confirmed in time: run 'cordon login' again")
		}
		var out controlproto.EnrollResponse
		err := api.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{LoginID: ds.LoginID, DeviceEnroll: dev}, &out)
		var ae *adminapi.Error
		switch {
		case err == nil:
			return &out, nil
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCPending:
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCSlowDown:
			interval += 5 * time.Second // RFC 8628 §3.5
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCExpired:
			return nil, errors.New("the code expired before it was confirmed: run 'cordon login' again")
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCDenied:
			return nil, errors.New("the sign-in was denied at the identity provider")
		default:
			return nil, err
		}
	}
}

// OIDCProviders lists the identity providers the controller offers.
func OIDCProviders(ctx context.Context, controller, caCert string) ([]controlproto.OIDCProvider, error) {
	caPEM, err := enroll.ReadCA(caCert)
	if err != nil {
		return nil, err
	}
	api, err := adminapi.New(controller, "", caPEM)
	if err != nil {
		return nil, err
	}
	defer api.Close()
	var out controlproto.OIDCProviders
	if err := api.Do(ctx, http.MethodGet, "/v1/oidc/providers", nil, &out); err != nil {
		return nil, err
	}
	return out.Providers, nil
}
