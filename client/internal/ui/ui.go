// Package ui serves the local status page of 'cordon ui': who is signed
// in, the session's time left, every app with why it is or is not
// reachable and what to do (the reach classifier's verdict, from the
// running tunnel), the posture checks that fail, and sign-in buttons that
// run the real sign-in ('cordon login').
//
// The page is for the user who started it and no one else: it listens on
// a loopback address, and the guard (guard.go) admits only the browser
// that opened the single-use start link, only under the listener's own
// Host, and only same-origin forms with a CSRF token.
//
// Goroutines: Serve owns the HTTP server and the sign-ins it starts; it
// returns once all have stopped.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
)

// Tunnel is the running tunnel as the page reads it. LocalTunnel asks
// 'cordon up' over its local socket.
type Tunnel interface {
	// Status is what 'cordon status' shows, every app with the reach
	// classifier's verdict; client.ErrNotUp when no tunnel runs.
	Status() (*client.Status, error)
}

// LocalTunnel is the tunnel of a state directory, asked over its local
// socket (readable by its owner only).
type LocalTunnel struct{ StateDir string }

var _ Tunnel = LocalTunnel{}

// Status implements Tunnel.
func (l LocalTunnel) Status() (*client.Status, error) { return client.GetStatus(l.StateDir) }

// Config configures a Server.
type Config struct {
	Tunnel Tunnel
	SignIn SignIn
	// Out, if set, also receives what a sign-in through an identity
	// provider prints (the provider's URL), as 'cordon login --idp' does.
	Out    io.Writer
	Now    func() time.Time // default time.Now
	Logger *slog.Logger
}

// Server is the status page on one loopback listener.
type Server struct {
	cfg   Config
	ln    net.Listener
	guard *guard
	jobs  *jobs
	page  *template.Template

	provMu    sync.Mutex
	provCache []Provider // the controller's identity providers, once it answered
	provErrAt time.Time  // when asking last failed: not again for providersRetry
}

// providersTimeout bounds asking the controller for its identity
// providers while a page is built; after a failure the page does not ask
// again for providersRetry, so that an unreachable controller does not
// slow every page.
const (
	providersTimeout = 3 * time.Second
	providersRetry   = 30 * time.Second
)

//go:embed assets
var assets embed.FS

var pageTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"left":  Left,
	"clock": func(t time.Time) string { return t.Local().Format("Mon 15:04") },
}).ParseFS(assets, "assets/page.html"))

// Listen opens the page's listener on addr, which must be a loopback IP
// address with a port (port 0 picks a free one).
func Listen(addr string, cfg Config) (*Server, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() || ap.Addr().Zone() != "" {
		return nil, fmt.Errorf("--listen %q: give a loopback address and port such as 127.0.0.1:0 (the page is for this computer only)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the status page on %s: %w", addr, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	return &Server{cfg: cfg, ln: ln, guard: newGuard(port), jobs: &jobs{signIn: cfg.SignIn, out: cfg.Out}, page: pageTmpl}, nil
}

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the start link: it works once, in the first browser that opens it.
func (s *Server) URL() string {
	return "http://" + s.ln.Addr().String() + "/?token=" + url.QueryEscape(string(s.guard.link))
}

// Close closes the listener of a Server that is not serving.
func (s *Server) Close() error { return s.ln.Close() }

// Serve serves the page until ctx ends, then stops the sign-ins it started
// and returns once they have.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	static, _ := fs.Sub(assets, "assets") // the directory is embedded
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.Handle("GET /style.css", http.FileServerFS(static))
	mux.HandleFunc("POST /signin/password", s.signInPassword)
	mux.HandleFunc("POST /signin/oidc", func(w http.ResponseWriter, r *http.Request) { s.signInOIDC(ctx, w, r) })
	srv := &http.Server{
		Handler: s.guard.wrap(mux), ConnContext: s.guard.connContext, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		// A password sign-in answers once the controller has (passwordTimeout).
		WriteTimeout: passwordTimeout + 10*time.Second,
		ErrorLog:     slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		srv.Close()
		err = <-errc
	case err = <-errc:
		srv.Close()
	}
	cancel() // the sign-ins still running
	s.jobs.wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	v := View{Now: s.cfg.Now(), CSRF: string(s.guard.csrf)}
	st, stErr := s.cfg.Tunnel.Status()
	buildView(&v, st, stErr)
	v.SignIn = SignInView{LastUser: s.cfg.SignIn.LastUser(), Providers: s.providers(r.Context()), Job: s.jobs.view()}
	if v.User == "" {
		v.User = v.SignIn.LastUser
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.page.Execute(w, &v); err != nil {
		s.cfg.Logger.Warn("status page", "err", err)
	}
}

// providers are the controller's identity providers, asked once it
// answers; none while it does not.
func (s *Server) providers(ctx context.Context) []Provider {
	s.provMu.Lock()
	defer s.provMu.Unlock()
	if s.provCache != nil {
		return s.provCache
	}
	now := s.cfg.Now()
	if !s.provErrAt.IsZero() && now.Sub(s.provErrAt) < providersRetry {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, providersTimeout)
	defer cancel()
	ps, err := s.cfg.SignIn.Providers(ctx)
	if err != nil {
		s.provErrAt = now
		s.cfg.Logger.Debug("identity providers", "err", err)
		return nil
	}
	s.provCache = append([]Provider{}, ps...)
	return s.provCache
}

func (s *Server) signInPassword(w http.ResponseWriter, r *http.Request) {
	err := s.jobs.password(r.Context(), r.PostFormValue("user"), r.PostFormValue("password"), r.PostFormValue("code"))
	if err != nil {
		s.cfg.Logger.Info("sign-in from the status page failed", "err", err) // never the password
	}
	http.Redirect(w, r, "/", http.StatusSeeOther) // the page shows the outcome
}

func (s *Server) signInOIDC(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	u, err := s.jobs.oidc(ctx, r.PostFormValue("idp"))
	if err != nil || u == "" {
		if err != nil {
			s.cfg.Logger.Info("sign-in from the status page failed", "err", err)
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, u, http.StatusSeeOther) // to the identity provider
}
