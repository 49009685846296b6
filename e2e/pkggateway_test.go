package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The packaged gateway unit (deploy/systemd/cordon-gateway.service) runs
// cordon-gateway in tun mode as the user cordon with only CAP_NET_ADMIN
// and CAP_NET_BIND_SERVICE (ambient), NoNewPrivileges, and
// /run/wireguard as its own RuntimeDirectory. No systemd runs here, so
// these tests recreate that process the way systemd would start it:
//
//	ip netns exec <gw ns>                  the gateway's network namespace
//	  unshare -m                           a private mount namespace ...
//	    mount tmpfs /run/wireguard         ... where /run/wireguard belongs to the user (RuntimeDirectory=)
//	    setpriv --reuid --regid            an unprivileged user (User=, Group=)
//	      --bounding-set --inh-caps        only these capabilities (CapabilityBoundingSet=)
//	      --ambient-caps                   raised in the process (AmbientCapabilities=)
//	      --no-new-privs                   (NoNewPrivileges=yes)
//	        cordon-gateway --mode tun --manage-forwarding ...
//
// and check it does everything tun mode does: TUN device, routes, the
// nftables host firewall, the IPv4 forwarding sysctl (on at start, back
// off on a clean stop), DNS on port 53, a clinician reaching an app
// through it and another not.

// unitUID is the uid the gateway runs as here (no name needed: setpriv
// takes numbers; the package's sysusers.d makes a named system user).
const unitUID = 64321

// asUnit is the command prefix that runs argv as the unit would, with caps
// (e.g. "net_admin,net_bind_service").
func asUnit(caps string) []string {
	var list []string
	for c := range strings.SplitSeq(caps, ",") {
		if c != "" {
			list = append(list, "+"+c)
		}
	}
	set := strings.Join(append([]string{"-all"}, list...), ",")
	id := strconv.Itoa(unitUID)
	script := `mkdir -p /run/wireguard && mount -t tmpfs -o mode=0700,uid=` + id + `,gid=` + id + ` tmpfs /run/wireguard && exec "$@"`
	return []string{"unshare", "-m", "sh", "-c", script, "sh",
		"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups",
		"--bounding-set=" + set, "--inh-caps=" + set, "--ambient-caps=" + set, "--no-new-privs"}
}

// withGatewayAs runs the world's gateway as the packaged unit does, with
// the given capabilities: it hands the unprivileged user its state
// directory and token, lets it read the CA, and turns IPv4 forwarding off
// so that --manage-forwarding has to turn it on.
func withGatewayAs(caps string) worldOpt {
	return func(w *world) {
		w.gwWrap = asUnit(caps)
		w.gwArgs = []string{"--manage-forwarding"}
		w.gwPrep = func(w *world) {
			t := w.t
			state := filepath.Join(w.dir, "gateway")
			for _, step := range []error{
				os.Chmod(w.dir, 0o711), // traverse only
				os.Chmod(w.ctlDataDir, 0o711),
				os.Chmod(w.caFile(), 0o644), // public
				os.Mkdir(state, 0o700),
				os.Chown(state, unitUID, unitUID),
				os.Chown(filepath.Join(w.dir, "gw-token"), unitUID, unitUID),
			} {
				if step != nil {
					t.Fatal(step)
				}
			}
			mustRun(t, "ip", "netns", "exec", w.gw.name, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		}
	}
}

// procStatus returns the Uid and CapEff lines of pid's status.
func procStatus(t *testing.T, pid int) (uid, capEff string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "Uid":
			uid = strings.Join(strings.Fields(v), " ")
		case "CapEff":
			capEff = strings.TrimSpace(v)
		}
	}
	return uid, capEff
}

func ipForward(t *testing.T, ns netNS) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, "ip", "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv4/ip_forward"))
}

// TestGatewayUnitRunsUnprivileged: tun mode works as a non-root user with
// CAP_NET_ADMIN and CAP_NET_BIND_SERVICE and nothing else, as the
// packaged unit runs it; without CAP_NET_BIND_SERVICE it refuses to start
// and says why (so the unit needs both, and no more).
func TestGatewayUnitRunsUnprivileged(t *testing.T) {
	if _, err := os.Stat("/usr/bin/setpriv"); err != nil {
		t.Fatalf("setpriv (Debian package util-linux) is needed: %v", err)
	}
	w := newWorld(t, withGatewayAs("net_admin,net_bind_service"))
	ehr := w.svcs["ehr"]

	uid, capEff := procStatus(t, w.gateway.cmd.Process.Pid)
	want := strconv.Itoa(unitUID)
	if uid != strings.Repeat(want+" ", 3)+want {
		t.Errorf("gateway runs with uids %q, want %s everywhere", uid, want)
	}
	// CAP_NET_BIND_SERVICE is bit 10, CAP_NET_ADMIN bit 12.
	if capEff != "0000000000001400" {
		t.Errorf("gateway's effective capabilities %s, want 0000000000001400 (CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only)", capEff)
	}

	// Everything tun mode does worked as that user.
	w.waitReach(w.nurse, ehr, 20*time.Second)
	w.unreachable(w.clerk, ehr)
	if v := ipForward(t, w.gw); v != "1" {
		t.Errorf("net.ipv4.ip_forward = %s with --manage-forwarding, want 1", v)
	}
	if out := mustRun(t, "ip", "netns", "exec", w.gw.name, "nft", "list", "table", "inet", "cordon"); !strings.Contains(out, "chain forward") {
		t.Errorf("host firewall table inet cordon:\n%s", out)
	}
	if status, _ := dig(t, w.cl1, w.gatewayOverlay(), "ehr.hosp.internal", "A"); status != "NOERROR" {
		t.Errorf("the gateway's DNS on port 53: %s for ehr", status)
	}

	// A clean stop turns forwarding back off, as that user too.
	if !w.gateway.terminate(stopGrace) {
		t.Fatalf("the gateway did not stop on SIGTERM\n%s", w.gateway.logs())
	}
	if v := ipForward(t, w.gw); v != "0" {
		t.Errorf("net.ipv4.ip_forward = %s after a clean stop, want 0 (its value before)\n%s", v, w.gateway.logs())
	}

	// Without CAP_NET_BIND_SERVICE it cannot serve DNS on port 53 and
	// stops at start with a message that names the capability.
	w.gwWrap = asUnit("net_admin")
	p := w.runGateway("gateway-no-bind")
	waitFor(t, 20*time.Second, "the gateway without CAP_NET_BIND_SERVICE to refuse to start", func() error {
		if p.exited() == "" {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if logs := p.logs(); !strings.Contains(logs, "CAP_NET_BIND_SERVICE") {
		t.Errorf("the gateway without CAP_NET_BIND_SERVICE did not say what it lacks:\n%s", logs)
	}
}
