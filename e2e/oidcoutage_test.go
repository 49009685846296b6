package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOIDCOutageBounded: while the IdP is down, a signed-in clinician
// keeps access (fail static), but only until unreachable_limit after the
// IdP last confirmed them: then the session ends (audited), so an IdP that
// stays down cannot extend access for ever. Once the IdP is back, signing
// in again works: the link to the IdP was kept (issue 10).
//
//	[ctl ns] cordon-controller --oidc-config (refresh 1s, unreachable_limit 6s), cordon-test-idp :9998
//	[cl3 ns] 192.0.2.13: cordon login --idp test; cordon up
func TestOIDCOutageBounded(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	const (
		refresh = time.Second
		limit   = 6 * time.Second
	)
	idpBin := buildTestIdP(t)
	cfgDir := t.TempDir()
	cfg := filepath.Join(cfgDir, "oidc.yaml")
	writeOIDCFile(t, cfg, fmt.Sprintf(`refresh_interval: %s
unreachable_limit: %s
providers:
  - {name: test, issuer: %q, client_id: cordon, allow_http: true}
`, refresh, limit, idpIssuer))
	users := filepath.Join(cfgDir, "users.json")
	writeOIDCFile(t, users, `[{"Username": "drsmith", "Password": "idp-pw", "Groups": ["Physicians"]}]`)

	w := newWorld(t, withControllerArgs("--oidc-config", cfg))
	idp := w.start(w.ctl, "test-idp", idpBin, "serve", "--addr", idpAddr, "--users", users)
	ctlHTTP := w.ctl.httpClient(time.Second, 3*time.Second, nil)
	control := func(op string) {
		t.Helper()
		resp, err := ctlHTTP.Post("http://"+idpAddr+"/_oidctest/"+op, "", nil)
		if err != nil {
			t.Fatalf("test IdP %s: %v", op, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("test IdP %s: %s", op, resp.Status)
		}
	}
	waitFor(t, 10*time.Second, "test IdP discovery", func() error {
		if s := idp.exited(); s != "" {
			t.Fatalf("%s\n%s", s, idp.logs())
		}
		resp, err := ctlHTTP.Get(idpIssuer + ".well-known/openid-configuration")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	policy := filepath.Join(w.dir, "oidc-policy.yaml")
	writeOIDCFile(t, policy, oidcPolicy)
	w.mustCtl("", "policy", "apply", policy, "--reason", "e2e: IdP group Physicians reaches ehr")

	cl3 := w.extraClientNS("cl3", cl3Addr)
	doc := &client{iface: ifaceName("d", w.seq), user: "drsmith", ns: cl3, stateDir: filepath.Join(w.dir, "drsmith")}
	t.Cleanup(func() { os.Remove(filepath.Join("/var/run/wireguard", doc.iface+".sock")) })
	login := func() (string, int) {
		out, errOut, rc := doc.cordon("", "login", "--controller", controllerURL, "--ca-cert", w.caFile(), "--idp", "test",
			"--browser", idpBin+" browse --user drsmith --password idp-pw")
		return out + errOut, rc
	}
	if out, rc := login(); rc != 0 {
		t.Fatalf("cordon login --idp test: exit %d\n%s", rc, out)
	}
	w.up(doc)
	t.Cleanup(doc.proc.stop)
	w.waitReach(doc, w.svcs["ehr"], 20*time.Second)

	control("down")
	down := time.Now()
	// Within the limit: reachable throughout, over several failed
	// refreshes (fail static).
	for time.Since(down) < limit/2 {
		if _, err := doc.get(w.svcs["ehr"].addr); err != nil {
			t.Fatalf("ehr unreachable %v into an IdP outage (unreachable_limit %v): %v", time.Since(down).Round(time.Millisecond), limit, err)
		}
		<-time.After(200 * time.Millisecond) // probe pacing, not a wait for an event
	}
	// Past the limit: cut.
	waitFor(t, limit+10*time.Second, "drsmith to lose ehr past unreachable_limit", func() error {
		if _, err := doc.get(w.svcs["ehr"].addr); err == nil {
			return errors.New("ehr still reachable")
		}
		return nil
	})
	cut := time.Since(down)
	t.Logf("access cut %v into the IdP outage (unreachable_limit %v, refresh %v)", cut.Round(time.Millisecond), limit, refresh)
	if cut < limit-refresh || cut > limit+refresh+revokeBound {
		t.Errorf("access cut %v into the outage, want between %v and %v (the limit counts from the last successful refresh)", cut.Round(time.Millisecond), limit-refresh, limit+refresh+revokeBound)
	}
	waitFor(t, 10*time.Second, "cordon status to say why the session ended", func() error {
		st, err := doc.status()
		if err != nil {
			return err
		}
		if st.Session == nil || st.Session.State != "ended" || st.Session.Reason != "idp-unreachable" {
			return fmt.Errorf("session %+v", st.Session)
		}
		t.Logf("client says: %s", st.Session.Message)
		return nil
	})
	var evs []struct {
		Subject string            `json:"subject"`
		Details map[string]string `json:"details"`
	}
	w.ctlJSON(&evs, "audit", "list", "--type", "auth.idp.unreachable")
	if len(evs) != 1 || evs[0].Subject != "drsmith" || evs[0].Details["unreachable_limit"] != limit.String() {
		t.Errorf("audit auth.idp.unreachable: %+v", evs)
	}

	// The IdP is back: the user signs in again (not refused: the link stays).
	control("up")
	if out, rc := login(); rc != 0 || !strings.Contains(out, "Signed in as drsmith") {
		t.Errorf("sign-in after the outage: exit %d\n%s", rc, out)
	}
}
