package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries the suite builds once per run, from the repository root.
var binaryPkgs = map[string]string{
	"cordon-controller": "./controller/cmd/cordon-controller",
	"cordon-gateway":    "./gateway/cmd/cordon-gateway",
	"cordon":            "./client/cmd/cordon",
	"cordonctl":         "./cordonctl/cmd/cordonctl",
	"cordon-demo":       "./e2e/cmd/cordon-demo",
	"cordon-coreshell":  "./e2e/cmd/cordon-coreshell",
}

var (
	// skipReason is set when the machine cannot run the suite (not root,
	// no iproute2); every test then skips with it.
	skipReason string
	// setupErr is set when the suite should run but cannot (build failed,
	// no TUN): every test fails with it.
	setupErr error
	binDir   string
)

// nsPrefix starts every namespace this suite creates; the pid that follows
// lets a later run recognise (and remove) what a crashed run left behind.
const nsPrefix = "ce2e"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("CORDON_E2E") == "" {
		// go test ./... as root would otherwise start the whole suite:
		// minutes of network namespaces, clashing with any other run.
		fmt.Println("e2e: NOT RUN: the whole-system tests run with make e2e (or CORDON_E2E=1 go test ./e2e/)")
		return 0
	}
	switch {
	case os.Geteuid() != 0:
		skipReason = "not running as root (needs network namespaces, veth and TUN)"
	case !haveTool("ip"):
		skipReason = "iproute2 'ip' not found in PATH"
	}
	if skipReason == "" {
		setupErr = prepare()
	} else {
		// The userspace demo test needs no root: build for it anyway.
		setupErr = build()
	}
	if binDir != "" {
		defer os.RemoveAll(binDir)
	}
	return m.Run()
}

func haveTool(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

func prepare() error {
	removeLeftovers()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("e2e: /dev/net/tun is missing (modprobe tun): %w", err)
	}
	if !haveTool("wg") {
		return errors.New("e2e: 'wg' not found: apt-get install -y wireguard-tools")
	}
	return build()
}

// build compiles every binary the suite runs into a temporary directory.
func build() error {
	dir, err := os.MkdirTemp("", "cordon-e2e-bin-")
	if err != nil {
		return err
	}
	binDir = dir
	root, err := repoRoot()
	if err != nil {
		return err
	}
	start := time.Now()
	args := []string{"build", "-o", binDir + "/"}
	for _, name := range []string{"cordon-controller", "cordon-gateway", "cordon", "cordonctl", "cordon-demo", "cordon-coreshell"} {
		args = append(args, binaryPkgs[name])
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: built binaries in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// repoRoot is the directory holding go.mod (the test runs in e2e/).
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("e2e: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("e2e: not inside the cordon module")
	}
	return filepath.Dir(gomod), nil
}

// leftoverSocket matches the UAPI socket of an interface this suite named
// (see ifaceName) and captures the test process's pid.
var leftoverSocket = regexp.MustCompile(`^c([0-9]+)[gnk][0-9]+\.sock$`)

// removeLeftovers deletes namespaces (and kills their processes) that a
// crashed earlier run of this suite left behind. Only namespaces whose
// creating test process is gone are touched: a concurrent run keeps its own.
func removeLeftovers() {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "x")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if processAlive(pid) {
			continue // that run is still alive
		}
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(f); err == nil {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
		fmt.Fprintf(os.Stderr, "e2e: removed leftover namespace %s\n", name)
	}
	socks, _ := os.ReadDir("/var/run/wireguard")
	for _, e := range socks {
		m := leftoverSocket.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, err := strconv.Atoi(m[1]); err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		os.Remove(filepath.Join("/var/run/wireguard", e.Name()))
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// requireE2E skips (not root, no iproute2) or fails (as root, when the
// suite could not be prepared) before a test touches the system.
func requireE2E(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("e2e: needs root and iproute2: " + skipReason + " — SKIPPING THE WHOLE-SYSTEM SUITE")
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

func bin(name string) string { return filepath.Join(binDir, name) }

// waitFor polls cond until it returns nil or timeout passes, and fails the
// test with the last error. It returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	d, err := poll(timeout, 50*time.Millisecond, cond)
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
	return d
}

// poll calls cond every interval until it returns nil or timeout passes.
func poll(timeout, interval time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), err
		}
		<-tick.C
	}
}

// run runs a short command and returns stdout, stderr and the exit code
// (-1 if it did not run).
func run(ctx context.Context, stdin string, env []string, name string, args ...string) (string, string, int) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			code = -1
			errb.WriteString(err.Error())
		}
	}
	return out.String(), errb.String(), code
}

// mustRun runs a command and fails the test if it does not exit 0.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errOut, code := run(ctx, "", nil, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// proc is a long-running binary inside a namespace.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when it exited
	err     error         // exit status, valid after done
	stuck   bool          // did not exit on SIGTERM within 5s
}

// exited says whether (and how) the process ended; "" while it runs.
func (p *proc) exited() string {
	select {
	case <-p.done:
		return fmt.Sprintf("%s exited: %v", p.name, p.err)
	default:
		return ""
	}
}

// logs returns the process log (stdout and stderr).
func (p *proc) logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// startProc starts name in ns, logging to dir/name.log. It is stopped (TERM,
// then KILL) in t.Cleanup; Pdeathsig kills it if the test binary dies.
func startProc(t *testing.T, ns netNS, dir, name string, argv ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stopGrace is how long a product binary gets to exit after SIGTERM.
const stopGrace = 5 * time.Second

// terminate sends SIGTERM and waits up to timeout for the process to exit.
// It reports whether it did.
func (p *proc) terminate(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop asks the process to exit and kills it if it does not within
// stopGrace, after asking it for a goroutine dump.
func (p *proc) stop() {
	if p.terminate(stopGrace) {
		return
	}
	// Hung: a Go binary prints its goroutines on SIGQUIT (into its log).
	p.stuck = true
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines cut)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// logDumper prints every registered process log when the test failed.
type logDumper struct {
	mu    sync.Mutex
	procs []*proc
}

func (d *logDumper) add(p *proc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.procs = append(d.procs, p)
}

func (d *logDumper) all() []*proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.procs)
}

func (d *logDumper) dump(t *testing.T) {
	if !t.Failed() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.procs {
		t.Logf("==== log of %s (%s) ====\n%s", p.name, p.exitedOrRunning(), summarizeLog(p.logs()))
	}
}

// summarizeLog keeps the end of a log and, from a SIGQUIT goroutine dump,
// only the goroutines running Cordon code.
func summarizeLog(s string) string {
	logPart, dump, found := strings.Cut(s, "SIGQUIT: quit")
	out := tail(logPart, 150)
	if !found {
		return out
	}
	var b strings.Builder
	b.WriteString(out + "\n---- goroutines in Cordon code at SIGQUIT ----\n")
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "cordonhq/cordon") {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

func (p *proc) exitedOrRunning() string {
	s := p.exited()
	if s == "" {
		return "was running"
	}
	if p.stuck {
		s += "; it did NOT exit within 5s of SIGTERM, the goroutine dump is at the end"
	}
	return s
}
