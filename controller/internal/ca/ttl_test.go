package ca

import (
	"crypto/x509/pkix"
	"testing"
	"time"
)

// --agent-cert-ttl: issued certificates last that long, backdated by a
// tenth of it at most (so agents, renewing after two thirds of
// NotBefore..NotAfter, do not renew a short-lived certificate at once);
// lifetimes under the minimum are refused.
func TestAgentCertTTL(t *testing.T) {
	c, _ := newCA(t)
	if c.AgentTTL() != AgentCertTTL {
		t.Errorf("default lifetime %v, want %v", c.AgentTTL(), AgentCertTTL)
	}
	if err := c.SetAgentCertTTL(MinAgentCertTTL - time.Second); err == nil {
		t.Error("a lifetime under the minimum was accepted")
	}
	for _, ttl := range []time.Duration{20 * time.Second, 24 * time.Hour} {
		if err := c.SetAgentCertTTL(ttl); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		c.now = func() time.Time { return now }
		req, _ := csr(t, pkix.Name{})
		issued, err := c.IssueAgentCert(req, "dev-1", KindClient)
		if err != nil {
			t.Fatal(err)
		}
		cert := parsePEMCert(t, issued)
		if got := cert.NotAfter.Sub(now.Truncate(time.Second)); got != ttl {
			t.Errorf("ttl %v: valid for %v after issue", ttl, got)
		}
		if back, want := now.Sub(cert.NotBefore), min(5*time.Minute, ttl/10); back < want || back > want+time.Second {
			t.Errorf("ttl %v: backdated by %v, want about %v", ttl, back, want)
		}
	}
}
