// Command cordon-demo runs the whole system on one machine without root:
// a controller, a gateway in userspace mode in front of two sample HTTP apps
// ("ehr" and "billing") on this host's loopback, and a clinician's client in
// userspace mode. It shows ehr served through the tunnel, billing refused,
// and the audit trail, then stops everything it started. It exits 0 only if
// every step behaved as expected.
//
//	curl ──http proxy──▶ cordon (userspace) ══WireGuard══▶ cordon-gateway (userspace) ──▶ ehr 127.0.0.2
//	                          │                                  │                        billing 127.0.0.3
//	                          └──────── QUIC control ────────── cordon-controller
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/pquerna/otp/totp"
)

var (
	binDir  = flag.String("bin", "bin", "directory holding the Cordon binaries")
	keep    = flag.Bool("keep", false, "keep the demo's temporary directory (logs, state)")
	verbose = flag.Bool("v", false, "show the processes' logs as they run")
)

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	d := &demo{ctx: ctx}
	err := d.run()
	d.stopAll()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		d.dumpLogs()
		if !*keep && d.dir != "" {
			fmt.Fprintf(os.Stderr, "(logs and state kept in %s)\n", d.dir)
		}
		os.Exit(1)
	}
	if !*keep {
		os.RemoveAll(d.dir)
	} else {
		fmt.Printf("State and logs kept in %s\n", d.dir)
	}
	fmt.Println("\nDemo finished: every step behaved as expected.")
}

