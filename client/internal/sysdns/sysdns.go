// Package sysdns points a Linux system's resolver at the client's DNS stub
// for the internal zones while the tunnel is up (tun mode), and undoes it.
//
// With systemd-resolved running (and /etc/resolv.conf going through it),
// the stub becomes the per-link DNS server of the Cordon interface and the
// internal zones its routing-only domains ("~hosp.internal"), set over
// D-Bus: resolved sends only those names to the stub, everything else where
// it always did, and it forgets the link's settings by itself when the
// interface disappears, so a crash leaves nothing behind.
//
// Otherwise /etc/resolv.conf is managed: the original is saved to the state
// directory (synced to disk before anything changes), a file naming only the
// stub replaces it (the stub forwards non-internal names to the original
// nameservers), and the original comes back on Close. If the client crashed,
// [Recover] at the next start puts it back. A resolv.conf someone else
// rewrote in the meantime is left alone.
package sysdns

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/godbus/dbus/v5"
)

// Modes.
const (
	ModeAuto       = "auto"        // resolved if it runs, else resolv-conf
	ModeResolved   = "resolved"    // systemd-resolved over D-Bus
	ModeResolvConf = "resolv-conf" // manage /etc/resolv.conf
	ModeNone       = "none"        // serve the stub, change nothing
)

// DefaultResolvConf is the file resolv-conf mode manages.
const DefaultResolvConf = "/etc/resolv.conf"

// backupName is the saved original resolv.conf in the state directory.
const backupName = "resolv.conf.cordon-backup"

// marker starts every resolv.conf Cordon writes.
const marker = "# Written by cordon (Cordon zero-trust client) while its tunnel is up."

// Config configures Apply.
type Config struct {
	Mode       string
	Interface  string     // the Cordon tun interface (resolved mode)
	Stub       netip.Addr // where the stub listens (port 53)
	StateDir   string     // holds the resolv.conf backup
	ResolvConf string     // default DefaultResolvConf
	Logger     *slog.Logger
}

// Manager holds the system's DNS configuration while the tunnel is up.
type Manager interface {
	// SetZones routes these zones (lower case, no trailing dot needed) to
	// the stub. Calling it again with the same zones changes nothing.
	SetZones(zones []string) error
	// Upstream are the resolvers the stub should send other names to.
	Upstream() []netip.AddrPort
	// Close undoes every change. It is idempotent.
	Close() error
}

// New picks the mode and prepares it; nothing changes until SetZones.
func New(cfg Config) (Manager, error) {
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mode := cfg.Mode
	if mode == "" || mode == ModeAuto {
		mode = ModeResolvConf
		if resolvedInUse(cfg.ResolvConf) {
			mode = ModeResolved
		}
	}
	switch mode {
	case ModeNone:
		return &none{up: readNameservers(cfg.ResolvConf, cfg.Stub)}, nil
	case ModeResolved:
		return newResolved(cfg)
	case ModeResolvConf:
		return &resolvConf{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("unknown --dns mode %q: use auto, resolved, resolv-conf or none", cfg.Mode)
}

type none struct{ up []netip.AddrPort }

func (n *none) SetZones([]string) error    { return nil }
func (n *none) Upstream() []netip.AddrPort { return n.up }
func (n *none) Close() error               { return nil }

// resolvedInUse reports whether systemd-resolved runs and the system
// resolves through it.
func resolvedInUse(resolvConf string) bool {
	if _, err := os.Stat("/run/systemd/resolve"); err != nil {
		return false
	}
	for _, ns := range readNameservers(resolvConf, netip.Addr{}) {
		if ns.Addr() == netip.MustParseAddr("127.0.0.53") {
			return true
		}
	}
	return false
}

// readNameservers returns the nameserver lines of a resolv.conf as
// host:53, leaving out skip (the stub itself).
func readNameservers(path string, skip netip.Addr) []netip.AddrPort {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseNameservers(b, skip)
}

func parseNameservers(b []byte, skip netip.Addr) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(f[1])
			if err == nil && a != skip {
				out = append(out, netip.AddrPortFrom(a.WithZone(""), 53))
			}
		}
	}
	return out
}

// ---- systemd-resolved over D-Bus ----

type resolved struct {
	cfg     Config
	conn    *dbus.Conn
	ifindex int32
	zones   []string
	closed  bool
}

const (
	resolveDest = "org.freedesktop.resolve1"
	resolvePath = "/org/freedesktop/resolve1"
	resolveMgr  = "org.freedesktop.resolve1.Manager."
)

func newResolved(cfg Config) (*resolved, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("systemd-resolved: interface %s: %w", cfg.Interface, err)
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("systemd-resolved: connect to the system bus (use --dns resolv-conf without resolved): %w", err)
	}
	return &resolved{cfg: cfg, conn: conn, ifindex: int32(ifi.Index)}, nil
}

func (r *resolved) call(method string, args ...any) error {
	obj := r.conn.Object(resolveDest, dbus.ObjectPath(resolvePath))
	if err := obj.Call(resolveMgr+method, 0, args...).Err; err != nil {
		return fmt.Errorf("systemd-resolved %s: %w", method, err)
	}
	return nil
}

