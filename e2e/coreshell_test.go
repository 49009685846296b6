package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shell is cordon-coreshell, a stand-in for a mobile app that embeds the
// client core (client/core): it made the TUN device itself and handed the
// core only the descriptor. The test drives it through a FIFO and reads
// its JSON lines (events, logs, command results) from its log.
type shell struct {
	w    *world
	c    *client
	proc *proc
	fifo *os.File
	read int // lines of the log already looked at by next
}

// shellLine is one line cordon-coreshell writes.
type shellLine struct {
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
	Result  string          `json:"result"`
	Error   string          `json:"error"`
	Log     string          `json:"log"`
}

// startShell starts cordon-coreshell for c in c's namespace, configured
// with the world's controller and CA.
func (w *world) startShell(c *client) *shell {
	t := w.t
	t.Helper()
	fifo := filepath.Join(w.dir, c.user+"-commands")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := w.start(c.ns, "coreshell-"+c.user, bin("cordon-coreshell"), "--state-dir", c.stateDir,
		"--controller", controllerURL, "--ca-cert", w.caFile(), "--interface", c.iface, "--commands", fifo)
	c.proc = p // checkAlive watches it
	// O_RDWR: does not wait for the shell to open its end.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &shell{w: w, c: c, proc: p, fifo: f}
}

