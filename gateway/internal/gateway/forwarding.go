package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ipForwardPath is the IPv4 forwarding sysctl (a variable for tests).
var ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// forwardMarker, in the state directory, remembers the value forwarding
// had before this gateway set it, so that a restart after a crash still
// restores the operator's value on its clean exit.
const forwardMarker = "ip_forward.before-cordon"

// errForwardingOff says what tun mode needs from the operator.
var errForwardingOff = errors.New("tun mode forwards the tunnel's flows to the app subnet, and IPv4 forwarding is off on this host: " +
	"either set it yourself (sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/90-cordon-gateway.conf) " +
	"or start the gateway with --manage-forwarding to let it turn forwarding on and back off when it stops. " +
	"Either way the gateway's nftables table (inet cordon) forwards only what its flow authorizer passed")

// prepareForwarding checks that IPv4 forwarding is on, or with manage
// turns it on. It returns what undoes its change on a clean exit (a no-op
// when it changed nothing).
func prepareForwarding(stateDir string, manage bool, log *slog.Logger) (restore func(), err error) {
	cur, err := readSysctl(ipForwardPath)
	if err != nil {
		return nil, err
	}
	marker := filepath.Join(stateDir, forwardMarker)
	before, err := os.ReadFile(marker)
	switch {
	case err == nil:
		// An earlier run set it and did not get to restore it.
	case errors.Is(err, fs.ErrNotExist):
		before = nil
	default:
		return nil, fmt.Errorf("read %s: %w", marker, err)
	}
	if !manage {
		if len(before) > 0 {
			log.Warn("an earlier run with --manage-forwarding turned IPv4 forwarding on and did not turn it back off; it is now the operator's setting", "was", strings.TrimSpace(string(before)), "marker", marker)
			os.Remove(marker)
		}
		if cur != "1" {
			return nil, errForwardingOff
		}
		return func() {}, nil
	}
	if cur != "1" {
		if len(before) == 0 {
			if err := os.WriteFile(marker, []byte(cur+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("remember the forwarding setting in %s: %w", marker, err)
			}
			before = []byte(cur)
		}
		if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
			return nil, fmt.Errorf("turn IPv4 forwarding on (--manage-forwarding needs CAP_NET_ADMIN and a writable /proc/sys): %w", err)
		}
		log.Info("IPv4 forwarding turned on (--manage-forwarding); it is turned back off when the gateway stops", "was", cur)
	}
	if len(before) == 0 {
		return func() {}, nil // the operator had it on: leave it
	}
	was := strings.TrimSpace(string(before))
	return func() {
		if err := os.WriteFile(ipForwardPath, []byte(was+"\n"), 0o644); err != nil {
			log.Error("restore IPv4 forwarding", "to", was, "err", err)
			return
		}
		os.Remove(marker)
		log.Info("IPv4 forwarding restored", "to", was)
	}, nil
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
