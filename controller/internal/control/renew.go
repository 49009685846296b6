package control

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Certificate renewal over the control channel (capability 4). An agent
// sends Renew{CSR} when its certificate nears expiry; the controller
// answers Certificate{Certificate or Error} on the same stream.
//
// Rules, each a refusal the agent is told about and the audit trail keeps
// (cert.renew, failure):
//   - the agent must still exist (a revoked device or a deleted gateway
//     gets nothing, even on a connection opened before the revocation);
//   - the CSR must be a valid, self-signed request for the public key of
//     the certificate this connection authenticated with. Renewal rotates
//     the certificate, never the key: the key was bound to the agent at
//     enrollment (by a token or a sign-in), and a new key arriving over a
//     channel authenticated by the old one would let whoever steals a
//     certificate and key once keep a fresh identity forever; a device
//     that needs a new key enrolls again;
//   - at most one renewal per agent per renewInterval, across connections
//     (a request over the limit is refused without an audit record, so a
//     misbehaving agent cannot flood the trail).
//
// The new certificate has the same identity (CommonName = agent ID,
// OrganizationalUnit = kind) and the CA's configured lifetime.

// maxCSRSize bounds the CSR of a Renew frame, checked before parsing.
const maxCSRSize = 16 << 10

// renewInterval is the least time between two renewals of one agent: a
// minute, or a quarter of the certificate lifetime when that is shorter
// (tests and e2e use lifetimes of seconds).
func (s *Server) renewInterval() time.Duration {
	return min(time.Minute, s.cfg.CA.AgentTTL()/4)
}

// renewLimiter remembers when each agent last renewed. The zero value is
// ready to use.
type renewLimiter struct {
	mu     sync.Mutex
	last   map[string]time.Time
	pruned time.Time
}

// allow reports whether agent id may renew at now, and if so records it.
func (l *renewLimiter) allow(id string, now time.Time, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if now.Sub(l.pruned) > every {
		for k, t := range l.last {
			if now.Sub(t) >= every {
				delete(l.last, k)
			}
		}
		l.pruned = now
	}
	if t, ok := l.last[id]; ok && now.Sub(t) < every {
		return false
	}
	l.last[id] = now
	return true
}

// errRenewRefused marks refusals whose message the agent may see.
var errRenewRefused = errors.New("renewal refused")

// renew answers one Renew frame of agent a on stream w.
func (s *Server) renew(ctx context.Context, log *slog.Logger, a *agent, w *quic.Stream, req *controlproto.Renew) {
	now := time.Now()
	if every := s.renewInterval(); !s.renewals.allow(a.id, now, every) {
		log.Warn("certificate renewal refused: too frequent", "limit", every)
		s.reply(log, a, w, &controlproto.Frame{Type: controlproto.TypeCertificate, Certificate: &controlproto.Certificate{
			Error: fmt.Sprintf("too many renewals: at most one every %v", every)}})
		return
	}
	ev := store.AuditEvent{
		Time: now, Type: audit.CertRenew, Actor: agentActor(a), Subject: a.id,
		Details: map[string]string{"kind": a.kind},
	}
	var old *x509.Certificate
	if certs := a.conn.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		old = certs[0]
		ev.Details["old_not_after"] = old.NotAfter.UTC().Format(time.RFC3339)
		ev.Details["old_serial"] = old.SerialNumber.Text(16)
	}
	certPEM, issued, err := s.issueRenewal(ctx, a, old, req.CSR)
	answer := &controlproto.Certificate{Certificate: certPEM}
	if err != nil {
		ev.Outcome, ev.Details["reason"] = "failure", err.Error()
		answer = &controlproto.Certificate{Error: "internal error"}
		if errors.Is(err, errRenewRefused) {
			answer.Error = err.Error()
		}
		log.Warn("certificate renewal refused", "err", err)
	} else {
		ev.Outcome = "success"
		ev.Details["new_not_after"] = issued.NotAfter.UTC().Format(time.RFC3339)
		ev.Details["new_serial"] = issued.SerialNumber.Text(16)
	}
	// A certificate is handed out only once its issuance is on record.
	if aerr := s.cfg.State.Record(ctx, state.Origin{Actor: ev.Actor}, ev); aerr != nil {
		log.Error("record certificate renewal; not handing out the certificate", "err", aerr)
		answer = &controlproto.Certificate{Error: "internal error: the renewal could not be recorded; try again later"}
	} else if err == nil {
		log.Info("certificate renewed", "old_not_after", ev.Details["old_not_after"], "new_not_after", ev.Details["new_not_after"])
	}
	s.reply(log, a, w, &controlproto.Frame{Type: controlproto.TypeCertificate, Certificate: answer})
}

