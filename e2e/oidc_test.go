package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test IdP runs in the controller's namespace (the hospital's IdP is
// somewhere the controller and the clinicians' browsers both reach).
const (
	idpAddr   = ctlAddr + ":9998"
	idpIssuer = "http://" + idpAddr + "/"
	cl3Addr   = "192.0.2.13"
)

// oidcPolicy grants ehr to the IdP group Physicians only, pacs to them
// only with MFA (which the test IdP does not report for drsmith); billing
// to nobody (and the local users of the world reach nothing).
const oidcPolicy = `version: 1
groups:
  physicians:
    idp: [{claim: groups, value: Physicians}]
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.20.0.10], ports: [tcp/80], classification: internal}
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
  pacs: {segment: clinical, names: [pacs.hosp.internal], addresses: [10.20.0.12], ports: [tcp/80], classification: internal}
rules:
  - {name: physicians-ehr, from: [group:physicians], to: [app:ehr]}
  - {name: physicians-pacs, from: [group:physicians], to: [app:pacs], when: {mfa: true}}
`

// TestOIDC: a clinician signs in through the IdP with `cordon login --idp`
// (authorization code + PKCE, loopback redirect, a scripted browser), is
// created just in time, reaches the app the policy grants to the IdP group
// and nothing else; when the IdP deactivates the user, the next refresh
// (every 2 s here) ends the session and cuts access, an open connection
// included. The test IdP refuses the refresh of the deactivated user the
// way Dex does (HTTP 400 invalid_request, not invalid_grant): any OAuth
// error response is the IdP's answer (issue 10).
//
//	[ctl ns] cordon-controller --oidc-config, cordon-test-idp :9998
//	[cl3 ns] 192.0.2.13: cordon login --idp test --browser "cordon-test-idp browse ..."; cordon up
func TestOIDC(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	idpBin := buildTestIdP(t)
	cfgDir := t.TempDir()
	cfg := filepath.Join(cfgDir, "oidc.yaml")
	writeOIDCFile(t, cfg, `refresh_interval: 2s
providers:
  - name: test
    display_name: Test hospital IdP
    issuer: `+idpIssuer+`
    client_id: cordon
    allow_http: true   # the test IdP speaks plain HTTP
    device_flow: true
`)
	users := filepath.Join(cfgDir, "users.json")
	writeOIDCFile(t, users, `[{"Username": "drsmith", "Password": "idp-pw", "Email": "dr.smith@hospital.example", "Groups": ["Physicians"]}]`)

	w := newWorld(t, withControllerArgs("--oidc-config", cfg))
	idp := w.start(w.ctl, "test-idp", idpBin, "serve", "--addr", idpAddr, "--users", users, "--revoked-answer", "dex")
	ctlHTTP := w.ctl.httpClient(time.Second, 3*time.Second, nil)
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

	// Which IdPs does this controller offer?
	out, errOut, rc := doc.cordon("", "login", "--controller", controllerURL, "--ca-cert", w.caFile(), "--idp", "list")
	if rc != 0 || !strings.Contains(out, "Test hospital IdP") {
		t.Fatalf("cordon login --idp list: exit %d\n%s%s", rc, out, errOut)
	}
	start := time.Now()
	out, errOut, rc = doc.cordon("", "login", "--controller", controllerURL, "--ca-cert", w.caFile(), "--idp", "test",
		"--browser", idpBin+" browse --user drsmith --password idp-pw")
	if rc != 0 {
		t.Fatalf("cordon login --idp test: exit %d\n%s%s\nIdP log:\n%s", rc, out, errOut, tail(idp.logs(), 30))
	}
	t.Logf("OIDC sign-in (browser, code exchange, enrollment) took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "Signed in as drsmith") {
		t.Errorf("cordon login output: %s", out)
	}
	// The IdP reported no MFA: the sign-in says what stays closed and how
	// to get it.
	if !strings.Contains(out, "these apps stay closed: pacs") || !strings.Contains(out, "cordon login --idp test") {
		t.Errorf("cordon login output does not say pacs needs MFA and how to get it:\n%s", out)
	}

	var us []struct {
		Name string `json:"name"`
	}
	w.ctlJSON(&us, "user", "list")
	found := false
	for _, u := range us {
		found = found || u.Name == "drsmith"
	}
	if !found {
		t.Fatalf("user drsmith was not created at the first sign-in: %+v", us)
	}

	w.up(doc)
	t.Cleanup(doc.proc.stop)
	w.waitReach(doc, w.svcs["ehr"], 20*time.Second)
	waitFor(t, 10*time.Second, "cordon status to say pacs needs MFA", func() error {
		out, errOut, rc := doc.cordon("", "status")
		if rc != 0 || !strings.Contains(out, "MFA:") || !strings.Contains(out, "pacs") {
			return fmt.Errorf("cordon status: exit %d\n%s%s", rc, out, errOut)
		}
		return nil
	})
	w.unreachable(doc, w.svcs["billing"])
	// The local users are in no IdP group: the policy gives them nothing.
	w.unreachable(w.nurse, w.svcs["ehr"])

	// Deactivated at the IdP: the next refresh ends the session and cuts
	// the open connection within one refresh interval (plus the push to
	// the gateway).
	const refreshInterval = 2 * time.Second
	ec, err := openEcho(doc.ns, ehrAddr)
	if err != nil {
		t.Fatalf("open a long-lived connection to ehr: %v", err)
	}
	defer ec.Close()
	if err := ec.probe(2 * time.Second); err != nil {
		t.Fatalf("echo over the open connection: %v", err)
	}
	resp, err := ctlHTTP.Post("http://"+idpAddr+"/_oidctest/disable?user=drsmith", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("deactivate drsmith at the IdP: %v %v", resp, err)
	}
	resp.Body.Close()
	deactivated := time.Now()
	how, cutAt, err := watchCut(ec, deactivated, 15*time.Second)
	if err != nil {
		t.Errorf("open connection after deactivation at the IdP: %v", err)
	} else {
		t.Logf("open connection cut %v after deactivation at the IdP (%s; refresh interval %v)", cutAt.Round(time.Millisecond), how, refreshInterval)
		if bound := refreshInterval + revokeBound; cutAt > bound {
			t.Errorf("open connection cut %v after deactivation, want within one refresh interval plus the push (%v)", cutAt.Round(time.Millisecond), bound)
		}
	}
	waitFor(t, 15*time.Second, "drsmith to lose ehr after deactivation at the IdP", func() error {
		if _, err := doc.get(w.svcs["ehr"].addr); err == nil {
			return errors.New("ehr still reachable")
		}
		return nil
	})
	t.Logf("access cut %v after deactivation at the IdP (refresh interval 2 s)", time.Since(deactivated).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "cordon status to show the session ended", func() error {
		st, err := doc.status()
		if err != nil {
			return err
		}
		if st.Session == nil || st.Session.State != "ended" {
			return fmt.Errorf("session %+v", st.Session)
		}
		if st.Session.Reason != "idp-refused" {
			t.Errorf("session end reason %q, want idp-refused", st.Session.Reason)
		}
		t.Logf("client says: %s: %s", st.Session.Reason, st.Session.Message)
		return nil
	})
	w.unreachable(doc, w.svcs["ehr"])
	var evs []struct {
		Type    string            `json:"type"`
		Outcome string            `json:"outcome"`
		Subject string            `json:"subject"`
		Details map[string]string `json:"details"`
	}
	w.ctlJSON(&evs, "audit", "list", "--type", "auth.idp.refresh")
	if len(evs) == 0 || evs[0].Subject != "drsmith" || evs[0].Outcome != "failure" || evs[0].Details["error"] != "invalid_request" {
		t.Errorf("audit auth.idp.refresh: %+v, want a failure for drsmith with the IdP's error invalid_request", evs)
	}

	// Signing in again is refused at the IdP itself.
	_, _, rc = doc.cordon("", "login", "--controller", controllerURL, "--ca-cert", w.caFile(), "--idp", "test",
		"--browser", idpBin+" browse --user drsmith --password idp-pw")
	if rc == 0 {
		t.Error("a user deactivated at the IdP signed in again")
	}
}

// extraClientNS adds a client namespace on the world's bridge.
func (w *world) extraClientNS(role, addr string) netNS {
	t := w.t
	t.Helper()
	ns := netNS{name: w.id + "-" + role}
	mustRun(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := sh("ip", "netns", "pids", ns.name); err == nil && strings.TrimSpace(out) != "" {
			for _, p := range strings.Fields(out) {
				sh("kill", "-9", p)
			}
		}
		sh("ip", "netns", "del", ns.name)
	})
	ip(t, ns, "link", "set", "lo", "up")
	ip(t, w.wan, "link", "add", "p-"+role, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
	ip(t, w.wan, "link", "set", "p-"+role, "master", "br0", "up")
	ip(t, ns, "addr", "add", addr+"/24", "dev", "eth0")
	ip(t, ns, "link", "set", "eth0", "up")
	return ns
}

// buildTestIdP builds e2e/cmd/cordon-test-idp.
func buildTestIdP(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cordon-test-idp")
	cmd := exec.Command("go", "build", "-o", out, "./e2e/cmd/cordon-test-idp")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build cordon-test-idp: %v\n%s", err, b)
	}
	return out
}

func writeOIDCFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
