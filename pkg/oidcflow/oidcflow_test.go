package oidcflow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// syncBuffer is an io.Writer the test reads while Code writes.
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

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// run signs in with cfg: the "IdP" redirects the browser to the redirect
// URI with the state and code "c0de" once ready() says so.
func run(t *testing.T, cfg Config, ready func() bool) (redirect, code string, err error) {
	t.Helper()
	var state = "st4te"
	cfg.Browser = func(ctx context.Context, _ string) error {
		for !ready() {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Millisecond):
			}
		}
		resp, err := http.Get(redirect + "?state=" + state + "&code=c0de")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	err = Code(t.Context(), cfg,
		func(_ context.Context, r, _ string) (controlproto.OIDCStartResponse, error) {
			redirect = r
			return controlproto.OIDCStartResponse{LoginID: "l1", AuthURL: "http://idp.example/authorize", State: state}, nil
		},
		func(_ context.Context, _, c, _ string) error { code = c; return nil })
	return redirect, code, err
}

// TestFixedRedirect: the configured host and port are the redirect URI
// exactly (what the IdP has registered), and the code arrives there.
func TestFixedRedirect(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "localhost"} {
		port := freePort(t)
		redirect, code, err := run(t, Config{IdP: "dex", RedirectHost: host, RedirectPort: port}, func() bool { return true })
		if want := fmt.Sprintf("http://%s:%d/callback", host, port); err != nil || redirect != want || code != "c0de" {
			t.Errorf("host %s: redirect %q, code %q, %v; want %s and the code", host, redirect, code, err, want)
		}
	}
	// Default: 127.0.0.1 on any free port.
	if redirect, _, err := run(t, Config{IdP: "okta"}, func() bool { return true }); err != nil || !strings.HasPrefix(redirect, "http://127.0.0.1:") {
		t.Errorf("default redirect %q, %v", redirect, err)
	}
}

// TestFixedRedirectPortBusy: a fixed port in use says what to do.
func TestFixedRedirectPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	_, _, err = run(t, Config{IdP: "dex", RedirectPort: port}, func() bool { return true })
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("accepts only http://127.0.0.1:%d/callback", port)) || !strings.Contains(err.Error(), "another sign-in running") {
		t.Errorf("busy fixed port: %v", err)
	}
}

// TestBrowserNeverComesBack: the wait ends with what to check (the
// redirect URI to register, --device-code), not "context deadline
// exceeded".
func TestBrowserNeverComesBack(t *testing.T) {
	var out syncBuffer
	_, _, err := run(t, Config{IdP: "dex", Out: &out, Again: "cordon login --idp dex", Timeout: 100 * time.Millisecond, HintAfter: time.Hour},
		func() bool { return false })
	if !errors.Is(err, ErrNoRedirect) {
		t.Fatalf("err = %v, want ErrNoRedirect", err)
	}
	msg := err.Error()
	for _, want := range []string{"http://127.0.0.1:", "/callback registered", "--device-code", "docs/identity.md", "cordon login --idp dex"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "deadline exceeded") {
		t.Errorf("error still says deadline exceeded:\n%s", msg)
	}
}

// TestBrowserSlowHint: a sign-in still waiting tells the user what to
// check, and still completes when the browser comes back.
func TestBrowserSlowHint(t *testing.T) {
	var out syncBuffer
	_, code, err := run(t, Config{IdP: "dex", Out: &out, HintAfter: time.Millisecond},
		func() bool { return strings.Contains(out.String(), "Still waiting for the browser") })
	if err != nil || code != "c0de" {
		t.Fatalf("code %q, %v", code, err)
	}
	if !strings.Contains(out.String(), "redirect URI") {
		t.Errorf("hint: %s", out.String())
	}
}

// TestHandback: a redirect the caller's browser session caught itself
// (a mobile shell's) completes the sign-in without the loopback listener
// seeing it; one whose state differs is refused, not taken.
func TestHandback(t *testing.T) {
	for _, tc := range []struct {
		state, wantCode, wantErr string
	}{
		{state: "st4te", wantCode: "c0de"},
		{state: "other", wantErr: "not for this sign-in"},
	} {
		hb := make(chan string, 1)
		var code string
		err := Code(t.Context(), Config{IdP: "dex", Handback: hb, Timeout: time.Minute,
			Browser: func(_ context.Context, u string) error {
				hb <- "http://127.0.0.1:1/callback?state=" + tc.state + "&code=c0de"
				return nil
			}},
			func(context.Context, string, string) (controlproto.OIDCStartResponse, error) {
				return controlproto.OIDCStartResponse{LoginID: "l1", AuthURL: "http://idp.example/authorize", State: "st4te"}, nil
			},
			func(_ context.Context, _, c, _ string) error { code = c; return nil })
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || code != "" {
				t.Errorf("state %s: err %v, code %q; want %q and no code", tc.state, err, code, tc.wantErr)
			}
			continue
		}
		if err != nil || code != tc.wantCode {
			t.Errorf("state %s: err %v, code %q", tc.state, err, code)
		}
	}
}
