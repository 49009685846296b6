package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// Addresses of the topology (see the package doc).
const (
	ctlAddr     = "192.0.2.1"
	gwWANAddr   = "192.0.2.2"
	cl1Addr     = "192.0.2.11"
	cl2Addr     = "192.0.2.12"
	gwAppAddr   = "10.20.0.1"
	appCIDR     = "10.20.0.0/24"
	segmentName = "clinical"
	groupName   = "clinicians"
	ruleName    = "clinicians-ehr"
	gwName      = "gw1"
)

var controllerURL = "https://" + ctlAddr + ":8443"

var worldSeq atomic.Int64

// world is one complete Cordon deployment in its own namespaces.
type world struct {
	t    *testing.T
	id   string
	seq  int64 // this world's number: ifaceName(role, w.seq) names its interfaces
	dir  string
	logs *logDumper

	wan, ctl, gw, app, cl1, cl2 netNS
	// WireGuard interface names. They must be unique on the host, not
	// just in their namespace: wireguard-go's UAPI socket is
	// /var/run/wireguard/NAME.sock, shared by all namespaces.
	gwIface string

	ctlDataDir string
	controller *proc
	gateway    *proc
	svcs       map[string]*service

	nurse, clerk *client

	// ctlArgs are extra cordon-controller flags (withControllerArgs).
	ctlArgs []string
	// policySrc, if set, is applied as a policy file instead of the
	// one-by-one directory, before the gateway enrolls (withPolicyFile).
	policySrc string
	// gwWrap runs before the gateway's argv (a command that execs it),
	// gwArgs are extra gateway flags, and gwPrep runs once its token file
	// is written, before its first start (withGatewayAs).
	gwWrap, gwArgs []string
	gwPrep         func(*world)
	// upArgs are extra 'cordon up' flags for every client (withClientArgs).
	upArgs []string
	// nurseApart: newWorld neither signs the nurse in nor brings her
	// tunnel up; the test does, its own way (withNurseApart).
	nurseApart bool
}

// worldOpt changes a world before it starts.
type worldOpt func(*world)

// withControllerArgs adds cordon-controller flags.
func withControllerArgs(args ...string) worldOpt {
	return func(w *world) { w.ctlArgs = append(w.ctlArgs, args...) }
}

// withGatewayArgs adds cordon-gateway flags.
func withGatewayArgs(args ...string) worldOpt {
	return func(w *world) { w.gwArgs = append(w.gwArgs, args...) }
}

// withClientArgs adds 'cordon up' flags for every client.
func withClientArgs(args ...string) worldOpt {
	return func(w *world) { w.upArgs = append(w.upArgs, args...) }
}

// withNurseApart leaves the nurse's sign-in and tunnel to the test (a
// shell embedding the client core: coreshell_test.go).
func withNurseApart() worldOpt {
	return func(w *world) { w.nurseApart = true }
}

// withPolicyFile configures the world with a policy file, applied before
// any gateway is enrolled, instead of segment/app/group/rule create. It
// must define segment clinical (gateway gw1), apps ehr and billing, and
// put nurse in a group that reaches ehr.
func withPolicyFile(src string) worldOpt {
	return func(w *world) { w.policySrc = src }
}

// client is one clinician's device: a user logged in with 'cordon login'
// and a running 'cordon up'.
type client struct {
	iface    string
	user     string
	password string
	secret   string // TOTP
	ns       netNS
	stateDir string
	proc     *proc
	lastStep int64 // TOTP step of the last sign-in: a code works once
}

// nextCode returns a TOTP code the controller has not seen from this user:
// the current step's, or the next one's (accepted as clock skew), waiting
// for time to move on if both were used.
func (c *client) nextCode() (string, error) {
	const period = 30
	now := time.Now().Unix() / period
	step := max(now, c.lastStep+1)
	if step > now+1 {
		time.Sleep(time.Until(time.Unix((step-1)*period, 0)) + 100*time.Millisecond)
	}
	c.lastStep = step
	return totp.GenerateCode(c.secret, time.Unix(step*period, 0))
}

