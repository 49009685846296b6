// Package posture collects the device's posture on Linux for the report the
// client sends at login, periodically and on change (pkg/posture holds the
// report type). It reads files, not commands: /etc/os-release, the mount
// table and sysfs for the root filesystem's device-mapper stack, the
// nftables ruleset through netlink, and the screen lock from
// systemd-logind over D-Bus. What it cannot tell it reports as
// unknown, with the reason.
package posture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/cordonhq/cordon/pkg/posture"
)

// FirewallProbe reports the host firewall state.
type FirewallProbe func() posture.Check

// ScreenLockProbe reports the screen lock state.
type ScreenLockProbe func(context.Context) posture.Check

// Collector gathers a report. The zero value is not usable; use New.
type Collector struct {
	root     fs.FS // the filesystem root (os.DirFS("/") in production)
	kernel   func() string
	firewall FirewallProbe
	screen   ScreenLockProbe
	version  string
	now      func() time.Time
}

// New returns a collector of this machine's posture.
func New(clientVersion string) *Collector {
	return &Collector{root: os.DirFS("/"), kernel: unameRelease, firewall: NFTablesFirewall, screen: NewScreenLock().Check, version: clientVersion, now: time.Now}
}

// Collect gathers the report. It never fails: a check it cannot run is
// reported as unknown.
func (c *Collector) Collect(ctx context.Context) posture.Report {
	r := posture.Report{CollectedAt: c.now().UTC(), ClientVersion: c.version, Kernel: c.kernel()}
	r.OS, r.OSVersion, r.OSName = osRelease(c.root)
	r.DiskEncryption = rootEncryption(c.root)
	r.Firewall = c.firewall()
	r.ScreenLock = c.screen(ctx)
	return r
}

func unameRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// osRelease parses os-release(5).
func osRelease(root fs.FS) (id, version, pretty string) {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		f, err := root.Open(p)
		if err != nil {
			continue
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"'`)
			switch k {
			case "ID":
				id = v
			case "VERSION_ID":
				version = v
			case "PRETTY_NAME":
				pretty = v
			}
		}
		return id, version, pretty
	}
	return "", "", ""
}

// rootEncryption finds the block device under "/" in the mount table and
// walks its device-mapper stack (LVM on LUKS, LUKS on RAID…) looking for a
// dm-crypt target.
func rootEncryption(root fs.FS) posture.Check {
	dev, fstype, err := rootDevice(root)
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: err.Error()}
	}
	switch fstype {
	case "overlay", "tmpfs", "ramfs", "squashfs", "9p", "virtiofs", "nfs", "nfs4":
		return posture.Check{State: posture.Unknown, Detail: "root filesystem is " + fstype + " (container or network root)"}
	}
	block := "sys/dev/block/" + dev
	if _, err := fs.Stat(root, block); err != nil {
		return posture.Check{State: posture.Unknown, Detail: "root device " + dev + " not in sysfs"}
	}
	if name, ok := cryptIn(root, block, 0); ok {
		return posture.Check{State: posture.Yes, Detail: "root filesystem on dm-crypt (" + name + ")"}
	}
	return posture.Check{State: posture.No, Detail: "root filesystem (device " + dev + ") is not on dm-crypt"}
}

// rootDevice returns "major:minor" and the filesystem type of "/".
func rootDevice(root fs.FS) (string, string, error) {
	f, err := root.Open("proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	var dev, fstype string
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) || fields[4] != "/" {
			continue
		}
		dev, fstype = fields[2], fields[sep+1] // the last "/" mount wins (it is on top)
	}
	if dev == "" {
		return "", "", errors.New("no root filesystem in the mount table")
	}
	return dev, fstype, nil
}

// cryptIn reports whether the block device at sysfs path p, or one below it
// (its slaves), is a dm-crypt device.
func cryptIn(root fs.FS, p string, depth int) (string, bool) {
	if depth > 8 {
		return "", false
	}
	if uuid, err := fs.ReadFile(root, p+"/dm/uuid"); err == nil && strings.HasPrefix(string(uuid), "CRYPT-") {
		name, _ := fs.ReadFile(root, p+"/dm/name")
		return strings.TrimSpace(string(name)), true
	}
	slaves, err := fs.ReadDir(root, p+"/slaves")
	if err != nil {
		return "", false
	}
	for _, s := range slaves {
		if name, ok := cryptIn(root, path.Join("sys/class/block", s.Name()), depth+1); ok {
			return name, true
		}
	}
	return "", false
}

// NFTablesFirewall reports a firewall as on when an nftables chain hooks
// input with a drop policy or has rules; reading the ruleset needs
// CAP_NET_ADMIN, so an unprivileged client reports unknown.
func NFTablesFirewall() posture.Check {
	c, err := nftables.New()
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: "nftables: " + err.Error()}
	}
	chains, err := c.ListChains()
	if err != nil {
		return posture.Check{State: posture.Unknown, Detail: "cannot read the nftables ruleset (needs CAP_NET_ADMIN)"}
	}
	for _, ch := range chains {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookInput {
			continue
		}
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			return posture.Check{State: posture.Yes, Detail: "input chain " + ch.Table.Name + "/" + ch.Name + " drops by default"}
		}
		if rules, err := c.GetRules(ch.Table, ch); err == nil && len(rules) > 0 {
			return posture.Check{State: posture.Yes, Detail: fmt.Sprintf("input chain %s/%s has %d rules", ch.Table.Name, ch.Name, len(rules))}
		}
	}
	return posture.Check{State: posture.No, Detail: "no nftables input filtering"}
}
