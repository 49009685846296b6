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
}

// BrowserTimeout bounds the wait for the browser to come back.
const BrowserTimeout = 5 * time.Minute

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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the sign-in redirect on a loopback port: %w", err)
	}
	redirect := "http://" + ln.Addr().String() + "/callback"
	verifier := oauth2.GenerateVerifier()
	st, err := start(ctx, redirect, oauth2.S256ChallengeFromVerifier(verifier))
	if err != nil {
		ln.Close()
		return err
	}

	got := make(chan callback, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
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

	fmt.Fprintf(cfg.Out, "Sign in with %s in your browser. If it did not open, visit:\n\n  %s\n\n", cfg.IdP, st.AuthURL)
	ctx, cancel := context.WithTimeout(ctx, BrowserTimeout)
	defer cancel()
	browserErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later runs first): the browser stops
	defer cancel()
	wg.Go(func() { browserErr <- OpenBrowser(ctx, cfg.Browser, st.AuthURL) })
	var cb callback
	for cb.code == "" && cb.err == nil {
		select {
		case cb = <-got:
		case err := <-browserErr:
			if err != nil && cfg.Browser != nil {
				return fmt.Errorf("browser: %w", err)
			}
			browserErr = nil // a missing xdg-open is fine: the URL was printed
		case <-ctx.Done():
			return fmt.Errorf("no sign-in completed in the browser: %w", context.Cause(ctx))
		}
	}
	if cb.err != nil {
		return cb.err
	}
	return finish(ctx, st.LoginID, cb.code, verifier)
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
