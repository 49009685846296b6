// Package certrenew keeps an agent's control-channel certificate fresh,
// for gateways and clients alike. It decides when the certificate is due
// (after two thirds of its lifetime by default), asks the controller for a
// new one over the control channel with a CSR for the agent's own key (the
// private key never leaves the device; the certificate is rotated, not the
// key), and checks and stores the answer through agentstate, so the next
// control connection presents it.
//
// A [Renewer] implements controlclient.Renewer: the control client asks it
// on every connect and then whenever it said to, and hands it every
// Certificate frame.
//
// A certificate that expired while the agent was offline cannot be renewed:
// the controller refuses the handshake. [Renewer.Expired] then says what
// the person in charge has to do (sign in again, or re-enroll a gateway).
package certrenew

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Defaults of Config.
const (
	DefaultFraction      = 2.0 / 3
	DefaultCheckInterval = time.Hour
	// DefaultRetryAfter bounds how long an unanswered or refused request
	// waits before the next one (the controller allows about one a minute).
	DefaultRetryAfter = time.Minute
)

// ErrExpired says the certificate is past its NotAfter.
var ErrExpired = errors.New("the control-channel certificate has expired")

// Config configures a Renewer.
type Config struct {
	State *agentstate.State
	// Fraction of the certificate's lifetime (NotBefore to NotAfter) after
	// which it is renewed; 0 means DefaultFraction. Must be in (0, 1].
	Fraction float64
	// CheckInterval is the longest time between two checks while
	// connected; 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	// RetryAfter is how long to wait for an answer, or after a refusal,
	// before asking again; 0 means min(DefaultRetryAfter, lifetime/10).
	RetryAfter time.Duration
	// Remedy tells a person what to do once the certificate has expired,
	// e.g. "sign in again with 'cordon login'".
	Remedy string
	Logger *slog.Logger
	// Now is the clock; nil means time.Now (tests move it).
	Now func() time.Time
}

// Renewer renews one agent's certificate. Its methods are safe for
// concurrent use.
type Renewer struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	asked    time.Time // when the outstanding request was sent; zero if none
	refused  time.Time // when the controller last refused; zero if not since
	forced   bool
	renewals int
}

// New returns a Renewer for cfg.State.
func New(cfg Config) (*Renewer, error) {
	if cfg.State == nil {
		return nil, errors.New("certrenew: no agent state")
	}
	if cfg.Fraction == 0 {
		cfg.Fraction = DefaultFraction
	}
	if !(cfg.Fraction > 0 && cfg.Fraction <= 1) {
		return nil, fmt.Errorf("certrenew: fraction %v is not in (0, 1]", cfg.Fraction)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Renewer{cfg: cfg, log: cfg.Logger}, nil
}

// Force makes the next Renewal ask for a new certificate whatever the age
// of the current one.
func (r *Renewer) Force() {
	r.mu.Lock()
	r.forced = true
	r.refused = time.Time{}
	r.mu.Unlock()
}

// Renewals returns how many renewed certificates were saved.
func (r *Renewer) Renewals() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.renewals
}

// RenewAt returns when the current certificate is due for renewal.
func (r *Renewer) RenewAt() (time.Time, error) {
	cert, err := r.cfg.State.Certificate()
	if err != nil {
		return time.Time{}, err
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(time.Duration(float64(life) * r.cfg.Fraction)), nil
}

// minWait keeps a busy loop out when a deadline is (almost) now.
const minWait = 100 * time.Millisecond

// Renewal returns a Renew frame when the certificate is due and no request
// is outstanding (nil otherwise), and how long to wait before asking
// again. connected says the control connection was just (re)established:
// a request sent on an earlier connection will never be answered.
func (r *Renewer) Renewal(connected bool) (*controlproto.Frame, time.Duration) {
	now := r.cfg.Now()
	cert, err := r.cfg.State.Certificate()
	if err != nil {
		r.log.Error("cannot read the control-channel certificate; not renewing it", "err", err)
		return nil, r.cfg.CheckInterval
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	due := cert.NotBefore.Add(time.Duration(float64(life) * r.cfg.Fraction))
	retry := r.cfg.RetryAfter
	if retry <= 0 {
		retry = max(min(DefaultRetryAfter, life/10), time.Second)
	}

	if now.After(cert.NotAfter) {
		// Too late: the controller refuses this certificate (Expired
		// says what to do); asking would only add noise.
		return nil, r.cfg.CheckInterval
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if connected {
		r.asked = time.Time{}
	}
	if !r.forced && now.Before(due) {
		return nil, max(min(r.cfg.CheckInterval, due.Sub(now)), minWait)
	}
	for _, t := range []time.Time{r.asked, r.refused} {
		if !t.IsZero() && now.Before(t.Add(retry)) {
			return nil, max(t.Add(retry).Sub(now), minWait)
		}
	}
	csr, err := r.cfg.State.CSR(cert.Subject.CommonName)
	if err != nil {
		r.log.Error("cannot build a certificate request; not renewing", "err", err)
		return nil, retry
	}
	r.asked = now
	r.log.Info("renewing the control-channel certificate", "not_after", cert.NotAfter.UTC(), "renew_at", due.UTC())
	return &controlproto.Frame{Type: controlproto.TypeRenew, Renew: &controlproto.Renew{CSR: csr}}, retry
}

// Renewed applies the controller's answer to a Renew frame: on success
// the new certificate is checked (chain, key, identity) and saved; the
// next connection presents it.
func (r *Renewer) Renewed(c *controlproto.Certificate) error {
	now := r.cfg.Now()
	r.mu.Lock()
	r.asked = time.Time{}
	r.mu.Unlock()
	refuse := func(err error) error {
		r.mu.Lock()
		r.refused = now
		r.mu.Unlock()
		return err
	}
	if c.Error != "" {
		return refuse(fmt.Errorf("controller refused to renew the certificate: %s", c.Error))
	}
	if err := r.cfg.State.SaveCertificate([]byte(c.Certificate)); err != nil {
		return refuse(fmt.Errorf("renewed certificate rejected: %w", err))
	}
	cert, err := r.cfg.State.Certificate()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.forced, r.refused = false, time.Time{}
	r.renewals++
	r.mu.Unlock()
	r.log.Info("control-channel certificate renewed", "not_after", cert.NotAfter.UTC(), "serial", cert.SerialNumber.Text(16))
	return nil
}

// Expired returns an error wrapping ErrExpired and saying what to do when
// the certificate has expired; nil while it is valid.
func (r *Renewer) Expired() error {
	cert, err := r.cfg.State.Certificate()
	if err != nil {
		return err
	}
	if now := r.cfg.Now(); now.After(cert.NotAfter) {
		msg := "the controller will refuse this agent"
		if r.cfg.Remedy != "" {
			msg += ": " + r.cfg.Remedy
		}
		return fmt.Errorf("%w (at %s, %s ago, while it could not be renewed); %s",
			ErrExpired, cert.NotAfter.UTC().Format(time.RFC3339), now.Sub(cert.NotAfter).Round(time.Second), msg)
	}
	return nil
}
