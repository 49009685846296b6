package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// crashKills is how many times each crash test kills the controller:
// CORDON_CRASH_KILLS shared by the three tests (the issue asks for at
// least 200), else a short run for CI.
func crashKills(t *testing.T) int {
	if s := os.Getenv("CORDON_CRASH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 {
			t.Fatalf("CORDON_CRASH_KILLS=%q: want a number of at least 3", s)
		}
		return (n + 2) / 3
	}
	return 8
}

// crashController is one cordon-controller process on loopback.
type crashController struct {
	cmd   *exec.Cmd
	done  chan struct{}
	api   *adminapi.Client
	url   string
	caPEM []byte
}

func startCrashController(t *testing.T, dir string) *crashController {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := tryStartCrashController(t, dir)
		if err == nil {
			return c
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

// freePort returns a port number free on loopback for both TCP and UDP
// (the controller serves the API and QUIC on the same number).
func freePort(t *testing.T) string {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
}

// tryStartCrashController starts a controller on a free port; the error
// says why it exited if it did (another process may have taken the port
// in between).
func tryStartCrashController(t *testing.T, dir string) (*crashController, error) {
	t.Helper()
	addr := freePort(t)
	cmd := exec.Command(bin("cordon-controller"), "--data-dir", dir, "--listen", addr)
	logf, err := os.OpenFile(filepath.Join(dir, "controller.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &crashController{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.done })
	var exited error
	waitFor(t, 20*time.Second, "controller up", func() error {
		select {
		case <-c.done:
			log, _ := os.ReadFile(filepath.Join(dir, "controller.log"))
			exited = fmt.Errorf("controller exited: %s", tail(string(log), 3))
			return nil
		default:
		}
		tok, err := os.ReadFile(filepath.Join(dir, "admin-token"))
		if err != nil {
			return err
		}
		ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			return err
		}
		api, err := adminapi.New("https://"+addr, strings.TrimSpace(string(tok)), ca)
		if err != nil {
			return err
		}
		if err := api.Do(t.Context(), http.MethodGet, "/v1/whoami", nil, nil); err != nil {
			api.Close()
			return err
		}
		c.api, c.url, c.caPEM = api, "https://"+addr, ca
		return nil
	})
	if exited != nil {
		return nil, exited
	}
	return c, nil
}

func (c *crashController) kill() {
	c.cmd.Process.Kill()
	<-c.done
	c.api.Close()
}

// auditLogCheck verifies the audit log with cordonctl after every restart:
// the whole log verifies (every record hashes into the signed tree), and
// it extends the checkpoint saved before the kill, by consistency proof:
// no record that was in a signed tree was lost, changed or reordered.
type auditLogCheck struct {
	dir  string // the controller's data dir: admin-token, ca.pem
	held string // the checkpoint saved before the last kill
}

func (a *auditLogCheck) cordonctl(t *testing.T, c *crashController, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"--controller", c.url, "--token-file", filepath.Join(a.dir, "admin-token"), "--ca-cert", filepath.Join(a.dir, "ca.pem")}, args...)
	out, err := exec.CommandContext(t.Context(), bin("cordonctl"), argv...).CombinedOutput()
	return string(out), err
}

// save keeps the controller's latest checkpoint (waiting for the first).
func (a *auditLogCheck) save(t *testing.T, c *crashController) {
	t.Helper()
	a.saveWith(t, func(args ...string) (string, error) { return a.cordonctl(t, c, args...) })
}

// saveWith is save with cordonctl run by ctl (stdout and stderr).
func (a *auditLogCheck) saveWith(t *testing.T, ctl func(args ...string) (string, error)) {
	t.Helper()
	var cp string
	waitFor(t, 10*time.Second, "an audit log checkpoint", func() error {
		out, err := ctl("audit", "checkpoint")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		cp = out
		return nil
	})
	a.held = filepath.Join(a.dir, "held-checkpoint.txt")
	if err := os.WriteFile(a.held, []byte(cp), 0o600); err != nil {
		t.Fatal(err)
	}
}

// verify runs cordonctl audit verify against the held checkpoint, then
// holds the newest one.
func (a *auditLogCheck) verify(t *testing.T, c *crashController, kill int) {
	t.Helper()
	a.verifyWith(t, func(args ...string) (string, error) { return a.cordonctl(t, c, args...) }, fmt.Sprintf("kill %d", kill))
}

// verifyWith is verify with cordonctl run by ctl; when names the moment.
func (a *auditLogCheck) verifyWith(t *testing.T, ctl func(args ...string) (string, error), when string) {
	t.Helper()
	out, err := ctl("audit", "verify", "--checkpoint", a.held)
	if err != nil || !strings.Contains(out, "log verified: ") || !strings.Contains(out, "extends the earlier checkpoint") {
		t.Fatalf("%s: cordonctl audit verify: %v\n%s", when, err, out)
	}
	a.saveWith(t, ctl)
}

// crashCall is one mutating call of a burst.
type crashCall struct {
	key     string // its Idempotency-Key
	do      func(ctx context.Context, api *adminapi.Client) error
	applied bool // the controller said it applied (now or on a retry)
	lost    bool // no answer: retried after the restart
	what    string
}

// crashBurst runs calls from workers against c until the controller is
// killed at a random moment, then classifies each call's outcome.
//
// The kill comes after a random 20 ms to burst.
func crashBurst(t *testing.T, c *crashController, workers int, burst time.Duration, next func(worker, n int) []*crashCall) []*crashCall {
	var (
		mu    sync.Mutex
		calls []*crashCall
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(t.Context())
	for w := range workers {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				for _, call := range next(w, n) {
					err := call.do(adminapi.WithRequestID(context.Background(), call.key), c.api)
					var ue *adminapi.UnreachableError
					switch {
					case err == nil:
						call.applied = true
					case errors.As(err, &ue):
						call.lost = true
					}
					mu.Lock()
					calls = append(calls, call)
					mu.Unlock()
					if !call.applied {
						break
					}
				}
			}
		})
	}
	time.Sleep(20*time.Millisecond + rand.N(burst))
	cancel() // no new calls; those in flight meet the kill
	c.kill()
	wg.Wait()
	return calls
}

