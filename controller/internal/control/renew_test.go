package control_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/certrenew"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// renewAgent enrolls an agent of kind (a device of user nurse, or a
// gateway in segment lan) and returns its state, for CSRs, and TLS config.
func (h *harness) renewAgent(t *testing.T, id, kind string) (*agentstate.State, *tls.Config) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), id))
	if err != nil {
		t.Fatal(err)
	}
	if kind == ca.KindGateway {
		secret := sha256.Sum256([]byte("token for " + id))
		if err := h.store.CreateEnrollToken(h.ctx, store.EnrollToken{Hash: secret[:], Segment: "lan", Name: id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.store.RedeemEnrollToken(h.ctx, secret[:], time.Now(), store.Gateway{ID: id, PublicKey: st.WGKey.Public()}); err != nil {
			t.Fatal(err)
		}
	} else if _, err := h.store.CreateDevice(h.ctx, store.Device{ID: id, User: "nurse", Hostname: id, PublicKey: st.WGKey.Public()}); err != nil {
		t.Fatal(err)
	}
	return enrollWithState(t, h.ca, st, id, kind)
}

func helloOf(kind string) controlproto.Hello {
	if kind == ca.KindGateway {
		return controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint}
	}
	return controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"}
}

// askRenew sends a Renew frame with csr once the agent is connected (its
// first map arrived) and returns the controller's answer.
func askRenew(t *testing.T, a *runningAgent, csr string) *controlproto.Certificate {
	t.Helper()
	a.waitFrame(t, 0, "first map", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeGatewayMap || f.Type == controlproto.TypeClientMap
	})
	from := a.count()
	a.cc.Send(&controlproto.Frame{Type: controlproto.TypeRenew, Renew: &controlproto.Renew{CSR: csr}})
	_, r := a.waitFrame(t, from, "certificate answer", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeCertificate })
	return r.f.Certificate
}

func parsePEMCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("not PEM: %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func renewAudits(t *testing.T, h *harness, subject string) []store.AuditEvent {
	t.Helper()
	evs, err := h.store.ListAudit(h.ctx, store.AuditFilter{Type: "cert.renew"})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, e := range evs {
		if e.Subject == subject {
			out = append(out, e)
		}
	}
	return out
}