type demo struct {
	ctx   context.Context
	dir   string
	procs []*proc
	env   []string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
func info(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func (d *demo) run() error {
	var err error
	if d.dir, err = os.MkdirTemp("", "cordon-demo-"); err != nil {
		return err
	}
	for _, b := range []string{"cordon-controller", "cordon-gateway", "cordon", "cordonctl"} {
		if _, err := os.Stat(filepath.Join(*binDir, b)); err != nil {
			return fmt.Errorf("binary %s missing in %s: run 'make build' first", b, *binDir)
		}
	}

	step("Starting two sample apps on this host's loopback")
	ehr, err := startApp("127.0.0.2", "EHR: patient chart for MRN 000123 (demo data)")
	if err != nil {
		return err
	}
	defer ehr.Close()
	ehrAdmin, err := startApp("127.0.0.2", "EHR admin console (not published)")
	if err != nil {
		return err
	}
	defer ehrAdmin.Close()
	billing, err := startApp("127.0.0.3", "Billing: invoices (demo data)")
	if err != nil {
		return err
	}
	defer billing.Close()
	ehrPort, adminPort, billPort := port(ehr), port(ehrAdmin), port(billing)
	info("ehr      http://%s  (admin console on port %d, not published)", ehr.Addr, adminPort)
	info("billing  http://%s", billing.Addr)

	step("Starting the controller")
	ctlPort, err := freePort()
	if err != nil {
		return err
	}
	ctlDir := filepath.Join(d.dir, "controller")
	ctlURL := fmt.Sprintf("https://127.0.0.1:%d", ctlPort)
	if _, err := d.start("controller", "cordon-controller", "--data-dir", ctlDir, "--listen", fmt.Sprintf("127.0.0.1:%d", ctlPort)); err != nil {
		return err
	}
	caFile := filepath.Join(ctlDir, "ca.pem")
	if err := d.waitFor("controller health", 30*time.Second, func() error { return healthz(ctlURL, caFile) }); err != nil {
		return err
	}
	info("controller up at %s; owner token written to %s (0600)", ctlURL, filepath.Join(ctlDir, "admin-token"))
	d.env = append(os.Environ(), "CORDON_CONTROLLER="+ctlURL, "CORDON_CA_CERT="+caFile, "CORDON_TOKEN_FILE=", "HOME="+d.dir, "XDG_CONFIG_HOME="+filepath.Join(d.dir, "config"))
	tok := []string{"--token-file", filepath.Join(ctlDir, "admin-token")}

	step("Admin: a segment, two apps, a user with TOTP, a group and one rule (cordonctl)")
	for _, args := range [][]string{
		{"segment", "create", "hospital-lan", "--cidr", "127.0.0.0/29"},
		{"app", "create", "ehr", "--segment", "hospital-lan", "--dns-name", "ehr.demo.internal", "--address", "127.0.0.2", "--proto", "tcp", "--port", fmt.Sprint(ehrPort), "--class", "phi"},
		{"app", "create", "billing", "--segment", "hospital-lan", "--dns-name", "billing.demo.internal", "--address", "127.0.0.3", "--proto", "tcp", "--port", fmt.Sprint(billPort), "--class", "phi"},
		{"group", "create", "clinicians"},
		{"rule", "create", "clinicians-ehr", "--group", "clinicians", "--app", "ehr"},
	} {
		if _, err := d.ctl(tok, args...); err != nil {
			return err
		}
		info("cordonctl %s", strings.Join(args, " "))
	}
	password := "correct-horse-battery-" + fmt.Sprint(time.Now().UnixNano()%100000)
	out, err := d.ctlStdin(password+"\n", tok, "-o", "json", "user", "create", "nurse", "--password-stdin")
	if err != nil {
		return err
	}
	var created struct {
		TOTPSecret string `json:"totp_secret"`
	}
	if err := json.Unmarshal(out, &created); err != nil || created.TOTPSecret == "" {
		return fmt.Errorf("user create: no TOTP secret in %q", out)
	}
	info("cordonctl user create nurse --password-stdin   (TOTP enrolled)")
	if _, err := d.ctl(tok, "group", "add-member", "clinicians", "nurse"); err != nil {
		return err
	}
	info("cordonctl group add-member clinicians nurse")

	step("Enrolling a gateway with a single-use token (userspace mode, no root)")
	tokOut, err := d.ctl(tok, "gateway", "token", "create", "--segment", "hospital-lan", "--name", "gw-demo")
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(d.dir, "gateway-token")
	if err := os.WriteFile(tokenFile, bytes.TrimSpace(tokOut), 0o600); err != nil {
		return err
	}
	wgPort, err := freeUDPPort()
	if err != nil {
		return err
	}
	if _, err := d.start("gateway", "cordon-gateway", "--state-dir", filepath.Join(d.dir, "gateway"),
		"--controller", ctlURL, "--ca-cert", caFile, "--token-file", tokenFile,
		"--mode", "userspace", "--allow-loopback", "--interface", "cordon-gw-demo",
		"--listen-port", fmt.Sprint(wgPort), "--endpoint", fmt.Sprintf("127.0.0.1:%d", wgPort)); err != nil {
		return err
	}
	if err := d.waitFor("gateway enrollment", 30*time.Second, func() error {
		out, err := d.ctl(tok, "-o", "json", "gateway", "list")
		if err != nil {
			return err
		}
		if !bytes.Contains(out, []byte(fmt.Sprintf("127.0.0.1:%d", wgPort))) {
			return errors.New("gateway not connected yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if _, err := d.ctl(tok, "gateway", "token", "list"); err != nil {
		return err
	}
	info("gateway enrolled and connected (WireGuard on udp/%d)", wgPort)

	step("Clinician signs in (password + TOTP) and brings the tunnel up (userspace mode: local proxies)")
	clientDir := filepath.Join(d.dir, "client")
	code, err := totp.GenerateCode(created.TOTPSecret, time.Now())
	if err != nil {
		return err
	}
	if out, err := d.runStdin(password+"\n", "cordon", "--state-dir", clientDir, "login", "--controller", ctlURL,
		"--ca-cert", caFile, "--user", "nurse", "--password-stdin", "--totp", code); err != nil {
		return err
	} else {
		info("%s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
	}
	socksPort, err := freePort()
	if err != nil {
		return err
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	if _, err := d.start("client", "cordon", "--state-dir", clientDir, "up", "--mode", "userspace",
		"--interface", "cordon-demo", "--socks5", fmt.Sprintf("127.0.0.1:%d", socksPort),
		"--http-proxy", fmt.Sprintf("127.0.0.1:%d", httpPort)); err != nil {
		return err
	}
	if err := d.waitFor("client map", 30*time.Second, func() error {
		out, err := d.runQuiet("cordon", "--state-dir", clientDir, "status", "-o", "json")
		if err != nil {
			return err
		}
		if !bytes.Contains(out, []byte("ehr.demo.internal")) {
			return errors.New("ehr not in the client's map yet")
		}
		return nil
	}); err != nil {
		return err
	}
	out, _ = d.runQuiet("cordon", "--state-dir", clientDir, "status")
	info("%s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))

	proxyURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", httpPort))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}

	step("curl -x http://127.0.0.1:%d http://ehr.demo.internal:%d/   (entitled: served through the tunnel)", httpPort, ehrPort)
	var body string
	if err := d.waitFor("ehr through the tunnel", 20*time.Second, func() error {
		status, b, err := get(hc, fmt.Sprintf("http://ehr.demo.internal:%d/", ehrPort))
		if err != nil {
			return err
		}
		if status != 200 || !strings.Contains(b, "EHR: patient chart") {
			return fmt.Errorf("status %d, body %q", status, b)
		}
		body = b
		return nil
	}); err != nil {
		return err
	}
	info("200 OK: %s", strings.TrimSpace(body))

	step("curl -x ... http://billing.demo.internal:%d/   (not entitled: the name does not exist for this user)", billPort)
	status, b, err := get(hc, fmt.Sprintf("http://billing.demo.internal:%d/", billPort))
	if err == nil && status == 200 {
		return fmt.Errorf("billing was served to a user without a rule for it: %q", b)
	}
	info("refused: %s", describe(status, b, err))

	step("curl -x ... http://127.0.0.3:%d/   (billing by address: no route through the tunnel)", billPort)
	short := &http.Client{Timeout: 4 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	status, b, err = get(short, fmt.Sprintf("http://127.0.0.3:%d/", billPort))
	if err == nil && status == 200 {
		return fmt.Errorf("billing was served by address: %q", b)
	}
	info("refused: %s", describe(status, b, err))

	step("curl -x ... http://ehr.demo.internal:%d/   (same host, unpublished port: denied by the gateway)", adminPort)
	status, b, err = get(short, fmt.Sprintf("http://ehr.demo.internal:%d/", adminPort))
	if err == nil && status == 200 {
		return fmt.Errorf("an unpublished port was served: %q", b)
	}
	info("refused: %s", describe(status, b, err))

	step("cordonctl session list; cordonctl session end --user nurse   (the clinician loses access at once)")
	if out, err := d.ctl(tok, "session", "list"); err != nil {
		return err
	} else {
		fmt.Println(indent(string(out)))
	}
	if _, err := d.ctl(tok, "session", "end", "--user", "nurse", "--comment", "demo: end of shift"); err != nil {
		return err
	}
	if err := d.waitFor("ehr to be refused after the session ended", 10*time.Second, func() error {
		if status, b, err := get(short, fmt.Sprintf("http://ehr.demo.internal:%d/", ehrPort)); err == nil && status == 200 {
			return fmt.Errorf("ehr still served: %q", b)
		}
		return nil
	}); err != nil {
		return err
	}
	info("ehr refused; the tunnel stays up and tells the clinician why (cordon status):")
	out, _ = d.runQuiet("cordon", "--state-dir", clientDir, "status")
	info("%s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
	if !bytes.Contains(out, []byte("administrator ended your session")) {
		return errors.New("'cordon status' does not say the session was ended")
	}

	step("Audit trail (cordonctl audit list)")
	if err := d.waitFor("flow records in the audit trail", 15*time.Second, func() error {
		out, err := d.ctl(tok, "-o", "json", "audit", "list", "--limit", "200")
		if err != nil {
			return err
		}
		for _, typ := range []audit.Type{audit.FlowAllow, audit.FlowDeny, audit.AuthLogin, audit.EnrollGateway, audit.AdminRuleCreate, audit.SessionEnd} {
			if want := strconv.Quote(string(typ)); !bytes.Contains(out, []byte(want)) {
				return fmt.Errorf("no %s record yet", want)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	out, err = d.ctl(tok, "audit", "list", "--limit", "30")
	if err != nil {
		return err
	}
	fmt.Println(indent(string(out)))

	step("Bringing everything down")
	if out, err := d.runQuiet("cordon", "--state-dir", clientDir, "down"); err != nil {
		return fmt.Errorf("cordon down: %v: %s", err, out)
	}
	info("cordon down: tunnel is down")
	return nil
}

func describe(status int, body string, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("HTTP %d %s", status, strings.TrimSpace(body))
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

func get(c *http.Client, u string) (int, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

func startApp(host, text string) (*http.Server, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("start sample app on %s: %w", host, err)
	}
	srv := &http.Server{
		Addr: ln.Addr().String(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, text)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(ln)
	return srv, nil
}

func port(s *http.Server) int {
	_, p, _ := net.SplitHostPort(s.Addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			pc.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free port")
}

func freeUDPPort() (int, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}

func healthz(base, caFile string) error {
	c, err := tlsClient(caFile)
	if err != nil {
		return err
	}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

func (d *demo) waitFor(what string, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return nil
		}
		for _, p := range d.procs {
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited early (see its log below)", what, p.name)
			default:
			}
		}
		select {
		case <-d.ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s waiting for %s: %v", timeout, what, err)
}

func (d *demo) start(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(d.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(*binDir, bin), args...)
	cmd.Env = d.env
	var w io.Writer = f
	if *verbose {
		w = io.MultiWriter(f, prefixWriter(name))
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	d.procs = append(d.procs, p)
	return p, nil
}

func prefixWriter(name string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		s := bufio.NewScanner(pr)
		for s.Scan() {
			fmt.Printf("    [%s] %s\n", name, s.Text())
		}
	}()
	return pw
}

// stopAll stops processes newest first (client, gateway, controller).
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

func (d *demo) dumpLogs() {
	for _, p := range d.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Fprintf(os.Stderr, "\n--- last lines of %s (%s) ---\n%s\n", p.name, p.log, strings.Join(lines, "\n"))
	}
}

func (d *demo) ctl(tok []string, args ...string) ([]byte, error) {
	return d.ctlStdin("", tok, args...)
}

func (d *demo) ctlStdin(stdin string, tok []string, args ...string) ([]byte, error) {
	return d.runStdin(stdin, "cordonctl", append(append([]string{}, tok...), args...)...)
}

func (d *demo) runQuiet(bin string, args ...string) ([]byte, error) {
	return d.runStdin("", bin, args...)
}

func (d *demo) runStdin(stdin, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(*binDir, bin), args...)
	cmd.Env = d.env
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func tlsClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}