// newWorld builds the whole topology, configures policy with cordonctl,
// enrolls the gateway and brings both clients up. Everything is torn down
// in t.Cleanup.
func newWorld(t *testing.T, opts ...worldOpt) *world {
	t.Helper()
	requireE2E(t)
	start := time.Now()
	seq := worldSeq.Add(1)
	id := fmt.Sprintf("%s%dx%d", nsPrefix, os.Getpid(), seq)
	dir, err := os.MkdirTemp("", "ce2e-")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, id: id, seq: seq, dir: dir, logs: &logDumper{}, gwIface: ifaceName("g", seq)}
	for _, o := range opts {
		o(w)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("E2E_KEEP") != "" {
			t.Logf("e2e: state and logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	w.netns()
	// A killed agent leaves its UAPI socket behind.
	t.Cleanup(func() {
		for _, role := range []string{"g", "n", "k"} {
			os.Remove(filepath.Join("/var/run/wireguard", ifaceName(role, seq)+".sock"))
		}
	})
	// Registered after the namespaces: runs before they are deleted, after
	// the processes (registered later) have stopped.
	t.Cleanup(func() { w.logs.dump(t) })

	w.svcs = startServices(t, w.app)
	w.startController("controller")
	if w.policySrc != "" {
		w.applyPolicyFile()
	} else {
		w.configure()
	}
	w.startGateway()
	w.nurse = w.newClient("nurse", w.cl1, ifaceName("n", seq))
	w.clerk = w.newClient("clerk", w.cl2, ifaceName("k", seq))
	for _, c := range []*client{w.nurse, w.clerk} {
		if c == w.nurse && w.nurseApart {
			continue
		}
		w.login(c)
		w.up(c)
	}
	// Stop every process at once (each also stops itself in its own
	// cleanup, which is then a no-op).
	t.Cleanup(w.stopAll)
	// Runs first at teardown, while everything is still up.
	t.Cleanup(w.diagnose)
	t.Logf("world %s up in %v", id, time.Since(start).Round(time.Millisecond))
	return w
}

// netns creates the namespaces and links of the topology.
func (w *world) netns() {
	t := w.t
	t.Helper()
	mk := func(role string) netNS {
		ns := netNS{name: w.id + "-" + role}
		mustRun(t, "ip", "netns", "add", ns.name)
		t.Cleanup(func() {
			// Whatever still runs in it would keep it alive.
			if out, err := sh("ip", "netns", "pids", ns.name); err == nil && strings.TrimSpace(out) != "" {
				t.Errorf("processes still running in %s at teardown: %s", ns.name, out)
				for _, p := range strings.Fields(out) {
					sh("kill", "-9", p)
				}
			}
			if out, err := sh("ip", "netns", "del", ns.name); err != nil {
				t.Errorf("delete netns %s: %v %s", ns.name, err, out)
			}
		})
		ip(t, ns, "link", "set", "lo", "up")
		return ns
	}
	w.wan, w.ctl, w.gw, w.app, w.cl1, w.cl2 = mk("wan"), mk("ctl"), mk("gw"), mk("app"), mk("cl1"), mk("cl2")

	ip(t, w.wan, "link", "add", "br0", "type", "bridge")
	ip(t, w.wan, "link", "set", "br0", "up")
	for _, l := range []struct {
		ns   netNS
		port string
		addr string
	}{{w.ctl, "p-ctl", ctlAddr}, {w.gw, "p-gw", gwWANAddr}, {w.cl1, "p-cl1", cl1Addr}, {w.cl2, "p-cl2", cl2Addr}} {
		ip(t, w.wan, "link", "add", l.port, "type", "veth", "peer", "name", "eth0", "netns", l.ns.name)
		ip(t, w.wan, "link", "set", l.port, "master", "br0", "up")
		ip(t, l.ns, "addr", "add", l.addr+"/24", "dev", "eth0")
		ip(t, l.ns, "link", "set", "eth0", "up")
	}
	ip(t, w.gw, "link", "add", "app0", "type", "veth", "peer", "name", "eth0", "netns", w.app.name)
	ip(t, w.gw, "addr", "add", gwAppAddr+"/24", "dev", "app0")
	ip(t, w.gw, "link", "set", "app0", "up")
	for _, a := range []string{"10.20.0.10", "10.20.0.11", "10.20.0.12"} {
		ip(t, w.app, "addr", "add", a+"/24", "dev", "eth0")
	}
	ip(t, w.app, "link", "set", "eth0", "up")
	// The gateway is the app segment's router (the usual set-up, and the
	// one in which a host that forwards openly exposes every app), and the
	// operator turned forwarding on as docs/operations.md says.
	ip(t, w.app, "route", "add", "default", "via", gwAppAddr)
	mustRun(t, "ip", "netns", "exec", w.gw.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
}

// ifaceName returns a host-unique interface name (at most 15 bytes).
func ifaceName(role string, seq int64) string {
	return fmt.Sprintf("c%d%s%d", os.Getpid()%10000000, role, seq)
}

func ip(t *testing.T, ns netNS, args ...string) {
	t.Helper()
	mustRun(t, "ip", append([]string{"-n", ns.name}, args...)...)
}

// sh runs a short command and returns its combined output.
func sh(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, code := run(ctx, "", nil, name, args...)
	if code != 0 {
		return out + errOut, fmt.Errorf("exit %d", code)
	}
	return out + errOut, nil
}

func (w *world) start(ns netNS, name string, argv ...string) *proc {
	w.t.Helper()
	if lvl := os.Getenv("E2E_LOG_LEVEL"); lvl != "" {
		argv = append(argv, "--log-level", lvl)
	}
	p := startProc(w.t, ns, w.dir, name, argv...)
	w.logs.add(p)
	return p
}

// driftMessage is what the controller logs when its drift check finds
// its map state differing from the store (control.checkDrift).
const driftMessage = "differs from the store"

// startController starts the controller (its process and log named name)
// with w.ctlArgs and waits until it serves.
func (w *world) startController(name string) {
	t := w.t
	t.Helper()
	w.ctlDataDir = filepath.Join(w.dir, "controller")
	// The map engine patches only what each change names into its state;
	// every second it compares that state with the whole store, and any
	// difference (a mutation that did not publish what it changed) fails
	// the test, whatever it was testing.
	w.controller = w.start(w.ctl, name,
		append([]string{bin("cordon-controller"), "--data-dir", w.ctlDataDir, "--listen", "0.0.0.0:8443", "--hosts", ctlAddr, "--drift-check", "1s"}, w.ctlArgs...)...)
	ctl := w.controller
	t.Cleanup(func() {
		for _, line := range strings.Split(ctl.logs(), "\n") {
			if strings.Contains(line, driftMessage) {
				t.Errorf("%s: the map engine's state drifted from the store: %s", name, line)
			}
		}
	})
	tokenFile := w.tokenFile()
	waitFor(t, 20*time.Second, "controller to write its admin token and CA", func() error {
		if s := w.controller.exited(); s != "" {
			t.Fatalf("%s\n%s", s, w.controller.logs())
		}
		for _, f := range []string{tokenFile, w.caFile()} {
			if b, err := os.ReadFile(f); err != nil {
				return err
			} else if len(bytes.TrimSpace(b)) == 0 {
				return fmt.Errorf("%s is empty", f)
			}
		}
		return nil
	})
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin-token mode = %v, want 0600", fi.Mode().Perm())
	}

	caPEM, err := os.ReadFile(w.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", w.caFile())
	}
	// From another namespace, over the WAN, verifying the certificate for
	// the address agents use.
	hc := w.cl1.httpClient(time.Second, 2*time.Second, &tls.Config{RootCAs: pool})
	waitFor(t, 20*time.Second, "controller /healthz", func() error {
		if s := w.controller.exited(); s != "" {
			t.Fatalf("%s\n%s", s, w.controller.logs())
		}
		resp, err := hc.Get(controllerURL + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
}

func (w *world) caFile() string    { return filepath.Join(w.ctlDataDir, "ca.pem") }
func (w *world) tokenFile() string { return filepath.Join(w.ctlDataDir, "admin-token") }

// cordonctl runs cordonctl (from the controller's namespace, over its WAN
// address) and returns stdout, stderr and the exit code.
func (w *world) cordonctl(stdin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Controller and CA from the environment, the token from its file;
	// HOME points away from any saved cordonctl login of the machine.
	env := []string{
		"CORDON_CONTROLLER=" + controllerURL,
		"CORDON_CA_CERT=" + w.caFile(),
		"HOME=" + w.dir,
		"XDG_CONFIG_HOME=",
	}
	argv := append([]string{"netns", "exec", w.ctl.name, bin("cordonctl"), "--token-file", w.tokenFile()}, args...)
	return run(ctx, stdin, env, "ip", argv...)
}

// mustCtl runs cordonctl and fails the test unless it exits 0.
func (w *world) mustCtl(stdin string, args ...string) string {
	w.t.Helper()
	out, errOut, code := w.cordonctl(stdin, args...)
	if code != 0 {
		w.t.Fatalf("cordonctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// ctlJSON runs cordonctl with -o json and decodes its output into v.
func (w *world) ctlJSON(v any, args ...string) {
	w.t.Helper()
	out := w.mustCtl("", append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		w.t.Fatalf("cordonctl %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// configure sets up the segment, apps, users, group and rule.
func (w *world) configure() {
	t := w.t
	t.Helper()
	w.mustCtl("", "segment", "create", segmentName, "--cidr", appCIDR)
	w.mustCtl("", "app", "create", "ehr", "--segment", segmentName, "--dns-name", "ehr.hosp.internal",
		"--address", "10.20.0.10", "--proto", "tcp", "--port", "80", "--class", "phi")
	w.mustCtl("", "app", "create", "billing", "--segment", segmentName, "--dns-name", "billing.hosp.internal",
		"--address", "10.20.0.11", "--proto", "tcp", "--port", "80", "--class", "phi")
	w.mustCtl("", "group", "create", groupName)
	w.mustCtl("", "rule", "create", ruleName, "--group", groupName, "--app", "ehr")
}

// applyPolicyFile applies w.policySrc (withPolicyFile).
func (w *world) applyPolicyFile() {
	w.t.Helper()
	f := filepath.Join(w.dir, "world-policy.yaml")
	if err := os.WriteFile(f, []byte(w.policySrc), 0o600); err != nil {
		w.t.Fatal(err)
	}
	w.mustCtl("", "policy", "apply", f, "--reason", "e2e: the world's policy file")
}

// userSecret creates a user and returns its TOTP secret.
func (w *world) createUser(name, password string) string {
	w.t.Helper()
	out := w.mustCtl(password+"\n", "user", "create", name, "--password-stdin", "-o", "json")
	var u struct {
		Name       string `json:"name"`
		TOTPSecret string `json:"totp_secret"`
	}
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.TOTPSecret == "" {
		w.t.Fatalf("cordonctl user create %s -o json: no totp_secret (%v)\n%s", name, err, out)
	}
	return u.TOTPSecret
}

func (w *world) startGateway() {
	t := w.t
	t.Helper()
	tok := strings.TrimSpace(w.mustCtl("", "gateway", "token", "create", "--segment", segmentName, "--name", gwName))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		t.Fatalf("gateway token create: want only the token on stdout, got %q", tok)
	}
	tokFile := filepath.Join(w.dir, "gw-token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w.gwPrep != nil {
		w.gwPrep(w)
	}
	w.gateway = w.runGateway("gateway")
	waitFor(t, 20*time.Second, "gateway "+gwName+" to enroll", func() error {
		if s := w.gateway.exited(); s != "" {
			t.Fatalf("%s\n%s", s, w.gateway.logs())
		}
		gws := w.gateways()
		if !slices.ContainsFunc(gws, func(g gatewayInfo) bool { return g.Name == gwName }) {
			return fmt.Errorf("gateway list: %+v", gws)
		}
		return nil
	})
}

// runGateway starts cordon-gateway (its process and log named name) in the
// gateway's namespace with the world's flags; the token file is read only
// on the first start (enrollment), so it also restarts an enrolled gateway.
func (w *world) runGateway(name string, extra ...string) *proc {
	w.t.Helper()
	argv := []string{bin("cordon-gateway"),
		"--state-dir", filepath.Join(w.dir, "gateway"), "--controller", controllerURL,
		"--ca-cert", w.caFile(), "--token-file", filepath.Join(w.dir, "gw-token"), "--mode", "tun",
		"--interface", w.gwIface, "--listen-port", "51820", "--endpoint", gwWANAddr + ":51820"}
	argv = append(slices.Concat(w.gwWrap, argv, w.gwArgs), extra...)
	return w.start(w.gw, name, argv...)
}

type gatewayInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Segment     string `json:"segment"`
	PublicKey   string `json:"public_key"`
	OverlayAddr string `json:"overlay_addr"`
	Endpoint    string `json:"endpoint"`
	Peers       *int   `json:"peers"`
	Flows       *int   `json:"flows"`
}

func (w *world) gateways() []gatewayInfo {
	var gws []gatewayInfo
	w.ctlJSON(&gws, "gateway", "list")
	return gws
}

type deviceInfo struct {
	ID          string `json:"id"`
	User        string `json:"user"`
	PublicKey   string `json:"public_key"`
	OverlayAddr string `json:"overlay_addr"`
}

func (w *world) devices() []deviceInfo {
	var ds []deviceInfo
	w.ctlJSON(&ds, "device", "list")
	return ds
}

// newClient creates the user (nurse goes into the clinicians group).
func (w *world) newClient(user string, ns netNS, iface string) *client {
	w.t.Helper()
	c := &client{iface: iface, user: user, password: "correct horse " + user, ns: ns, stateDir: filepath.Join(w.dir, user)}
	c.secret = w.createUser(user, c.password)
	if user == "nurse" && w.policySrc == "" { // a policy file names its members
		w.mustCtl("", "group", "add-member", groupName, user)
	}
	return c
}

// cordon runs the client CLI in the client's namespace.
func (c *client) cordon(stdin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", c.ns.name, bin("cordon"), "--state-dir", c.stateDir}, args...)
	return run(ctx, stdin, nil, "ip", argv...)
}

func (w *world) login(c *client) {
	t := w.t
	t.Helper()
	code, err := c.nextCode()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, rc := c.cordon(c.password+"\n", "login", "--controller", controllerURL, "--ca-cert", w.caFile(),
		"--user", c.user, "--password-stdin", "--totp", code)
	if rc != 0 {
		t.Fatalf("cordon login as %s: exit %d\n%s%s", c.user, rc, out, errOut)
	}
}

func (w *world) up(c *client) {
	w.t.Helper()
	w.upAs(c, "cordon-"+c.user)
}

// upAs starts (or restarts) the client's 'cordon up', its process and log
// named name, and waits until it is connected to the controller.
func (w *world) upAs(c *client, name string) {
	w.t.Helper()
	w.upWith(c, name, "--mode", "tun", "--interface", c.iface,
		"--dns", "none") // the namespaces share the host's /etc/resolv.conf: never touch it
}

// upWith starts (or restarts) the client's 'cordon up' with flags args
// (and the world's), its process and log named name, and waits until it
// is connected to the controller.
func (w *world) upWith(c *client, name string, args ...string) {
	t := w.t
	t.Helper()
	c.proc = w.start(c.ns, name, slices.Concat([]string{bin("cordon"), "up", "--state-dir", c.stateDir}, args, w.upArgs)...)
	waitFor(t, 20*time.Second, c.user+"'s tunnel to connect to the controller", func() error {
		if s := c.proc.exited(); s != "" {
			t.Fatalf("%s\n%s", s, c.proc.logs())
		}
		st, err := c.status()
		if err != nil {
			return err
		}
		if !st.ControlConnected {
			return errors.New("control_connected is false")
		}
		return nil
	})
}

// clientStatus is 'cordon status -o json'.
type clientStatus struct {
	User             string `json:"user"`
	DeviceID         string `json:"device_id"`
	OverlayAddr      string `json:"overlay_addr"`
	ControlConnected bool   `json:"control_connected"`
	Session          *struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"session"`
	Gateways []struct {
		ID          string   `json:"id"`
		Endpoint    string   `json:"endpoint"`
		Path        string   `json:"path"`
		TCPEndpoint string   `json:"tcp_endpoint"`
		AllowedIPs  []string `json:"allowed_ips"`
		Apps        []struct {
			Name  string `json:"name"`
			State struct {
				Reason string `json:"reason"` // reach.Reason: ok, gateway-unreachable…
				Detail string `json:"detail"`
				Next   string `json:"next"`
			} `json:"state"`
		} `json:"apps"`
	} `json:"gateways"`
	Segments []struct {
		Name     string   `json:"name"`
		Gateways []string `json:"gateways"` // the device's order, by ID
		Current  string   `json:"current"`
		Draining []string `json:"draining"`
	} `json:"segments"`
}

func (c *client) status() (*clientStatus, error) {
	out, errOut, rc := c.cordon("", "status", "-o", "json")
	if rc != 0 {
		return nil, fmt.Errorf("cordon status: exit %d: %s", rc, strings.TrimSpace(errOut))
	}
	var st clientStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("cordon status -o json: %w\n%s", err, out)
	}
	return &st, nil
}

// get fetches http://addr/ from the client's namespace over a fresh
// connection and returns the body.
func (c *client) get(addr string) (string, error) {
	return c.getTimeout(addr, 2*time.Second)
}

// getTimeout is get with the given dial timeout.
func (c *client) getTimeout(addr string, dialTimeout time.Duration) (string, error) {
	hc := c.ns.httpClient(dialTimeout, dialTimeout+2*time.Second, nil)
	resp, err := hc.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// waitReach polls until the client gets service s's answer through the
// tunnel, and returns how long that took.
func (w *world) waitReach(c *client, s *service, timeout time.Duration) time.Duration {
	w.t.Helper()
	return waitFor(w.t, timeout, c.user+" to reach "+s.name+" at "+s.addr, func() error {
		w.checkAlive()
		body, err := c.get(s.addr)
		if err != nil {
			return err
		}
		if body != s.name {
			return fmt.Errorf("GET %s answered %q, want %q", s.addr, body, s.name)
		}
		return nil
	})
}

// stopAll stops every product process concurrently.
func (w *world) stopAll() {
	var wg sync.WaitGroup
	for _, p := range w.logs.all() {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// checkAlive fails the test if a product process died.
func (w *world) checkAlive() {
	w.t.Helper()
	for _, p := range []*proc{w.controller, w.gateway, w.nurse.proc, w.clerk.proc} {
		if p == nil {
			continue
		}
		if s := p.exited(); s != "" {
			w.t.Fatalf("%s\n%s", s, tail(p.logs(), 50))
		}
	}
}

// unreachable checks that none of svcs answers c: each dial must fail
// (refused, unreachable or a 2 s timeout), and no service may have accepted
// a connection. The dials run in parallel.
func (w *world) unreachable(c *client, svcs ...*service) {
	w.t.Helper()
	before := make([]int64, len(svcs))
	for i, s := range svcs {
		before[i] = s.accepts.Load()
	}
	errs := make([]error, len(svcs))
	done := make(chan int)
	for i, s := range svcs {
		go func() {
			start := time.Now()
			conn, err := c.ns.dialTimeout("tcp", s.addr, 2*time.Second)
			if err == nil {
				conn.Close()
				errs[i] = fmt.Errorf("%s connected to %s (%s) in %v", c.user, s.name, s.addr, time.Since(start).Round(time.Millisecond))
			} else {
				w.t.Logf("%s → %s (%s): blocked after %v: %v", c.user, s.name, s.addr, time.Since(start).Round(time.Millisecond), err)
			}
			done <- i
		}()
	}
	for range svcs {
		<-done
	}
	for i, s := range svcs {
		if errs[i] != nil {
			w.t.Errorf("LEAK: %v", errs[i])
		}
		if n := s.accepts.Load(); n != before[i] {
			w.t.Errorf("LEAK: %s (%s) accepted %d connection(s) while %s probed it", s.name, s.addr, n-before[i], c.user)
		}
	}
}

// diagnose logs the data plane's view when a test failed: WireGuard, nft
// and routes in the gateway and client namespaces.
func (w *world) diagnose() {
	if !w.t.Failed() {
		return
	}
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "netns", "exec", w.gw.name, "wg", "show", w.gwIface},
		{"ip", "netns", "exec", w.gw.name, "nft", "list", "ruleset"},
		{"ip", "-n", w.gw.name, "route"},
		{"ip", "-n", w.gw.name, "addr"},
		{"ip", "netns", "exec", w.cl1.name, "wg", "show", w.nurse.iface},
		{"ip", "-n", w.cl1.name, "route"},
		{"ip", "-n", w.cl1.name, "route", "show", "table", "7380"},
		{"ip", "-n", w.cl1.name, "rule"},
		{"ip", "netns", "exec", w.cl2.name, "wg", "show", w.clerk.iface},
		{"ip", "-n", w.cl2.name, "route"},
	} {
		out, err := sh(c[0], c[1:]...)
		fmt.Fprintf(&b, "$ %s (%v)\n%s\n", strings.Join(c, " "), err, out)
	}
	w.t.Logf("==== data plane at failure ====\n%s", b.String())
}
