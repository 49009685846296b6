package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
)

// The guard keeps the page to the user who started it. Which threat each
// measure stops is in docs/security.md, "The local status page":
//
//   - the listener is on a loopback address only (Listen);
//   - only the user who started the page may connect: the kernel's
//     socket table says who owns the connection's other end (peer.go),
//     so another user of the computer is refused even with a stolen link
//     or cookie;
//   - every request needs the session cookie, which only a browser that
//     opened the start link holds: the link's token is redeemed once for
//     it, so a token read later from the process list or shell history is
//     worth nothing;
//   - the cookie's name carries the port and its value is random per
//     server: browsers send loopback cookies to every port, so one page's
//     cookie must not open another's;
//   - the Host header must name the listener (DNS rebinding);
//   - a POST must come from the page itself: net/http's
//     CrossOriginProtection (Sec-Fetch-Site, Origin) and a CSRF token in
//     every form;
//   - no CORS headers; a strict Content-Security-Policy; no framing.

// secret is a random value compared in constant time.
type secret string

func newSecret() secret {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return secret(base64.RawURLEncoding.EncodeToString(b))
}

func (s secret) equal(got string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(got)) == 1
}

// guard checks requests for one server.
type guard struct {
	uids    []int // who may connect
	port    uint16
	cookie  string // the cookie's name: one per port
	session secret // the cookie's value: one per server
	csrf    secret // the forms' token, derived from session

	mu       sync.Mutex
	link     secret // the start link's token
	redeemed bool   // the link was used
}

func newGuard(port uint16) *guard {
	g := &guard{uids: allowedUIDs(), port: port, link: newSecret(), session: newSecret(), cookie: "cordon_ui_" + strconv.Itoa(int(port))}
	m := hmac.New(sha256.New, []byte(g.session))
	m.Write([]byte("csrf"))
	g.csrf = secret(base64.RawURLEncoding.EncodeToString(m.Sum(nil)))
	return g
}

// allowedUIDs are the users whose browsers may connect: the one running
// the page and, for a page run with sudo (cordon up --ui in tun mode), the
// user who ran sudo.
func allowedUIDs() []int {
	uids := []int{os.Getuid()}
	if u, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil && os.Getuid() == 0 && u > 0 {
		uids = append(uids, u)
	}
	return uids
}

// peerKey is the context key of a connection's peer verdict.
type peerKey struct{}

// connContext notes, once per connection, whether its other end belongs
// to an allowed user (http.Server.ConnContext).
func (g *guard) connContext(ctx context.Context, c net.Conn) context.Context {
	uid, err := peerUID(c)
	return context.WithValue(ctx, peerKey{}, err == nil && slices.Contains(g.uids, uid))
}

// peerAllowed says the request came over a connection of an allowed user.
func peerAllowed(r *http.Request) bool {
	ok, _ := r.Context().Value(peerKey{}).(bool)
	return ok
}

// hostAllowed says the Host header names this listener: a loopback IP
// literal or localhost, with its port. Anything else is a name that
// resolved to loopback in someone else's DNS (rebinding).
func hostAllowed(host string, port uint16) bool {
	h, p, err := net.SplitHostPort(host)
	if err != nil || p != strconv.Itoa(int(port)) {
		return false
	}
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Zone() == "" && a.IsLoopback()
}

// redeem trades the start link's token for the session cookie, once.
func (g *guard) redeem(token string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.redeemed || !g.link.equal(token) {
		return false
	}
	g.redeemed = true
	return true
}

// hasSession says the request carries this server's session cookie.
func (g *guard) hasSession(r *http.Request) bool {
	c, err := r.Cookie(g.cookie)
	return err == nil && g.session.equal(c.Value)
}

func (g *guard) setSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: g.cookie, Value: string(g.session), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// csrfOK says a form carries the CSRF token.
func (g *guard) csrfOK(r *http.Request) bool {
	return g.csrf.equal(r.PostFormValue("csrf"))
}

// maxForm bounds a POST body: the sign-in form is a few short fields.
const maxForm = 16 << 10

// securityHeaders go on every answer, refusals too. form-action allows
// http(s) because the identity provider's sign-in is reached by a redirect
// from a form, and browsers check form-action on redirects.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self' http: https:; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// refuse answers 403 with a plain reason.
func refuse(w http.ResponseWriter, why string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte(why + "\n"))
}

// Refusals, as the browser shows them.
const (
	whyPeer      = "this page belongs to another user of this computer: run 'cordon ui' yourself"
	whyHost      = "wrong host: open the page at the address 'cordon ui' printed"
	whyUsed      = "this link was used already: run 'cordon ui' again for a new one"
	whyNoSession = "not allowed: open the page with the link 'cordon ui' printed"
	whyCrossSite = "cross-site request refused: use the Cordon page itself"
	whyCSRF      = "form expired: reload the page and try again"
)

// wrap puts the guard in front of next. GET /?token=T redeems the start
// link; everything else needs the session cookie.
func (g *guard) wrap(next http.Handler) http.Handler {
	xorigin := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if !peerAllowed(r) {
			refuse(w, whyPeer)
			return
		}
		if !hostAllowed(r.Host, g.port) {
			refuse(w, whyHost)
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" && r.Method == http.MethodGet && r.URL.Path == "/" {
			if g.hasSession(r) || g.redeem(tok) {
				g.setSession(w)
				http.Redirect(w, r, "/", http.StatusSeeOther) // the token leaves the address bar
				return
			}
			refuse(w, whyUsed)
			return
		}
		if !g.hasSession(r) {
			refuse(w, whyNoSession)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := xorigin.Check(r); err != nil {
				refuse(w, whyCrossSite)
				return
			}
			if !g.csrfOK(r) {
				refuse(w, whyCSRF)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