// retryLost sends every call that got no answer again with its key: it
// must now apply, or answer that its first attempt already had.
func retryLost(t *testing.T, c *crashController, calls []*crashCall) (retried, wasApplied int) {
	t.Helper()
	for _, call := range calls {
		if !call.lost {
			continue
		}
		retried++
		err := call.do(adminapi.WithRequestID(t.Context(), call.key), c.api)
		var ae *adminapi.AppliedError
		switch {
		case err == nil:
		case errors.As(err, &ae):
			wasApplied++
		default:
			t.Fatalf("retry of %s (request %s) after the restart: %v; want it applied now or 'already applied'", call.what, call.key, err)
		}
		call.applied, call.lost = true, false
	}
	return retried, wasApplied
}

// auditCounter accumulates success records by key as the trail grows.
type auditCounter struct {
	after int64
	n     map[string]int
}

// read adds the events after the last read; key names what an event
// records ("" to ignore it).
func (a *auditCounter) read(t *testing.T, api *adminapi.Client, typ string, key func(adminapi.AuditEvent) string) {
	t.Helper()
	if a.n == nil {
		a.n = map[string]int{}
	}
	evs, err := api.ListAudit(t.Context(), adminapi.AuditQuery{Type: typ, After: a.after, Limit: adminapi.MaxAuditLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == adminapi.MaxAuditLimit {
		t.Fatalf("more than %d new %s events in one burst: the counter would miss some", len(evs), typ)
	}
	for _, e := range evs {
		a.after = max(a.after, e.Seq)
		if e.Outcome != "success" {
			continue
		}
		if k := key(e); k != "" {
			a.n[k]++
		}
	}
}

// oneRecordEach fails the test unless every key in stored has exactly one
// audit record and every recorded key is stored: no change without its
// record, no record without its change. what names the records.
func oneRecordEach(t *testing.T, kill int, what string, stored map[string]bool, recorded map[string]int) {
	t.Helper()
	for key := range stored {
		if n := recorded[key]; n != 1 {
			t.Fatalf("kill %d: %s is stored with %d %s records, want exactly 1", kill, key, n, what)
		}
	}
	for key, n := range recorded {
		if !stored[key] {
			t.Fatalf("kill %d: %d %s records of %s, which is not stored", kill, n, what, key)
		}
	}
}

// TestControllerCrashDirectory kills the controller (SIGKILL) at random
// moments of bursts of group creations and memberships from four admins.
// After each restart: every call that reported success is in the store;
// every group and membership has exactly one audit record; no record names
// a group or membership that does not exist; a call whose answer was lost,
// sent again with its Idempotency-Key, applies now or says it already had.
func TestControllerCrashDirectory(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	dir := t.TempDir()
	kills := crashKills(t)
	users := []string{"u0", "u1", "u2"}
	c := startCrashController(t, dir)
	for _, u := range users {
		if _, err := c.api.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: u, Password: "crash-test-password-" + u}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		all                    []*crashCall
		groupsAudit, memAudit  auditCounter
		totalRetried, totalWas int
	)
	logCheck := &auditLogCheck{dir: dir}
	logCheck.save(t, c)
	for k := range kills {
		calls := crashBurst(t, c, 4, 400*time.Millisecond, func(w, n int) []*crashCall {
			g := fmt.Sprintf("g-%d-%d-%d", k, w, n)
			u := users[(w+n)%len(users)]
			create := &crashCall{key: "c-" + g, what: "create group " + g, do: func(ctx context.Context, api *adminapi.Client) error {
				_, err := api.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: g})
				return err
			}}
			member := &crashCall{key: "m-" + g, what: "add " + u + " to " + g, do: func(ctx context.Context, api *adminapi.Client) error {
				_, err := api.AddMember(ctx, g, u)
				return err
			}}
			return []*crashCall{create, member}
		})
		all = append(all, calls...)
		c = startCrashController(t, dir)
		logCheck.verify(t, c, k+1)
		r, was := retryLost(t, c, calls)
		totalRetried += r
		totalWas += was

		groups, err := c.api.ListGroups(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, g := range groups {
			have["group "+g.Name] = true
			for _, m := range g.Members {
				have["member "+g.Name+" "+m] = true
			}
		}
		groupsAudit.read(t, c.api, "admin.group.create", func(e adminapi.AuditEvent) string { return "group " + e.Subject })
		memAudit.read(t, c.api, "admin.group.add_member", func(e adminapi.AuditEvent) string {
			return "member " + e.Subject + " " + e.Details["user"]
		})
		recorded := map[string]int{}
		for key, n := range groupsAudit.n {
			recorded[key] += n
		}
		for key, n := range memAudit.n {
			recorded[key] += n
		}
		oneRecordEach(t, k+1, "admin.group", have, recorded)
		for _, call := range all {
			if !call.applied {
				continue
			}
			var key string
			if g, ok := strings.CutPrefix(call.what, "create group "); ok {
				key = "group " + g
			} else {
				var u, g string
				fmt.Sscanf(call.what, "add %s to %s", &u, &g)
				key = "member " + g + " " + u
			}
			if !have[key] {
				t.Fatalf("kill %d: %q reported success but %s is not in the store", k+1, call.what, key)
			}
		}
	}
	applied := 0
	for _, call := range all {
		if call.applied {
			applied++
		}
	}
	t.Logf("%d kills: %d calls, %d applied, %d answers lost and retried (%d of them had applied before the kill)",
		kills, len(all), applied, totalRetried, totalWas)
}

