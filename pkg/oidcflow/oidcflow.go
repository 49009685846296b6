// Package oidcflow is the user's side of an OpenID Connect sign-in whose
// relying party is the controller: for the code flow it listens on a
// loopback port for the redirect (RFC 8252), holds the PKCE verifier
// (RFC 7636) and opens the browser; for the device flow (RFC 8628) it
// shows the code and polls at the interval the controller gives. The
// client (cordon login --idp) and cordonctl (cordonctl login --admin NAME
// --idp) share it; each supplies the two controller calls of its own
// routes, so this package knows nothing of what the sign-in yields.
package oidcflow

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"golang.org/x/oauth2"
)

// Config is what a sign-in needs from the user's side.
type Config struct {
	IdP string // the provider's name, shown to the user
	// Browser opens the sign-in URL. Nil: the command in $BROWSER, else
	// xdg-open, best effort (the URL is always printed too).
	Browser func(ctx context.Context, url string) error
	// Out receives what the user must read (the URL, the device code).
	Out io.Writer
	// Again is the command that starts over, for messages ("cordon login").
	Again string
	// RedirectHost and RedirectPort are the loopback redirect to listen
	// on, http://HOST:PORT/callback, as the controller says the IdP has it
	// registered (OIDCProvider): HOST 127.0.0.1 (default), localhost or
	// [::1]; PORT 0 picks a free port.
	RedirectHost string
	RedirectPort uint16
	// Handback, if set, carries redirect URLs that the caller's browser
	// session caught itself (a mobile shell's), for the code flow: each
	// is checked as a request to the loopback listener is.
	Handback <-chan string
	// Timeout bounds the wait for the browser to come back (default
	// BrowserTimeout); after HintAfter (default BrowserHintAfter) the user
	// is told what to check.
	Timeout, HintAfter time.Duration
}

// BrowserTimeout bounds the wait for the browser to come back.
const BrowserTimeout = 5 * time.Minute

// BrowserHintAfter is when a sign-in still waiting for the browser tells
// the user what to check.
const BrowserHintAfter = time.Minute

// ErrNoRedirect: the browser never came back to the loopback redirect.
var ErrNoRedirect = errors.New("the browser never came back to Cordon")

// listen opens the loopback redirect listener(s) of cfg and returns them
// with the redirect URI. "localhost" listens on 127.0.0.1 and, on the same
// port, on ::1 when the machine has it (browsers resolve localhost to
// either).
func listen(cfg Config) ([]net.Listener, string, error) {
	host := cfg.RedirectHost
	if host == "" {
		host = "127.0.0.1"
	}
	bind := host
	switch host {
	case "localhost":
		bind = "127.0.0.1"
	case "127.0.0.1", "[::1]":
	default:
		return nil, "", fmt.Errorf("redirect host %q is not a loopback host (127.0.0.1, localhost or [::1]): check redirect_host in the controller's OIDC configuration", host)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(strings.Trim(bind, "[]"), fmt.Sprint(cfg.RedirectPort)))
	if err != nil {
		if cfg.RedirectPort != 0 {
			return nil, "", fmt.Errorf("listen on %s:%d for the sign-in redirect (the IdP accepts only http://%s:%d/callback): %w; is another sign-in running? close it and try again",
				host, cfg.RedirectPort, host, cfg.RedirectPort, err)
		}
		return nil, "", fmt.Errorf("listen for the sign-in redirect on a loopback port: %w", err)
	}
	lns := []net.Listener{ln}
	port := ln.Addr().(*net.TCPAddr).Port
	if host == "localhost" {
		if ln6, err := net.Listen("tcp", net.JoinHostPort("::1", fmt.Sprint(port))); err == nil {
			lns = append(lns, ln6)
		}
	}
	return lns, fmt.Sprintf("http://%s:%d/callback", host, port), nil
}

// noRedirect says what to check when the browser did not come back.
func noRedirect(cfg Config, redirect string, waited time.Duration) error {
	return fmt.Errorf("%w within %s. Check that:\n"+
		"  - you finished signing in with %s in the browser;\n"+
		"  - the identity provider did not show an error about the redirect URI: it must have %s registered for Cordon's client exactly (see 'Registering Cordon at your IdP' in docs/identity.md; a fixed port is redirect_port in the controller's OIDC configuration);\n"+
		"  - the browser runs on this machine: on a remote or headless machine use --device-code.\n"+
		"Then run '%s' again", ErrNoRedirect, waited, cfg.IdP, redirect, cfg.Again)
}

// StartFunc asks the controller to begin a code sign-in whose redirect
// comes to redirectURI, with the S256 challenge of the verifier.
type StartFunc func(ctx context.Context, redirectURI, challenge string) (controlproto.OIDCStartResponse, error)

// FinishFunc hands the controller the code and the PKCE verifier of
// sign-in loginID.
type FinishFunc func(ctx context.Context, loginID, code, verifier string) error

// callback is what the loopback listener received.
type callback struct {
	code string
	err  error
}

