package oidc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// ErrUnavailable wraps every failure to reach a provider (discovery, keys,
// token endpoint): the provider is down or unreachable, not the user
// wrong.
var ErrUnavailable = errors.New("identity provider unreachable")

// ErrIdPConfig wraps a failure to reach a provider that retrying cannot
// fix: its HTTPS certificate is not trusted (a private CA without
// ca_file, a wrong ca_file, a name mismatch). It is a configuration error
// of the controller, not an outage.
var ErrIdPConfig = errors.New("identity provider configuration error")

// unreachable wraps a failure to get an answer from provider p while
// doing what: ErrIdPConfig when the provider's certificate is not trusted,
// else ErrUnavailable.
func (p *provider) unreachable(what string, err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && errors.As(verify.Err, &unknown):
		hint := "the certificate is signed by a CA the controller does not trust: if the IdP uses a private (hospital) CA, set ca_file for this provider to that CA's PEM bundle"
		if p.cfg.CAFile != "" {
			hint = fmt.Sprintf("the certificate is not signed by a CA in ca_file %s: put the CA that signed the IdP's certificate (and any intermediate) in that file", p.cfg.CAFile)
		}
		return fmt.Errorf("%w: %s (%s): %s: the IdP's HTTPS certificate is not trusted: %s (%v)", ErrIdPConfig, p.cfg.Name, p.cfg.Issuer, what, hint, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: %s (%s): %s: the IdP's HTTPS certificate is for another name: check issuer in the OIDC configuration (%v)", ErrIdPConfig, p.cfg.Name, p.cfg.Issuer, what, err)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%w: %s (%s): %s: the IdP's HTTPS certificate is not valid (expired, or not for TLS servers): check it and the controller's clock (%v)", ErrIdPConfig, p.cfg.Name, p.cfg.Issuer, what, err)
	}
	return fmt.Errorf("%w: %s (%s): %s: %w", ErrUnavailable, p.cfg.Name, p.cfg.Issuer, what, err)
}

// ErrTokenInvalid wraps every ID token the controller refuses.
var ErrTokenInvalid = errors.New("ID token refused")

// httpTimeout bounds each request to a provider.
const httpTimeout = 15 * time.Second

// provider is one configured IdP. Discovery happens on first use and is
// retried on the next use after a failure, so a provider that is down at
// start does not stop the controller.
type provider struct {
	cfg    ProviderConfig
	client *http.Client
	now    func() time.Time

	mu sync.Mutex
	op *gooidc.Provider // nil until discovered
}

func newProvider(cfg ProviderConfig, now func() time.Time, base http.RoundTripper, timeout time.Duration) (*provider, error) {
	if timeout <= 0 {
		timeout = httpTimeout
	}
	tr := base
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("provider %s: ca_file: %w", cfg.Name, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("provider %s: ca_file %s: no PEM certificate", cfg.Name, cfg.CAFile)
			}
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		tr = t
	}
	return &provider{cfg: cfg, now: now, client: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// ctx carries the provider's HTTP client to go-oidc and x/oauth2.
func (p *provider) ctx(ctx context.Context) context.Context {
	return context.WithValue(gooidc.ClientContext(ctx, p.client), oauth2.HTTPClient, p.client)
}

func (p *provider) discover(ctx context.Context) (*gooidc.Provider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.op != nil {
		return p.op, nil
	}
	op, err := gooidc.NewProvider(p.ctx(ctx), p.cfg.Issuer)
	if err != nil {
		return nil, p.unreachable("discovery", err)
	}
	p.op = op
	return op, nil
}

// oauth2 is the OAuth 2.0 client configuration for this provider.
func (p *provider) oauth2(ctx context.Context, redirectURL string) (*oauth2.Config, error) {
	op, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	ep := op.Endpoint()
	if p.cfg.secret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams // public client: client_id in the body, no secret
	}
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.cfg.secret,
		Endpoint: ep, RedirectURL: redirectURL, Scopes: p.cfg.Scopes,
	}, nil
}

// verify checks an ID token's signature, issuer, audience (our client
// ID), expiry (with the configured skew) and issue time, and, if nonce is
// not empty, that it carries it; then reads its claims.
func (p *provider) verify(ctx context.Context, raw, nonce string) (Claims, error) {
	op, err := p.discover(ctx)
	if err != nil {
		return Claims{}, err
	}
	skew := time.Duration(p.cfg.ClockSkew)
	now := p.now()
	v := op.Verifier(&gooidc.Config{
		ClientID: p.cfg.ClientID,
		Now:      func() time.Time { return now.Add(-skew) },
	})
	tok, err := v.Verify(p.ctx(ctx), raw)
	if err != nil {
		var exp *gooidc.TokenExpiredError
		if errors.As(err, &exp) {
			return Claims{}, fmt.Errorf("%w: expired at %s (now %s, %s skew allowed): if the user just signed in, check the clocks of the controller and the IdP",
				ErrTokenInvalid, exp.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
		}
		if isFetchError(err) {
			return Claims{}, p.unreachable("signing keys", err)
		}
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	var rawClaims json.RawMessage
	if err := tok.Claims(&rawClaims); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	c, err := ParseClaims(rawClaims, &p.cfg)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(skew)) {
		return Claims{}, fmt.Errorf("%w: issued in the future (%s, now %s, %s skew allowed): check the clocks of the controller and the IdP",
			ErrTokenInvalid, c.IssuedAt.Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	if nonce != "" && c.Nonce != nonce {
		return Claims{}, fmt.Errorf("%w: nonce does not match this sign-in (a replayed or injected token)", ErrTokenInvalid)
	}
	return c, nil
}

// isFetchError reports a go-oidc failure to fetch the signing keys.
func isFetchError(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}