func (r *resolved) SetZones(zones []string) error {
	zones = canonical(zones)
	if r.zones != nil && slices.Equal(zones, r.zones) {
		return nil
	}
	type dnsAddr struct {
		Family  int32
		Address []byte
	}
	family := int32(2) // AF_INET
	if r.cfg.Stub.Is6() {
		family = 10 // AF_INET6
	}
	type domain struct {
		Domain      string
		RoutingOnly bool
	}
	doms := make([]domain, len(zones))
	for i, z := range zones {
		doms[i] = domain{Domain: z, RoutingOnly: true}
	}
	for _, step := range []struct {
		method string
		args   []any
	}{
		{"SetLinkDNS", []any{r.ifindex, []dnsAddr{{family, r.cfg.Stub.AsSlice()}}}},
		{"SetLinkDomains", []any{r.ifindex, doms}},
		{"SetLinkDefaultRoute", []any{r.ifindex, false}},
		{"SetLinkLLMNR", []any{r.ifindex, "no"}},
		{"SetLinkMulticastDNS", []any{r.ifindex, "no"}},
	} {
		if err := r.call(step.method, step.args...); err != nil {
			return err
		}
	}
	r.zones = zones
	return nil
}

// Upstream is empty: resolved sends the stub only the internal zones.
func (r *resolved) Upstream() []netip.AddrPort { return nil }

func (r *resolved) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.call("RevertLink", r.ifindex)
	r.conn.Close()
	return err
}

// ---- /etc/resolv.conf ----

type resolvConf struct {
	cfg     Config
	applied bool
	up      []netip.AddrPort
}

// backup is the saved original, as JSON in the state directory.
type backup struct {
	Path    string `json:"path"`
	Symlink string `json:"symlink,omitempty"` // the original was a symlink to this
	Content []byte `json:"content,omitempty"`
	Mode    uint32 `json:"mode"`
}

func (r *resolvConf) SetZones([]string) error {
	if r.applied {
		return nil
	}
	// A backup left by a crashed run is the real original.
	if err := Recover(r.cfg.StateDir, r.cfg.Logger); err != nil {
		return err
	}
	path := r.cfg.ResolvConf
	b := backup{Path: path, Mode: 0o644}
	if target, err := os.Readlink(path); err == nil {
		b.Symlink = target
	}
	content, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if b.Symlink == "" {
		b.Content = content
		if fi, err := os.Stat(path); err == nil {
			b.Mode = uint32(fi.Mode().Perm())
		}
	}
	r.up = parseNameservers(content, r.cfg.Stub)
	js, _ := json.Marshal(b)
	if err := writeFileSync(filepath.Join(r.cfg.StateDir, backupName), js, 0o600); err != nil {
		return fmt.Errorf("save %s before changing it: %w", path, err)
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%s\n# The original is restored by 'cordon down'; a copy is in %s.\n",
		marker, filepath.Join(r.cfg.StateDir, backupName))
	fmt.Fprintf(&out, "nameserver %s\n", r.cfg.Stub)
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			out.WriteString(sc.Text() + "\n")
		}
	}
	if err := replaceFile(path, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	r.applied = true
	r.cfg.Logger.Info("dns: resolv.conf points at the cordon stub", "path", path, "upstream", r.up)
	return nil
}

func (r *resolvConf) Upstream() []netip.AddrPort {
	if r.up == nil {
		return readNameservers(r.cfg.ResolvConf, r.cfg.Stub)
	}
	return r.up
}

func (r *resolvConf) Close() error {
	if !r.applied {
		return nil
	}
	r.applied = false
	return Recover(r.cfg.StateDir, r.cfg.Logger)
}

// Recover restores the resolv.conf saved in stateDir, if any: on Close, and
// at the start of the next run after a crash. A file that no longer carries
// Cordon's marker was rewritten by someone else since and is kept.
func Recover(stateDir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bp := filepath.Join(stateDir, backupName)
	js, err := os.ReadFile(bp)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var b backup
	if err := json.Unmarshal(js, &b); err != nil || b.Path == "" {
		return fmt.Errorf("%s is damaged; restore your resolv.conf by hand and delete it", bp)
	}
	cur, err := os.ReadFile(b.Path)
	if err == nil && !bytes.HasPrefix(cur, []byte(marker)) {
		log.Warn("dns: resolv.conf was changed by something else while the tunnel was up; leaving it", "path", b.Path)
		return os.Remove(bp)
	}
	if b.Symlink != "" {
		tmp := b.Path + ".cordon-tmp"
		os.Remove(tmp)
		if err := os.Symlink(b.Symlink, tmp); err != nil {
			return fmt.Errorf("restore %s: %w", b.Path, err)
		}
		if err := os.Rename(tmp, b.Path); err != nil {
			return fmt.Errorf("restore %s: %w", b.Path, err)
		}
	} else if err := replaceFile(b.Path, b.Content, os.FileMode(b.Mode)); err != nil {
		return fmt.Errorf("restore %s: %w", b.Path, err)
	}
	log.Info("dns: resolv.conf restored", "path", b.Path)
	return os.Remove(bp)
}

func writeFileSync(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaceFile writes path atomically (a temporary file renamed over it),
// replacing a symlink rather than writing through it. A path that is a
// mount point (containers bind-mount resolv.conf) cannot be renamed over;
// it is rewritten in place instead.
func replaceFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".cordon-tmp"
	if err := writeFileSync(tmp, b, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	err := os.Rename(tmp, path)
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) {
			return writeFileSync(path, b, mode)
		}
	}
	return err
}

func canonical(zones []string) []string {
	out := make([]string, 0, len(zones))
	for _, z := range zones {
		out = append(out, strings.TrimSuffix(strings.ToLower(z), "."))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