// lines returns every JSON line the shell wrote so far.
func (s *shell) lines() []shellLine {
	var out []shellLine
	sc := bufio.NewScanner(strings.NewReader(s.proc.logs()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l shellLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// do sends one command and waits for its result.
func (s *shell) do(cmd map[string]string) {
	t := s.w.t
	t.Helper()
	n := len(s.lines())
	b, _ := json.Marshal(cmd)
	if _, err := s.fifo.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	var res shellLine
	waitFor(t, 40*time.Second, "the shell's "+cmd["cmd"]+" to finish", func() error {
		if e := s.proc.exited(); e != "" {
			t.Fatalf("%s\n%s", e, tail(s.proc.logs(), 40))
		}
		for _, l := range s.lines()[n:] {
			if l.Result == cmd["cmd"] {
				res = l
				return nil
			}
		}
		return errors.New("no result yet")
	})
	if res.Error != "" {
		t.Fatalf("shell %s: %s", cmd["cmd"], res.Error)
	}
}

// signIn signs the user in through the core, with a fresh TOTP code.
func (s *shell) signIn() {
	s.w.t.Helper()
	code, err := s.c.nextCode()
	if err != nil {
		s.w.t.Fatal(err)
	}
	s.do(map[string]string{"cmd": "signin", "user": s.c.user, "password": s.c.password, "totp": code})
}

// waitEvent waits for an event of kind, after those seen by earlier
// calls, whose payload match accepts, and returns the payload.
func (s *shell) waitEvent(kind string, timeout time.Duration, match func(json.RawMessage) bool) json.RawMessage {
	t := s.w.t
	t.Helper()
	var got json.RawMessage
	_, err := poll(timeout, 50*time.Millisecond, func() error {
		ls := s.lines()
		for i := s.read; i < len(ls); i++ {
			if ls[i].Event == kind && match(ls[i].Payload) {
				got, s.read = ls[i].Payload, i+1
				return nil
			}
		}
		return errors.New("not yet")
	})
	if err != nil {
		var seen []string
		for _, l := range s.lines()[s.read:] {
			if l.Event != "" && l.Event != "status" {
				seen = append(seen, l.Event+" "+string(l.Payload))
			}
		}
		t.Fatalf("no %s event as expected within %v; events since:\n%s", kind, timeout, strings.Join(seen, "\n"))
	}
	return got
}

// sessionIs matches a session event in state (and, if set, reason).
func sessionIs(state, reason string) func(json.RawMessage) bool {
	return func(p json.RawMessage) bool {
		var s struct{ State, Reason string }
		return json.Unmarshal(p, &s) == nil && s.State == state && (reason == "" || s.Reason == reason)
	}
}

// TestClientCoreFD: a shell that embeds the client core, as a mobile app
// does, creates the TUN device itself and hands the core only its file
// descriptor. Through the core: sign-in (password and TOTP), posture
// facts only the OS knows (reported as self-reported), app access, a
// revocation that cuts the open connection within 1 s (and the shell told
// why), a new sign-in, the idle logoff, and a stop that takes the device
// with it. Then again with the network left to the shell: the core
// changes nothing on the host, the test sets the address and routes from
// the status as a mobile OS would, and the app answers.
func TestClientCoreFD(t *testing.T) {
	t.Parallel()
	const idle = 8 * time.Second
	w := newWorld(t, withControllerArgs("--session-idle", idle.String()), withNurseApart())
	ehr := w.svcs["ehr"]
	shl := w.startShell(w.nurse)

	t.Log("---- sign in, posture, tunnel on the shell's fd ----")
	shl.do(map[string]string{"cmd": "posture", "facts": `{"os":"android","os_version":"15",` +
		`"disk_encryption":{"state":"yes","detail":"file-based encryption"},"screen_lock":{"state":"yes"},` +
		`"integrity":{"state":"yes","detail":"play integrity: device verdict"}}`})
	shl.signIn()
	shl.do(map[string]string{"cmd": "start"})
	waitFor(t, 20*time.Second, "the core's tunnel to connect", func() error {
		st, err := w.nurse.status() // 'cordon status' reads the core's tunnel
		if err != nil {
			return err
		}
		if !st.ControlConnected {
			return errors.New("control_connected is false")
		}
		return nil
	})
	w.waitReach(w.nurse, ehr, 15*time.Second)
	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	overlay := st.OverlayAddr // stable: the OS sets it in the second run
	shl.waitEvent("session", 10*time.Second, sessionIs("active", ""))
	shl.waitEvent("apps", 10*time.Second, func(p json.RawMessage) bool {
		var apps []struct {
			Name      string
			Reachable bool
		}
		json.Unmarshal(p, &apps)
		return len(apps) == 1 && apps[0].Name == "ehr" && apps[0].Reachable
	})
	// The core was given the device, not its name: it is the one the
	// shell created, and 'wg show' sees it (UAPI, as 'cordon up').
	if out, err := sh("ip", "netns", "exec", w.cl1.name, "wg", "show", w.nurse.iface); err != nil || !strings.Contains(out, "peer") {
		t.Errorf("wg show %s in the client's namespace: %v\n%s", w.nurse.iface, err, out)
	}

	t.Log("---- revocation through the core ----")
	w.cutAndRestore(ehr, "cordonctl user disable nurse", func() { w.mustCtl("", "user", "disable", "nurse") }, func() {
		shl.waitEvent("session", 5*time.Second, sessionIs("ended", ""))
		w.mustCtl("", "user", "enable", "nurse")
		w.unreachable(w.nurse, ehr) // enabled, but signed out
		shl.signIn()
	}, time.Second)
	shl.waitEvent("session", 10*time.Second, sessionIs("active", ""))

	t.Log("---- idle logoff ----")
	start := time.Now()
	shl.waitEvent("session", idle+10*time.Second, sessionIs("ended", "idle"))
	t.Logf("the shell was told of the idle logoff %v after the last request (limit %v)", time.Since(start).Round(time.Millisecond), idle)
	w.unreachable(w.nurse, ehr)
	// An ended session's map holds no app: the session event says why.
	shl.waitEvent("apps", 5*time.Second, func(p json.RawMessage) bool { return string(p) == "[]" })
	w.waitAudit("the shell's posture facts, self-reported", func(e auditEvent) bool {
		return e.Type == "posture.report" && e.Details["self_reported"] == "true" && e.Details["os"] == "android" &&
			e.Details["disk_encryption.detail"] == "file-based encryption" && e.Details["integrity"] == "yes"
	})

	t.Log("---- stop ----")
	shl.do(map[string]string{"cmd": "stop"})
	shl.waitEvent("tunnel", 5*time.Second, func(p json.RawMessage) bool {
		var e struct{ State, Error string }
		return json.Unmarshal(p, &e) == nil && e.State == "stopped" && e.Error == ""
	})
	if _, err := w.nurse.status(); err == nil {
		t.Error("'cordon status' still finds a tunnel after the core stopped it")
	}
	// The core owned the descriptor: closing it removed the device.
	if out, err := sh("ip", "-n", w.cl1.name, "link", "show", w.nurse.iface); err == nil {
		t.Errorf("the TUN device outlived the core's stop:\n%s", out)
	}

	t.Log("---- the OS configures the network (as Android's VpnService does) ----")
	shl.signIn()
	shl.do(map[string]string{"cmd": "start-os", "addr": overlay})
	waitFor(t, 20*time.Second, "the core's tunnel to get its map", func() error {
		var err error
		if st, err = w.nurse.status(); err != nil {
			return err
		}
		if len(st.Gateways) == 0 {
			return errors.New("no gateway in the map yet")
		}
		return nil
	})
	// The core set nothing on the host: no route, no table, no rule.
	for _, args := range [][]string{{"route", "show", "table", "all"}, {"rule"}} {
		out, _ := sh("ip", append([]string{"-n", w.cl1.name}, args...)...)
		if strings.Contains(out, "7380") || strings.Contains(out, "10.20.0.") {
			t.Errorf("with the network left to the shell, the core changed it: ip %s:\n%s", strings.Join(args, " "), out)
		}
	}
	for _, g := range st.Gateways {
		for _, p := range g.AllowedIPs {
			ip(t, w.cl1, "route", "replace", p, "dev", w.nurse.iface)
		}
	}
	w.waitReach(w.nurse, ehr, 15*time.Second)
	shl.do(map[string]string{"cmd": "stop"})
	if out, err := sh("ip", "-n", w.cl1.name, "link", "show", w.nurse.iface); err == nil {
		t.Errorf("the TUN device outlived the core's stop:\n%s", out)
	}
	if s := shl.proc.exited(); s != "" {
		t.Fatalf("the shell died: %s", s)
	}
}
