package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/pkg/agentstate"
)

// Provider is an identity provider the controller offers.
type Provider struct {
	Name        string
	DisplayName string
}

// SignIn is the sign-in the page's buttons run. ClientSignIn is the real
// one: the code of 'cordon login'.
type SignIn interface {
	// Password signs in with a password and an authenticator code (or a
	// one-time recovery code); user "" means the last user.
	Password(ctx context.Context, user, password, code string) (*agentstate.Enrollment, error)
	// OIDC signs in through identity provider idp. It calls open with the
	// provider's sign-in URL and returns when the browser came back (or
	// ctx ended); out receives what 'cordon login --idp' prints.
	OIDC(ctx context.Context, idp string, open func(url string), out io.Writer) (*agentstate.Enrollment, error)
	// Providers lists the identity providers the controller offers.
	Providers(ctx context.Context) ([]Provider, error)
	// LastUser is the user who last signed in on this device ("" if none).
	LastUser() string
}

// ClientSignIn is SignIn through client.Login and client.LoginOIDC with
// the controller, CA and user of the device's last enrollment, as plain
// 'cordon login' does.
type ClientSignIn struct{ StateDir string }

var _ SignIn = ClientSignIn{}

// Password implements SignIn.
func (c ClientSignIn) Password(ctx context.Context, user, password, code string) (*agentstate.Enrollment, error) {
	lc := client.LoginConfig{StateDir: c.StateDir, User: user, Password: password}
	if digits := strings.ReplaceAll(strings.TrimSpace(code), " ", ""); isTOTP(digits) { // "123 456" as some apps show it
		lc.TOTP = digits
	} else {
		lc.RecoveryCode = code
	}
	return client.Login(ctx, lc)
}

// isTOTP tells an authenticator code (6 to 8 digits) from a recovery code.
func isTOTP(code string) bool {
	if len(code) < 6 || len(code) > 8 {
		return false
	}
	for _, r := range code {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// OIDC implements SignIn.
func (c ClientSignIn) OIDC(ctx context.Context, idp string, open func(string), out io.Writer) (*agentstate.Enrollment, error) {
	return client.LoginOIDC(ctx, client.OIDCLoginConfig{
		StateDir: c.StateDir, IdP: idp, Out: out,
		Browser: func(_ context.Context, url string) error { open(url); return nil },
	})
}

// Providers implements SignIn.
func (c ClientSignIn) Providers(ctx context.Context) ([]Provider, error) {
	ps, err := client.OIDCProviders(ctx, c.StateDir, "", "")
	if err != nil {
		return nil, err
	}
	out := make([]Provider, len(ps))
	for i, p := range ps {
		out[i] = Provider{Name: p.Name, DisplayName: p.DisplayName}
	}
	return out, nil
}

// LastUser implements SignIn.
func (c ClientSignIn) LastUser() string {
	e, _, err := agentstate.Recall(c.StateDir)
	if err != nil {
		return ""
	}
	return e.User
}

// Sign-in time limits, as 'cordon login' has them.
const (
	passwordTimeout = 30 * time.Second
	oidcTimeout     = 16 * time.Minute
	// urlWait bounds the wait for the controller to hand out the
	// provider's sign-in URL.
	urlWait = 30 * time.Second
)

// JobView is a sign-in as the page shows it.
type JobView struct {
	What    string // "password", or the provider's name
	Running bool
	User    string // who signed in, when it succeeded
	Err     string // why it failed
	URL     string // the provider's sign-in URL, while running
	Output  string // what 'cordon login --idp' would have printed
}

// jobs runs the page's sign-ins, one at a time. A sign-in through a
// provider runs in a goroutine that wait waits for; the context passed in
// (the server's) stops it.
type jobs struct {
	signIn SignIn
	out    io.Writer // also gets what a provider sign-in prints (the terminal)
	wg     sync.WaitGroup

	mu   sync.Mutex
	last *JobView
	buf  lockedBuffer
	// stop cancels the provider sign-in that runs (nil when none); stopped
	// is closed once it has ended.
	stop    func()
	stopped chan struct{}
}

// ErrBusy: a password sign-in is already running.
var ErrBusy = errors.New("a sign-in is already running: wait for it to finish")

func (j *jobs) view() *JobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.last == nil {
		return nil
	}
	v := *j.last
	v.Output = strings.TrimSpace(j.buf.String())
	return &v
}

// begin records a new job. A provider sign-in still waiting for the
// browser (the user closed that tab, or chose another way) is cancelled
// for it; a password sign-in that runs makes it ErrBusy.
func (j *jobs) begin(what string) error {
	j.mu.Lock()
	if stop, stopped := j.stop, j.stopped; stop != nil {
		j.mu.Unlock()
		stop()
		<-stopped
		j.mu.Lock()
	}
	defer j.mu.Unlock()
	if j.last != nil && j.last.Running {
		return ErrBusy
	}
	j.last = &JobView{What: what, Running: true}
	j.buf.Reset()
	return nil
}

func (j *jobs) finish(e *agentstate.Enrollment, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.last.Running, j.last.URL = false, ""
	j.stop = nil
	if err != nil {
		j.last.Err = err.Error()
		return
	}
	j.last.User = e.User
}

// password runs a password sign-in and waits for it.
func (j *jobs) password(ctx context.Context, user, password, code string) error {
	if err := j.begin("password"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, passwordTimeout)
	defer cancel()
	e, err := j.signIn.Password(ctx, user, password, code)
	j.finish(e, err)
	return err
}

// oidc starts a sign-in through idp and returns the provider's URL to
// send the browser to, once the sign-in has it (or why it failed first).
func (j *jobs) oidc(ctx context.Context, idp string) (string, error) {
	if err := j.begin(idp); err != nil {
		return "", err
	}
	urlc := make(chan string, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(ctx, oidcTimeout)
	stopped := make(chan struct{})
	j.mu.Lock()
	j.stop, j.stopped = cancel, stopped
	j.mu.Unlock()
	out := io.Writer(&j.buf)
	if j.out != nil {
		out = io.MultiWriter(&j.buf, j.out)
	}
	j.wg.Go(func() {
		defer close(stopped)
		defer cancel()
		e, err := j.signIn.OIDC(ctx, idp, func(u string) {
			j.mu.Lock()
			j.last.URL = u
			j.mu.Unlock()
			select {
			case urlc <- u:
			default:
			}
		}, out)
		j.finish(e, err)
		done <- err
	})
	wait := time.NewTimer(urlWait)
	defer wait.Stop()
	select {
	case u := <-urlc:
		return u, nil
	case err := <-done:
		return "", err // nil: finished without a browser, nothing to open
	case <-wait.C:
		return "", fmt.Errorf("sign in with %s: no sign-in address from the controller within %s; the page shows the progress", idp, urlWait)
	}
}

// wait waits for the running sign-ins to end (after their context).
func (j *jobs) wait() { j.wg.Wait() }

// lockedBuffer is a bytes.Buffer safe for the sign-in's writes and the
// page's reads, bounded.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxOutput bounds what the page keeps of a sign-in's output.
const maxOutput = 16 << 10

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > maxOutput {
		return len(p), nil // enough to read; the rest would not help
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