// TestControllerCrashPolicy kills the controller at random moments of
// bursts of policy applies (from three admins, racing each other) and
// gateway token creations. After each restart: every policy version has
// exactly one admin.policy.apply record naming it, and every record a
// version; every apply and token that reported success is in the store.
func TestControllerCrashPolicy(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	dir := t.TempDir()
	kills := crashKills(t)
	c := startCrashController(t, dir)
	logCheck := &auditLogCheck{dir: dir}
	var (
		all                    []*crashCall
		applyAudit, tokenAudit auditCounter
		totalRetried, totalWas int
		mu                     sync.Mutex
		ackVersions            = map[int64]string{} // version → sha256 the caller was told
		ackTokens              = map[string]bool{}
		policySrc              = func(tag string) string { return "# " + tag + "\n" + policyFirst }
		applyReq               = func(tag string) *adminapi.ApplyPolicyRequest {
			return &adminapi.ApplyPolicyRequest{File: "hospital.yaml", Source: policySrc(tag), Reason: "crash test " + tag}
		}
	)
	logCheck.save(t, c)
	for k := range kills {
		calls := crashBurst(t, c, 3, 400*time.Millisecond, func(w, n int) []*crashCall {
			tag := fmt.Sprintf("p-%d-%d-%d", k, w, n)
			if w == 2 {
				return []*crashCall{{key: "t-" + tag, what: "token " + tag, do: func(ctx context.Context, api *adminapi.Client) error {
					out, err := api.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical"})
					if err == nil {
						mu.Lock()
						ackTokens[out.ID] = true
						mu.Unlock()
					}
					return err
				}}}
			}
			return []*crashCall{{key: "a-" + tag, what: "apply " + tag, do: func(ctx context.Context, api *adminapi.Client) error {
				out, err := api.ApplyPolicy(ctx, applyReq(tag))
				if adminapi.IsCode(err, adminapi.CodeConflict) {
					return nil // another admin's apply won the race: refused, nothing stored
				}
				if err == nil {
					mu.Lock()
					ackVersions[out.Version.Version] = out.Version.SHA256
					mu.Unlock()
				}
				return err
			}}}
		})
		all = append(all, calls...)
		c = startCrashController(t, dir)
		logCheck.verify(t, c, k+1)
		r, was := retryLost(t, c, calls)
		totalRetried += r
		totalWas += was

		versions, err := c.api.ListPolicyVersions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		for _, v := range versions {
			have[strconv.FormatInt(v.Version, 10)] = v.SHA256
		}
		applyAudit.read(t, c.api, "admin.policy.apply", func(e adminapi.AuditEvent) string { return e.Details["version"] })
		stored := map[string]bool{}
		for v := range have {
			stored[v] = true
		}
		oneRecordEach(t, k+1, "admin.policy.apply (by version)", stored, applyAudit.n)
		mu.Lock()
		for v, sha := range ackVersions {
			if have[strconv.FormatInt(v, 10)] != sha {
				t.Fatalf("kill %d: apply of version %d reported success but the store has %q for it", k+1, v, have[strconv.FormatInt(v, 10)])
			}
		}
		mu.Unlock()

		toks, err := c.api.ListGatewayTokens(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		haveTok := map[string]bool{}
		for _, tk := range toks {
			haveTok[tk.ID] = true
		}
		tokenAudit.read(t, c.api, "admin.gateway_token.create", func(e adminapi.AuditEvent) string { return e.Subject })
		oneRecordEach(t, k+1, "admin.gateway_token.create", haveTok, tokenAudit.n)
		mu.Lock()
		for id := range ackTokens {
			if !haveTok[id] {
				t.Fatalf("kill %d: token %s reported created but is not stored", k+1, id)
			}
		}
		mu.Unlock()
	}
	t.Logf("%d kills: %d calls, %d answers lost and retried (%d of them had applied before the kill)", kills, len(all), totalRetried, totalWas)
}

// signInCredential is one recovery-code sign-in a user can still make.
type signInCredential struct{ user, password, code string }

// newSignInRequest is a sign-in of a new device: fresh WireGuard and TLS keys.
func newSignInRequest(c signInCredential, host string) (*controlproto.LoginRequest, error) {
	priv, err := wgkey.NewPrivate()
	if err != nil {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return nil, err
	}
	return &controlproto.LoginRequest{Username: c.user, Password: c.password, RecoveryCode: c.code, DeviceEnroll: controlproto.DeviceEnroll{
		Hostname: host, PublicKey: priv.Public(), CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	}}, nil
}

// TestControllerCrashSignIns kills the controller at random moments of
// bursts of sign-ins (a new device each, with a recovery code) and of an
// admin ending sessions. After each restart: every device has exactly one
// enroll.device record and every record a device; every session exactly
// one session.start, every ended one exactly one session.end, and no
// record names a session that is not so; every sign-in that reported
// success has its device.
func TestControllerCrashSignIns(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	dir := t.TempDir()
	kills := crashKills(t)
	c := startCrashController(t, dir)
	logCheck := &auditLogCheck{dir: dir}
	creds := make(chan signInCredential, 1000)
	for i := range max(4, kills/2) {
		name, pw := fmt.Sprintf("signer%d", i), fmt.Sprintf("crash-sign-in-password-%d", i)
		out, err := c.api.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: name, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range out.RecoveryCodes {
			creds <- signInCredential{name, pw, code}
		}
	}
	var (
		mu                       sync.Mutex
		ackDevices               []string
		devAudit, startAudit     auditCounter
		endAudit                 auditCounter
		totalCalls, signIns, end int
	)
	logCheck.save(t, c)
	for k := range kills {
		calls := crashBurst(t, c, 3, 2*time.Second, func(w, n int) []*crashCall {
			tag := fmt.Sprintf("s-%d-%d-%d", k, w, n)
			if w == 2 {
				mu.Lock()
				var dev string
				if len(ackDevices) > 0 {
					dev = ackDevices[rand.IntN(len(ackDevices))]
				}
				mu.Unlock()
				if dev == "" {
					time.Sleep(20 * time.Millisecond)
					return nil
				}
				return []*crashCall{{key: "e-" + tag, what: "end sessions of " + dev, do: func(ctx context.Context, api *adminapi.Client) error {
					_, err := api.EndSessions(ctx, adminapi.EndSessionsRequest{DeviceID: dev, Comment: "crash test"})
					return err
				}}}
			}
			var cred signInCredential
			select {
			case cred = <-creds:
			default:
				time.Sleep(20 * time.Millisecond)
				return nil
			}
			req, err := newSignInRequest(cred, tag)
			if err != nil {
				t.Error(err)
				return nil
			}
			return []*crashCall{{key: "l-" + tag, what: "sign in " + tag, do: func(ctx context.Context, _ *adminapi.Client) error {
				agent, err := adminapi.New(c.url, "", c.caPEM)
				if err != nil {
					return err
				}
				defer agent.Close()
				out, err := agent.Login(ctx, req)
				if err == nil {
					mu.Lock()
					ackDevices = append(ackDevices, out.ID)
					mu.Unlock()
				}
				return err
			}}}
		})
		for _, call := range calls {
			totalCalls++
			if strings.HasPrefix(call.what, "sign in") {
				signIns++
				call.lost = false // a sign-in is not retried: the device would sign in again
			} else {
				end++
			}
		}
		c = startCrashController(t, dir)
		logCheck.verify(t, c, k+1)
		retryLost(t, c, calls)

		devs, err := c.api.ListDevices(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		haveDev := map[string]bool{}
		for _, d := range devs {
			haveDev[d.ID] = true
		}
		devAudit.read(t, c.api, "enroll.device", func(e adminapi.AuditEvent) string { return e.Subject })
		oneRecordEach(t, k+1, "enroll.device", haveDev, devAudit.n)
		mu.Lock()
		for _, id := range ackDevices {
			if !haveDev[id] {
				t.Fatalf("kill %d: sign-in of device %s reported success but the device is not stored", k+1, id)
			}
		}
		mu.Unlock()

		sess, err := c.api.ListSessions(t.Context(), adminapi.SessionQuery{All: true})
		if err != nil {
			t.Fatal(err)
		}
		started, ended := map[string]bool{}, map[string]bool{}
		for _, s := range sess {
			started[s.ID] = true
			if !s.Active {
				ended[s.ID] = true
			}
		}
		startAudit.read(t, c.api, "session.start", func(e adminapi.AuditEvent) string { return e.Subject })
		endAudit.read(t, c.api, "session.end", func(e adminapi.AuditEvent) string { return e.Subject })
		oneRecordEach(t, k+1, "session.start", started, startAudit.n)
		oneRecordEach(t, k+1, "session.end (of an ended session)", ended, endAudit.n)
	}
	t.Logf("%d kills: %d calls (%d sign-ins, %d session ends), %d devices acknowledged", kills, totalCalls, signIns, end, len(ackDevices))
}