// issueRenewal checks a renewal request and signs it.
func (s *Server) issueRenewal(ctx context.Context, a *agent, old *x509.Certificate, csrPEM string) (string, *x509.Certificate, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errRenewRefused, fmt.Sprintf(format, args...))
	}
	switch a.kind {
	case ca.KindClient:
		d, err := s.cfg.Store.GetDevice(ctx, a.id)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil, refuse("this device is no longer enrolled")
		} else if err != nil {
			return "", nil, fmt.Errorf("look up device: %w", err)
		}
		if !d.RevokedAt.IsZero() {
			return "", nil, refuse("this device was revoked")
		}
		// A disabled user's devices get no new certificate: the current
		// one runs out and the user must sign in again once re-enabled.
		u, err := s.cfg.Store.GetUser(ctx, d.User)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil, refuse("the user of this device no longer exists")
		} else if err != nil {
			return "", nil, fmt.Errorf("look up user: %w", err)
		}
		if u.Disabled {
			return "", nil, refuse("the user %q of this device is disabled", u.Name)
		}
	case ca.KindGateway:
		if _, err := s.cfg.Store.GetGateway(ctx, a.id); errors.Is(err, store.ErrNotFound) {
			return "", nil, refuse("this gateway is no longer enrolled")
		} else if err != nil {
			return "", nil, fmt.Errorf("look up gateway: %w", err)
		}
	default:
		return "", nil, refuse("unknown agent kind %q", a.kind)
	}
	if old == nil {
		return "", nil, refuse("connection carries no certificate")
	}
	if len(csrPEM) > maxCSRSize {
		return "", nil, refuse("CSR larger than %d bytes", maxCSRSize)
	}
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return "", nil, refuse("CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return "", nil, refuse("CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", nil, refuse("CSR signature: %v", err)
	}
	pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(old.PublicKey) {
		return "", nil, refuse("CSR is for another key than the current certificate's: renewal keeps the key; enroll again to change it")
	}
	certPEM, err := s.cfg.CA.IssueAgentCert(csrPEM, a.id, a.kind)
	if err != nil {
		return "", nil, fmt.Errorf("issue certificate: %w", err)
	}
	cb, _ := pem.Decode([]byte(certPEM))
	if cb == nil {
		return "", nil, errors.New("issued certificate is not PEM")
	}
	issued, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return certPEM, issued, nil
}

// reply writes one frame to the agent outside the map pushes: a.wmu keeps
// it from interleaving with a map the writer goroutine is sending.
func (s *Server) reply(log *slog.Logger, a *agent, w *quic.Stream, f *controlproto.Frame) {
	a.wmu.Lock()
	err := controlproto.WriteFrame(w, f)
	a.wmu.Unlock()
	if err != nil {
		log.Warn("send reply to agent", "type", f.Type, "err", err)
		a.conn.CloseWithError(codeProtocol, "write failed")
	}
}

// agentActor is how audit records name an agent.
func agentActor(a *agent) string {
	if a.kind == ca.KindClient {
		return "device:" + a.id
	}
	return a.kind + ":" + a.id
}
