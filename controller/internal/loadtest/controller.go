//go:build loadtest

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// controllerProc is a running cordon-controller process.
type controllerProc struct {
	cmd     *exec.Cmd
	pid     int
	addr    string // host:port of the admin API (TCP) and control (UDP)
	logPath string
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
}

// startController starts bin on dataDir listening on a free loopback port,
// and waits until its admin API answers with the bootstrap owner token.
// The session limits are raised so that no seeded session ends during a
// long run (nothing reports app traffic).
func startController(ctx context.Context, bin, dataDir, logLevel string, extra []string) (*controllerProc, *adminapi.Client, error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logPath := filepath.Join(dataDir, "controller.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("create controller log: %w", err)
	}
	args := append([]string{"--data-dir", dataDir, "--listen", addr, "--log-level", logLevel,
		"--session-idle", "12h", "--session-absolute", "24h"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ^C to the harness does not reach it
	// directly; the harness stops it.
	// Pdeathsig: if the harness dies without stopping it, so does it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start controller: %w", err)
	}
	p := &controllerProc{cmd: cmd, pid: cmd.Process.Pid, addr: addr, logPath: logPath, exited: make(chan struct{})}
	go func() { // owned by p: ends when the process exits, which stop ensures
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	client, err := p.waitReady(ctx, dataDir)
	if err != nil {
		p.stop()
		return nil, nil, err
	}
	return p, client, nil
}

func (p *controllerProc) waitReady(ctx context.Context, dataDir string) (*adminapi.Client, error) {
	deadline := time.Now().Add(60 * time.Second)
	caPEM, err := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read controller CA: %w", err)
	}
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("controller exited during start-up (%v); log: %s", p.waitErr, p.tail())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		tok, err := os.ReadFile(filepath.Join(dataDir, server.AdminTokenFile))
		if err != nil {
			lastErr = err
			continue
		}
		c, err := adminapi.New("https://"+p.addr, strings.TrimSpace(string(tok)), caPEM)
		if err != nil {
			return nil, fmt.Errorf("admin client: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.WhoAmI(cctx)
		cancel()
		if err == nil {
			return c, nil
		}
		c.Close()
		lastErr = err
	}
	return nil, fmt.Errorf("controller not ready after 60s: %w; log: %s", lastErr, p.tail())
}

// stop ends the controller: SIGTERM, then SIGKILL after 15 s. Idempotent.
func (p *controllerProc) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return errors.New("controller did not stop within 15s of SIGTERM; killed")
}

// tail returns the last lines of the controller's log, for errors.
func (p *controllerProc) tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// cpuTicks reads utime+stime of pid (clock ticks); pid 0 is this process.
func cpuTicks(pid int) (int64, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name may hold spaces; fields count from after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s: no ')'", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s: %d fields", path, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return ut + st, nil
}

// memory returns VmRSS and VmHWM (peak RSS) of pid in bytes; 0 is self.
func memory(pid int) (rss, peak int64, err error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s %s: %w", path, k, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, sc.Err()
}

// sampler records a process's CPU time every period, so that the CPU used
// between two instants can be read afterwards (per change, up to the last
// frame the change caused rather than up to when quiet was noticed).
type sampler struct {
	pid int

	mu      sync.Mutex
	samples []cpuSample
}

type cpuSample struct {
	at    time.Time
	ticks int64
}

// run samples until ctx ends; its caller owns it (and waits for it).
func (s *sampler) run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) sample() {
	ticks, err := cpuTicks(s.pid)
	if err != nil {
		return // the process exited; the run notices elsewhere
	}
	s.mu.Lock()
	s.samples = append(s.samples, cpuSample{time.Now(), ticks})
	s.mu.Unlock()
}

// at returns the CPU time at t, interpolated between samples.
func (s *sampler) at(t time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return 0
	}
	i, _ := slices.BinarySearchFunc(s.samples, t, func(c cpuSample, t time.Time) int { return c.at.Compare(t) })
	if i == 0 {
		return ticksDur(float64(s.samples[0].ticks))
	}
	if i == len(s.samples) {
		return ticksDur(float64(s.samples[i-1].ticks))
	}
	a, b := s.samples[i-1], s.samples[i]
	frac := float64(t.Sub(a.at)) / float64(b.at.Sub(a.at))
	return ticksDur(float64(a.ticks) + frac*float64(b.ticks-a.ticks))
}

// between is the CPU time used from a to b.
func (s *sampler) between(a, b time.Time) time.Duration { return s.at(b) - s.at(a) }

func ticksDur(t float64) time.Duration { return time.Duration(t * float64(time.Second) / clockTicks) }

// udpDrops returns the host's count of UDP datagrams dropped because a
// socket's receive buffer was full (RcvbufErrors in /proc/net/snmp), or
// -1 if unknown. Host-wide: other work on the host counts too.
func udpDrops() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Udp: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil {
			names = f
			continue
		}
		i := slices.Index(names, "RcvbufErrors")
		if i < 0 || i >= len(f) {
			return -1
		}
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}

// freePort finds a loopback port free for both TCP and UDP.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: none free for both TCP and UDP after 20 tries")
}
