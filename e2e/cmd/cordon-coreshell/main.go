// Command cordon-coreshell is a stand-in for a mobile shell, for the e2e
// tests: it links the client core (client/core) as an app would, creates
// the TUN device itself (as Android's VpnService does before it hands the
// app a descriptor) and gives the core only its file descriptor. It takes
// commands as JSON lines from a FIFO (--commands) and writes every event,
// log line and command result as a JSON line on stdout:
//
//	{"cmd":"signin","user":"nurse","password":"...","totp":"123456"}
//	{"cmd":"start"}                 create the TUN device, StartTUN(fd, core.NetworkCoreNoDNS)
//	{"cmd":"start-os","addr":"100.64.0.3"}
//	                                create it, give it addr and bring it up as
//	                                Android's establish() does, StartTUN(fd, core.NetworkOS)
//	{"cmd":"posture","facts":"{...}"}
//	{"cmd":"stop"}
//
//	{"event":"session","payload":{...}}
//	{"result":"signin","error":""}
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cordonhq/cordon/client/core"
)

// out writes JSON lines to stdout, one at a time.
type out struct{ mu sync.Mutex }

func (o *out) line(v any) {
	b, _ := json.Marshal(v)
	o.mu.Lock()
	defer o.mu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func (o *out) Event(kind, payload string) {
	o.line(map[string]any{"event": kind, "payload": json.RawMessage(payload)})
}

func (o *out) Log(level int, line string) { o.line(map[string]any{"level": level, "log": line}) }

type command struct {
	Cmd      string `json:"cmd"`
	User     string `json:"user"`
	Password string `json:"password"`
	TOTP     string `json:"totp"`
	Facts    string `json:"facts"`
	Addr     string `json:"addr"`
}

func main() {
	stateDir := flag.String("state-dir", "", "the app's state directory")
	controller := flag.String("controller", "", "controller URL")
	caFile := flag.String("ca-cert", "", "controller CA (PEM file)")
	iface := flag.String("interface", "cordon0", "TUN device to create")
	commands := flag.String("commands", "", "FIFO to read commands from")
	flag.Parse()
	if err := run(*stateDir, *controller, *caFile, *iface, *commands); err != nil {
		fmt.Fprintln(os.Stderr, "cordon-coreshell:", err)
		os.Exit(1)
	}
}

func run(stateDir, controller, caFile, iface, commands string) error {
	o := &out{}
	c, err := core.New(stateDir, o, o)
	if err != nil {
		return err
	}
	defer c.Close()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	if err := c.Configure(controller, ca); err != nil {
		return err
	}
	// O_RDWR: the FIFO never reads EOF when a writer closes it.
	fifo, err := os.OpenFile(commands, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	cmds := make(chan command)
	go func() { // ends with the process
		sc := bufio.NewScanner(fifo)
		for sc.Scan() {
			var cmd command
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				o.line(map[string]string{"result": "parse", "error": err.Error()})
				continue
			}
			cmds <- cmd
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	for {
		select {
		case <-sig:
			return nil // Close stops the tunnel
		case cmd := <-cmds:
			var err error
			switch cmd.Cmd {
			case "signin":
				err = c.SignIn(cmd.User, cmd.Password, cmd.TOTP)
			case "start":
				var fd int
				if fd, err = openTUN(iface); err == nil {
					err = c.StartTUN(fd, core.NetworkCoreNoDNS) // the namespaces share the host's resolv.conf
				}
			case "start-os":
				var fd int
				if fd, err = openTUN(iface); err == nil {
					if err = osConfigure(iface, cmd.Addr); err != nil {
						unix.Close(fd)
					} else {
						err = c.StartTUN(fd, core.NetworkOS)
					}
				}
			case "posture":
				err = c.SetPosture(cmd.Facts)
			case "stop":
				c.Stop()
			default:
				err = fmt.Errorf("unknown command %q", cmd.Cmd)
			}
			res := map[string]string{"result": cmd.Cmd, "error": ""}
			if err != nil {
				res["error"] = err.Error()
			}
			o.line(res)
		}
	}
}

// osConfigure gives the device its address and brings it up, as a mobile
// OS does before it hands the descriptor over.
func osConfigure(iface, addr string) error {
	for _, args := range [][]string{{"addr", "add", addr + "/32", "dev", iface}, {"link", "set", iface, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	return nil
}

// openTUN creates TUN device name and returns its descriptor, as an OS
// hands one to a VPN app.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("create tun device %s: %w", name, err)
	}
	return fd, nil
}
