package e2e

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rotationTTL is the agent certificate lifetime of the rotation test:
// agents renew about every 13 s (two thirds of 20 s plus the 2 s the CA
// backdates), so a minute covers several rotations and the certificates
// the agents enrolled with expire during the test.
const rotationTTL = 20 * time.Second

// With --agent-cert-ttl 20s, the gateway and a client keep working across
// several certificate rotations: each renewal replaces the certificate file
// (mode 0600, same key and identity, chained to the controller CA) and is
// audited. After the enrollment certificates have expired, the controller
// restarts: the agents reconnect with their renewed certificates (the old
// ones would be refused) and keep renewing. A client whose certificate
// expired while it was off says to sign in again, and can.
//
//	nurse (cl1) ──┐                ┌── controller (ctl) --agent-cert-ttl 20s
//	clerk (cl2) ──┼── wan bridge ──┤
//	              └── gateway (gw) ── app subnet (ehr)
func TestCertRotation(t *testing.T) {
	t.Parallel()
	ctlFlags := []string{"--agent-cert-ttl", rotationTTL.String()}
	w := newWorld(t, withControllerArgs(ctlFlags...))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)

	gwCert := filepath.Join(w.dir, "gateway", "cert.pem")
	nurseCert := filepath.Join(w.nurse.stateDir, "cert.pem")
	enrolledGW, enrolledNurse := w.readAgentCert(gwCert), w.readAgentCert(nurseCert)
	last := map[string]*x509.Certificate{gwCert: enrolledGW, nurseCert: enrolledNurse}

	const rotations = 3
	for i := 1; i <= rotations; i++ {
		for _, path := range []string{gwCert, nurseCert} {
			prev := last[path]
			var cur *x509.Certificate
			waitFor(t, rotationTTL, fmt.Sprintf("rotation %d of %s", i, path), func() error {
				w.checkAlive()
				cur = w.readAgentCert(path)
				if cur.SerialNumber.Cmp(prev.SerialNumber) == 0 {
					return fmt.Errorf("still serial %s (not after %v)", prev.SerialNumber.Text(16), prev.NotAfter)
				}
				return nil
			})
			if cur.Subject.CommonName != prev.Subject.CommonName || !cur.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(prev.PublicKey) {
				t.Errorf("%s: rotation %d changed identity or key: %s → %s", path, i, prev.Subject, cur.Subject)
			}
			if !cur.NotAfter.After(prev.NotAfter) {
				t.Errorf("%s: rotation %d: NotAfter %v not after the previous %v", path, i, cur.NotAfter, prev.NotAfter)
			}
			last[path] = cur
		}
		// Still working: a fresh connection through the tunnel.
		w.waitReach(w.nurse, ehr, 5*time.Second)
		t.Logf("rotation %d: gateway serial %s, nurse serial %s", i, last[gwCert].SerialNumber.Text(16), last[nurseCert].SerialNumber.Text(16))
	}
	gwID, nurseID := enrolledGW.Subject.CommonName, enrolledNurse.Subject.CommonName
	for _, id := range []string{gwID, nurseID} {
		w.waitAudit("cert.renew success of "+id, func(e auditEvent) bool {
			return e.Type == "cert.renew" && e.Subject == id && e.Outcome == "success" && e.Details["new_not_after"] != "" && e.Details["old_not_after"] != ""
		})
	}

	// A connection lives no longer than the certificate it opened with:
	// the controller closed the enrollment-certificate connections and the
	// agents came back with renewed ones (the reach checks above held).
	if n := strings.Count(w.controller.logs(), "agent certificate expired; closing"); n < 2 {
		t.Errorf("controller closed %d connections at certificate expiry, want at least the gateway's and the nurse's", n)
	}

	// The enrollment certificates are past NotAfter now: a reconnect can
	// only succeed with a renewed one.
	if wait := time.Until(enrolledNurse.NotAfter.Add(time.Second)); wait > 0 {
		t.Fatalf("test too fast: enrollment certificates still valid for %v", wait)
	}
	restarted := w.restartController()
	for _, id := range []string{gwID, nurseID} {
		waitFor(t, 15*time.Second, id+" to reconnect to the restarted controller", func() error {
			w.checkAlive()
			for line := range strings.Lines(w.controller.logs()) {
				if strings.Contains(line, `msg="agent connected"`) && strings.Contains(line, " agent="+id+" ") {
					return nil
				}
			}
			return fmt.Errorf("not connected yet")
		})
	}
	w.waitReach(w.nurse, ehr, 10*time.Second)
	// And they keep renewing with the restarted controller.
	for _, id := range []string{gwID, nurseID} {
		waitFor(t, rotationTTL, id+" to renew after the restart", func() error {
			for _, e := range w.audit("--limit", "1000") {
				if e.Type == "cert.renew" && e.Subject == id && e.Outcome == "success" && e.Time.After(restarted) {
					return nil
				}
			}
			return fmt.Errorf("no renewal since %v", restarted)
		})
	}
	if fi, err := os.Stat(nurseCert); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("nurse cert.pem: %v mode %v, want 0600", err, fi.Mode().Perm())
	}

	// The clerk is off until its certificate has expired: 'cordon up' says
	// to sign in again, and after 'cordon login' it connects.
	clerkCert := filepath.Join(w.clerk.stateDir, "cert.pem")
	w.clerk.proc.stop()
	expiry := w.readAgentCert(clerkCert).NotAfter
	waitFor(t, rotationTTL+5*time.Second, "the clerk's certificate to expire", func() error {
		if left := time.Until(expiry.Add(time.Second)); left > 0 {
			return fmt.Errorf("valid for %v more", left)
		}
		return nil
	})
	w.clerk.proc = w.start(w.clerk.ns, "cordon-clerk-expired", bin("cordon"), "up", "--state-dir", w.clerk.stateDir,
		"--mode", "tun", "--interface", w.clerk.iface, "--dns", "none")
	waitFor(t, 20*time.Second, "the clerk's agent to say its certificate expired and to sign in again", func() error {
		if l := w.clerk.proc.logs(); !strings.Contains(l, "certificate has expired") || !strings.Contains(l, "cordon login") {
			return fmt.Errorf("log so far:\n%s", tail(l, 5))
		}
		return nil
	})
	if st, err := w.clerk.status(); err == nil && st.ControlConnected {
		t.Error("the clerk connected with an expired certificate")
	}
	w.clerk.proc.stop()
	w.login(w.clerk)
	w.up(w.clerk)
}

// restartController stops the controller and starts it again on the same
// data directory with the same flags; it returns when the new one was
// started.
func (w *world) restartController() time.Time {
	w.t.Helper()
	w.controller.stop()
	if s := w.controller.exited(); !strings.Contains(s, "exited") {
		w.t.Fatalf("controller did not stop: %q", s)
	}
	at := time.Now()
	w.startController("controller-restarted")
	return at
}

// readAgentCert parses an agent's cert.pem and checks it is 0600 and
// chains to the controller CA.
func (w *world) readAgentCert(path string) *x509.Certificate {
	w.t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		w.t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		w.t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		w.t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		w.t.Fatalf("%s: not PEM", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		w.t.Fatalf("%s: %v", path, err)
	}
	caPEM, err := os.ReadFile(w.caFile())
	if err != nil {
		w.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: cert.NotBefore.Add(time.Second)}); err != nil {
		w.t.Errorf("%s: does not chain to the controller CA: %v", path, err)
	}
	return cert
}