// A connected gateway or device that asks with a CSR for its own key gets
// a new certificate with the same identity and key, chained to the CA,
// valid at least as long as the one it has; the renewal is audited with both expiries.
func TestRenewIssuesSameIdentity(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	for _, kind := range []string{ca.KindGateway, ca.KindClient} {
		t.Run(kind, func(t *testing.T) {
			id := kind + "-renew"
			st, tc := h.renewAgent(t, id, kind)
			old, err := st.Certificate()
			if err != nil {
				t.Fatal(err)
			}
			csr, err := st.CSR("ignored-hint")
			if err != nil {
				t.Fatal(err)
			}
			a := h.start(t, id, tc, helloOf(kind))
			ans := askRenew(t, a, csr)
			if ans.Error != "" {
				t.Fatalf("renewal refused: %s", ans.Error)
			}
			got := parsePEMCert(t, ans.Certificate)
			if id2, kind2, err := ca.AgentIdentity(got); err != nil || id2 != id || kind2 != kind {
				t.Errorf("renewed identity = %q %q %v, want %q %q", id2, kind2, err, id, kind)
			}
			if !st.TLSKey.PublicKey.Equal(got.PublicKey) {
				t.Error("renewed certificate is for another key")
			}
			if _, err := got.Verify(x509.VerifyOptions{Roots: h.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("renewed certificate does not verify: %v", err)
			}
			if got.NotAfter.Before(old.NotAfter) || got.SerialNumber.Cmp(old.SerialNumber) == 0 {
				t.Errorf("renewed NotAfter %v serial %v; old %v %v", got.NotAfter, got.SerialNumber, old.NotAfter, old.SerialNumber)
			}
			// And the agent accepts it.
			if err := st.SaveCertificate([]byte(ans.Certificate)); err != nil {
				t.Errorf("agent rejects the renewed certificate: %v", err)
			}
			evs := renewAudits(t, h, id)
			if len(evs) != 1 || evs[0].Outcome != "success" || evs[0].Details["kind"] != kind ||
				evs[0].Details["old_not_after"] != old.NotAfter.UTC().Format(time.RFC3339) ||
				evs[0].Details["new_not_after"] != got.NotAfter.UTC().Format(time.RFC3339) ||
				evs[0].Details["old_serial"] != old.SerialNumber.Text(16) {
				t.Errorf("cert.renew audit = %+v", evs)
			}
		})
	}
}

// Each refusal is answered with an error the agent can log, issues nothing,
// and is audited as a failure with its reason.
func TestRenewRefusals(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	otherCSR := func(t *testing.T) string {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	tests := []struct {
		name, kind string
		// before runs once the agent is connected; csr builds the request.
		before  func(t *testing.T, id string)
		csr     func(t *testing.T, st *agentstate.State) string
		wantErr string
	}{
		{name: "another key", kind: ca.KindClient, csr: func(t *testing.T, _ *agentstate.State) string { return otherCSR(t) }, wantErr: "another key"},
		{name: "garbage CSR", kind: ca.KindClient, csr: func(*testing.T, *agentstate.State) string { return "-----BEGIN junk" }, wantErr: "not a PEM"},
		{name: "CSR with a broken signature", kind: ca.KindGateway, csr: func(t *testing.T, st *agentstate.State) string {
			csr, err := st.CSR("x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := pem.Decode([]byte(csr))
			b.Bytes[len(b.Bytes)-3] ^= 0xff // inside the signature
			return string(pem.EncodeToMemory(b))
		}, wantErr: "CSR"},
		{name: "oversized CSR", kind: ca.KindClient, csr: func(*testing.T, *agentstate.State) string { return strings.Repeat("A", 17<<10) }, wantErr: "larger"},
		{name: "revoked device", kind: ca.KindClient, before: func(t *testing.T, id string) {
			if _, err := h.store.RevokeDevice(h.ctx, id, time.Now()); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "revoked"},
		{name: "disabled user", kind: ca.KindClient, before: func(t *testing.T, _ string) {
			if _, err := h.store.SetUserDisabled(h.ctx, "nurse", true, time.Now()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if _, err := h.store.SetUserDisabled(h.ctx, "nurse", false, time.Now()); err != nil {
					t.Error(err)
				}
			})
		}, wantErr: "disabled"},
		{name: "deleted device", kind: ca.KindClient, before: func(t *testing.T, id string) {
			if err := h.store.DeleteDevice(h.ctx, id); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "no longer enrolled"},
		{name: "deleted gateway", kind: ca.KindGateway, before: func(t *testing.T, id string) {
			if err := h.store.DeleteGateway(h.ctx, id); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "no longer enrolled"},
	}
	ownCSR := func(t *testing.T, st *agentstate.State) string {
		csr, err := st.CSR("x")
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.kind + "-refuse-" + string(rune('a'+i))
			st, tc := h.renewAgent(t, id, tt.kind)
			a := h.start(t, id, tc, helloOf(tt.kind))
			a.waitFrame(t, 0, "first map", func(f *controlproto.Frame) bool {
				return f.Type == controlproto.TypeGatewayMap || f.Type == controlproto.TypeClientMap
			})
			if tt.before != nil {
				tt.before(t, id) // no Changed: the connection stays up
			}
			csr := ownCSR
			if tt.csr != nil {
				csr = tt.csr
			}
			ans := askRenew(t, a, csr(t, st))
			if ans.Certificate != "" || !strings.Contains(ans.Error, tt.wantErr) {
				t.Fatalf("answer = certificate %d bytes, error %q; want no certificate and an error containing %q", len(ans.Certificate), ans.Error, tt.wantErr)
			}
			evs := renewAudits(t, h, id)
			if len(evs) != 1 || evs[0].Outcome != "failure" || !strings.Contains(evs[0].Details["reason"], tt.wantErr) {
				t.Errorf("cert.renew audit = %+v, want one failure with reason containing %q", evs, tt.wantErr)
			}
		})
	}
}

// A second renewal within the rate limit is refused, also on a new
// connection of the same agent, and not audited (a looping agent must not
// flood the audit trail).
func TestRenewRateLimited(t *testing.T) {
	h := newHarness(t)
	h.world(t)
	st, tc := h.renewAgent(t, "dev-fast", ca.KindClient)
	csr, err := st.CSR("x")
	if err != nil {
		t.Fatal(err)
	}
	a := h.start(t, "first", tc, helloOf(ca.KindClient))
	if ans := askRenew(t, a, csr); ans.Error != "" {
		t.Fatalf("first renewal refused: %s", ans.Error)
	}
	if ans := askRenew(t, a, csr); ans.Certificate != "" || !strings.Contains(ans.Error, "too many renewals") {
		t.Fatalf("second renewal: certificate %d bytes, error %q; want refused as too many", len(ans.Certificate), ans.Error)
	}
	a.stop()
	b := h.start(t, "reconnected", tc, helloOf(ca.KindClient))
	if ans := askRenew(t, b, csr); ans.Certificate != "" || !strings.Contains(ans.Error, "too many renewals") {
		t.Fatalf("renewal on a new connection: certificate %d bytes, error %q; want refused as too many", len(ans.Certificate), ans.Error)
	}
	if evs := renewAudits(t, h, "dev-fast"); len(evs) != 1 || evs[0].Outcome != "success" {
		t.Errorf("cert.renew audit = %+v, want only the first (success)", evs)
	}
}

// The real agent side (controlclient + certrenew + agentstate) renews over
// the channel, saves the certificate, and its next connection presents the
// renewed one: the second renewal's audit names the first one's new serial
// as the certificate the connection authenticated with.
func TestAgentRenewsAndReconnectsWithRenewedCert(t *testing.T) {
	h := newHarness(t)
	if err := h.ca.SetAgentCertTTL(ca.MinAgentCertTTL); err != nil { // rate limit: a quarter of it
		t.Fatal(err)
	}
	h.world(t)
	st, tc := h.renewAgent(t, "dev-rot", ca.KindClient)
	first, err := st.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	runOnce := func(name string) {
		t.Helper()
		r, err := certrenew.New(certrenew.Config{State: st})
		if err != nil {
			t.Fatal(err)
		}
		r.Force()
		cc := controlclient.New(controlclient.Config{Addr: h.addr, TLS: tc, Hello: helloOf(ca.KindClient), Renewer: r,
			OnFrame: func(*controlproto.Frame) error { return nil }})
		ctx, stop := context.WithCancel(h.ctx)
		defer stop()
		done := make(chan error, 1)
		go func() { done <- cc.Run(ctx) }()
		waitUntil(t, name+": renewal saved", func() bool { return r.Renewals() == 1 })
		stop()
		if err := <-done; err != nil {
			t.Fatalf("%s: Run = %v", name, err)
		}
	}
	runOnce("first connection")
	second, err := st.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("certificate unchanged after renewal")
	}
	runOnce("second connection")
	evs := renewAudits(t, h, "dev-rot") // newest first
	if len(evs) != 2 || evs[0].Outcome != "success" || evs[1].Outcome != "success" {
		t.Fatalf("cert.renew audit = %+v, want two successes", evs)
	}
	if got, want := evs[1].Details["old_serial"], first.SerialNumber.Text(16); got != want {
		t.Errorf("first connection authenticated with serial %s, want the enrolled %s", got, want)
	}
	if got, want := evs[0].Details["old_serial"], second.SerialNumber.Text(16); got != want {
		t.Errorf("second connection authenticated with serial %s, want the renewed %s", got, want)
	}
}
