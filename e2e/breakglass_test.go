package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// breakGlassSIEM is the controller's SIEM configuration for TestBreakGlass:
// rsyslog's plain TCP input alone.
const breakGlassSIEM = `hostname: ctl-e2e
sinks:
  - name: plain
    format: syslog
    transport: tcp
    address: 127.0.0.1:10514
`

// TestBreakGlass: with the identity provider stopped, an emergency account
// signs in with its password, one sealed one-time code and a written
// justification ('cordon login --break-glass'). Its session reaches the
// emergency app lab and nothing else its rules grant (billing) or that
// others reach (ehr); the use raises an alert that reaches a real rsyslog
// at syslog severity 1 and an ERROR line in the controller's log; when the
// controller's --break-glass-duration passes, access ends (the session
// ends "expired" and the client says it is never extended), and the use is
// open, waiting for two admins' review.
//
//	[ctl ns] cordon-controller --oidc-config --siem-config --break-glass-duration 8s
//	         cordon-test-idp :9998 (started, then stopped), rsyslogd 127.0.0.1:10514
//	[cl3 ns] 192.0.2.13: cordon login --break-glass; cordon up (user er-1)
//	[app ns] lab 10.20.0.12:80 (app "lab", emergency), billing, ehr
func TestBreakGlass(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	const (
		bound = 8 * time.Second
		pw    = "a sealed passphrase for the ED"
		why   = "ED downtime: IdP down, patient in resus needs lab results"
	)
	idpBin := buildTestIdP(t)
	cfgDir := t.TempDir()
	oidcCfg := filepath.Join(cfgDir, "oidc.yaml")
	writeOIDCFile(t, oidcCfg, fmt.Sprintf("providers:\n  - {name: test, issuer: %q, client_id: cordon, allow_http: true}\n", idpIssuer))
	users := filepath.Join(cfgDir, "users.json")
	writeOIDCFile(t, users, `[{"Username": "drsmith", "Password": "idp-pw", "Groups": ["Physicians"]}]`)
	siemDir := t.TempDir()
	siemCfg := prepareRsyslog(t, siemDir, breakGlassSIEM)

	w := newWorld(t, withControllerArgs("--oidc-config", oidcCfg, "--siem-config", siemCfg, "--break-glass-duration", bound.String()))
	w.runRsyslog(siemDir, "rsyslog")

	t.Log("---- the identity provider runs, then stops ----")
	idp := w.start(w.ctl, "test-idp", idpBin, "serve", "--addr", idpAddr, "--users", users)
	ctlHTTP := w.ctl.httpClient(time.Second, 2*time.Second, nil)
	discovery := func() error {
		resp, err := ctlHTTP.Get(idpIssuer + ".well-known/openid-configuration")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	waitFor(t, 10*time.Second, "test IdP discovery", func() error {
		if s := idp.exited(); s != "" {
			t.Fatalf("%s\n%s", s, idp.logs())
		}
		return discovery()
	})
	idp.stop()
	if err := discovery(); err == nil {
		t.Fatal("the test IdP still answers after it was stopped")
	}

	t.Log("---- an emergency account, an emergency app, rules to it and to a non-emergency app ----")
	w.mustCtl("", "app", "create", "lab", "--segment", segmentName, "--dns-name", "lab.hosp.internal",
		"--address", "10.20.0.12", "--proto", "tcp", "--port", "80", "--class", "phi", "--emergency")
	var acct struct {
		Name       string   `json:"name"`
		BreakGlass bool     `json:"break_glass"`
		Codes      []string `json:"codes"`
	}
	if err := json.Unmarshal([]byte(w.mustCtl(pw+"\n", "breakglass", "create", "er-1", "--password-stdin", "-o", "json")), &acct); err != nil ||
		!acct.BreakGlass || len(acct.Codes) != 10 {
		t.Fatalf("cordonctl breakglass create: %+v, %v", acct, err)
	}
	w.mustCtl("", "group", "create", "emergency-access")
	w.mustCtl("", "group", "add-member", "emergency-access", "er-1")
	w.mustCtl("", "rule", "create", "emergency-lab", "--group", "emergency-access", "--app", "lab")
	w.mustCtl("", "rule", "create", "emergency-billing", "--group", "emergency-access", "--app", "billing")

	t.Log("---- break-glass sign-in with the IdP down ----")
	cl3 := w.extraClientNS("cl3", cl3Addr)
	er := &client{iface: ifaceName("e", w.seq), user: "er-1", password: pw, ns: cl3, stateDir: filepath.Join(w.dir, "er-1")}
	t.Cleanup(func() { os.Remove(filepath.Join("/var/run/wireguard", er.iface+".sock")) })
	login := func(args ...string) (string, int) {
		out, errOut, rc := er.cordon(pw+"\n", append([]string{"login", "--controller", controllerURL, "--ca-cert", w.caFile(),
			"--user", "er-1", "--password-stdin"}, args...)...)
		return out + errOut, rc
	}
	if out, rc := login("--recovery-code", acct.Codes[0]); rc == 0 || !strings.Contains(out, "emergency (break-glass) account") {
		t.Fatalf("an ordinary sign-in of the emergency account: exit %d, want refused\n%s", rc, out)
	}
	if out, rc := login("--break-glass", "--recovery-code", acct.Codes[0]); rc == 0 || !strings.Contains(out, "--justification") {
		t.Fatalf("break-glass without a justification: exit %d, want refused\n%s", rc, out)
	}
	start := time.Now()
	out, rc := login("--break-glass", "--justification", why, "--recovery-code", acct.Codes[0])
	if rc != 0 || !strings.Contains(out, "BREAK-GLASS") {
		t.Fatalf("cordon login --break-glass: exit %d\n%s", rc, out)
	}
	w.up(er)
	t.Cleanup(er.proc.stop)
	w.waitReach(er, w.svcs["lab"], bound)
	t.Logf("emergency app lab reachable %v after the sign-in started", time.Since(start).Round(time.Millisecond))
	w.unreachable(er, w.svcs["billing"], w.svcs["ehr"])

	t.Log("---- the alert: audit, syslog (severity 1), the controller's log ----")
	alert := w.waitAudit("auth.break_glass", func(e auditEvent) bool {
		return e.Type == "auth.break_glass" && e.Details["user"] == "er-1" && e.Details["justification"] == why
	})
	plain := filepath.Join(siemDir, "plain.log")
	waitFor(t, 30*time.Second, "the break-glass alert in rsyslog's file", func() error {
		pri, err := syslogPRI(plain, "auth.break_glass", alert.Subject)
		if err != nil {
			return err
		}
		if pri != 13*8+1 {
			t.Fatalf("auth.break_glass reached rsyslog with PRI %d, want %d (facility 13, severity 1: alert)", pri, 13*8+1)
		}
		return nil
	})
	if l := w.controller.logs(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "BREAK-GLASS") || !strings.Contains(l, alert.Subject) {
		t.Errorf("no ERROR line about the use %s in the controller's log:\n%s", alert.Subject, tail(l, 20))
	}

	t.Log("---- the time bound passes: access ends, the use waits for review ----")
	// The cut lies between the end of the last request that got through
	// and the start of the first that did not (a refused dial takes its
	// whole timeout to fail).
	var lastOK, firstFail time.Duration
	waitFor(t, bound+15*time.Second, "er-1 to lose lab at the time bound", func() error {
		tried := time.Since(start)
		if _, err := er.get(w.svcs["lab"].addr); err == nil {
			lastOK = time.Since(start)
			return errors.New("lab still reachable")
		}
		firstFail = tried
		return nil
	})
	t.Logf("access ended between %v and %v after the sign-in started (bound %v)", lastOK.Round(time.Millisecond), firstFail.Round(time.Millisecond), bound)
	if lastOK < bound-time.Second || firstFail > bound+revokeBound {
		t.Errorf("access ended between %v and %v after the sign-in, want within %v of the %v bound", lastOK.Round(time.Millisecond), firstFail.Round(time.Millisecond), revokeBound, bound)
	}
	waitFor(t, 10*time.Second, "cordon status to say the break-glass session ended", func() error {
		st, err := er.status()
		if err != nil {
			return err
		}
		if st.Session == nil || st.Session.State != "ended" || st.Session.Reason != "expired" || !strings.Contains(st.Session.Message, "never extended") {
			return fmt.Errorf("session %+v", st.Session)
		}
		return nil
	})
	w.waitAudit("session.end (expired)", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Details["user"] == "er-1" && e.Details["reason"] == "expired"
	})
	var uses []struct {
		ID        string            `json:"id"`
		User      string            `json:"user"`
		State     string            `json:"state"`
		ExpiresAt time.Time         `json:"expires_at"`
		Reviews   []json.RawMessage `json:"reviews"`
	}
	w.ctlJSON(&uses, "breakglass", "list")
	if len(uses) != 1 || uses[0].ID != alert.Subject || uses[0].User != "er-1" || uses[0].State != "open" || len(uses[0].Reviews) != 0 {
		t.Fatalf("break-glass uses after the session: %+v, want one open use with no review", uses)
	}
	// The namespaces share the host's clock: the cut against the bound
	// the controller stored.
	t.Logf("access ended between %v and %v after the session's bound", start.Add(lastOK).Sub(uses[0].ExpiresAt).Round(time.Millisecond),
		start.Add(firstFail).Sub(uses[0].ExpiresAt).Round(time.Millisecond))
	if out := w.mustCtl("", "breakglass", "show", alert.Subject); !strings.Contains(out, why) || !strings.Contains(out, "open") {
		t.Errorf("cordonctl breakglass show:\n%s", out)
	}
}

// syslogPRI returns the PRI of the first frame in rsyslog's file whose
// MSGID is msgID and whose text contains subject.
func syslogPRI(path, msgID, subject string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := rsyslogLine.FindStringSubmatch(line)
		if m == nil || m[1] != msgID || !strings.Contains(m[2], subject) {
			continue
		}
		var pri int
		if _, err := fmt.Sscanf(line, "<%d>", &pri); err != nil {
			return 0, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		return pri, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s frame for %s in %s yet", msgID, subject, path)
}