// Code runs the authorization code flow with PKCE and a loopback
// redirect: start, open the browser, wait for the redirect (whose state
// must match), finish.
func Code(ctx context.Context, cfg Config, start StartFunc, finish FinishFunc) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	lns, redirect, err := listen(cfg)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	verifier := oauth2.GenerateVerifier()
	st, err := start(ctx, redirect, oauth2.S256ChallengeFromVerifier(verifier))
	if err != nil {
		closeAll()
		return err
	}

	got := make(chan callback, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.Error(w, "Cordon waits for the sign-in at /callback: the redirect URI registered at the identity provider must be "+redirect, http.StatusNotFound)
			return
		}
		cb, ok := readCallback(r.URL.Query(), st.State)
		if !ok {
			http.Error(w, "This sign-in response is not for this Cordon sign-in. Close this tab.", http.StatusBadRequest)
			return
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
	for _, ln := range lns {
		go srv.Serve(ln)
	}
	defer srv.Close()

	fmt.Fprintf(cfg.Out, "Sign in with %s in your browser. If it did not open, visit:\n\n  %s\n\n", cfg.IdP, st.AuthURL)
	timeout, hintAfter := cfg.Timeout, cfg.HintAfter
	if timeout <= 0 {
		timeout = BrowserTimeout
	}
	if hintAfter <= 0 {
		hintAfter = BrowserHintAfter
	}
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hint := time.NewTimer(hintAfter)
	defer hint.Stop()
	browserErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later runs first): the browser stops
	defer cancel()
	wg.Go(func() { browserErr <- OpenBrowser(ctx, cfg.Browser, st.AuthURL) })
	var cb callback
	for cb.code == "" && cb.err == nil {
		select {
		case cb = <-got:
		case u := <-cfg.Handback:
			ru, err := url.Parse(u)
			if err != nil {
				return fmt.Errorf("the redirect handed back: %w", err)
			}
			var ok bool
			if cb, ok = readCallback(ru.Query(), st.State); !ok {
				return errors.New("the redirect handed back is not for this sign-in (its state differs): start the sign-in again")
			}
		case err := <-browserErr:
			if err != nil && cfg.Browser != nil {
				return fmt.Errorf("browser: %w", err)
			}
			browserErr = nil // a missing xdg-open is fine: the URL was printed
		case <-hint.C:
			fmt.Fprintf(cfg.Out, "Still waiting for the browser to come back to %s. If %s showed an error about the redirect URI, that address is not registered there exactly; see 'Registering Cordon at your IdP' in docs/identity.md. On a machine without a browser, use --device-code.\n", redirect, cfg.IdP)
		case <-ctx.Done():
			if outer.Err() != nil { // the caller gave up (interrupt, its own deadline)
				return fmt.Errorf("no sign-in completed in the browser: %w", context.Cause(outer))
			}
			return noRedirect(cfg, redirect, timeout)
		}
	}
	if cb.err != nil {
		return cb.err
	}
	return finish(ctx, st.LoginID, cb.code, verifier)
}

// readCallback reads the redirect's query; ok is false when its state is
// not want (compared in constant time).
func readCallback(q url.Values, want string) (cb callback, ok bool) {
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(want)) != 1 {
		return cb, false
	}
	if e := q.Get("error"); e != "" {
		cb.err = fmt.Errorf("the identity provider refused the sign-in: %s %s", e, q.Get("error_description"))
	} else if cb.code = q.Get("code"); cb.code == "" {
		cb.err = errors.New("the identity provider sent no authorization code")
	}
	return cb, true
}

// WithRedirect returns cfg with the loopback redirect the controller gives
// for provider cfg.IdP (GET /v1/oidc/providers), so that the redirect URI
// matches the one registered at the IdP; cfg unchanged when the controller
// names none or cannot be asked (the start call then reports why).
func WithRedirect(ctx context.Context, api *adminapi.Client, cfg Config) Config {
	var provs controlproto.OIDCProviders
	if err := api.Do(ctx, http.MethodGet, "/v1/oidc/providers", nil, &provs); err != nil {
		return cfg
	}
	for _, p := range provs.Providers {
		if p.Name == cfg.IdP && p.RedirectHost != "" {
			cfg.RedirectHost, cfg.RedirectPort = p.RedirectHost, p.RedirectPort
		}
	}
	return cfg
}

// OpenBrowser opens url with open, or $BROWSER, or xdg-open.
func OpenBrowser(ctx context.Context, open func(context.Context, string) error, url string) error {
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

// PollFunc asks the controller once whether device sign-in loginID is
// done: nil when it is, else the controller's error (the pending and
// slow_down answers are handled by Device).
type PollFunc func(ctx context.Context, loginID string) error

// Device runs the device authorization grant begun by start: show the
// code, poll the controller at the interval it gives (longer after
// slow_down) until the sign-in is done, expired or denied.
func Device(ctx context.Context, cfg Config, start func(ctx context.Context) (controlproto.OIDCDeviceResponse, error), poll PollFunc) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	ds, err := start(ctx)
	if err != nil {
		return err
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
			return fmt.Errorf("the code was not confirmed in time: run '%s' again", cfg.Again)
		}
		err := poll(ctx, ds.LoginID)
		var ae *adminapi.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCPending:
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCSlowDown:
			interval += 5 * time.Second // RFC 8628 §3.5
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCExpired:
			return fmt.Errorf("the code expired before it was confirmed: run '%s' again", cfg.Again)
		case errors.As(err, &ae) && ae.Code == controlproto.OIDCDenied:
			return errors.New("the sign-in was denied at the identity provider")
		default:
			return err
		}
	}
}
