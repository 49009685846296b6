// Package wgdev runs a wireguard-go device on a tun.Device and configures it
// declaratively: the agent hands over the whole desired configuration and
// Reconfig applies only the difference (peers added, changed, removed), so a
// map change never drops the sessions of peers it did not touch.
//
// With UAPI enabled (tun mode, root), the device listens on the standard
// socket /var/run/wireguard/NAME.sock and is configured through wgctrl over
// that socket, so `wg show` and any wgctrl tool see and inspect it like a
// kernel interface. Without it (unprivileged userspace mode) the same
// configuration is applied in-process through the device's UAPI text
// protocol.
package wgdev

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cordonhq/cordon/pkg/wgkey"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// Peer is one desired WireGuard peer.
type Peer struct {
	PublicKey wgkey.Public
	// Endpoint is host:port (UDP), a stream endpoint "tls://IP:port"
	// (when the device's Bind is a wgstream.Bind), or empty for peers that
	// dial us.
	Endpoint   string
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
	// Epoch names the peer's current run (the gateway's instance ID, for
	// a client). When a configured peer's Epoch changes from one non-empty
	// value to another, the peer restarted and lost its sessions, so
	// Reconfig drops ours and handshakes again at once (see resetSession)
	// instead of waiting for WireGuard's timers. Empty means unknown: it
	// keeps the last known epoch and never resets.
	Epoch string
}

// Config is the whole desired configuration of a device.
type Config struct {
	PrivateKey wgkey.Private
	ListenPort int
	Peers      []Peer
}

// Options for New.
type Options struct {
	Name   string // interface name; also the UAPI socket name
	UAPI   bool   // expose /var/run/wireguard/Name.sock and configure through wgctrl
	Logger *slog.Logger
	Bind   conn.Bind // nil: the default UDP bind
}

// Device is a running wireguard-go device.
type Device struct {
	name string
	dev  *device.Device
	log  *slog.Logger

	uapi   net.Listener
	wg     sync.WaitGroup
	client *wgctrl.Client // non-nil when configuring over UAPI

	mu        sync.Mutex
	applied   map[wgkey.Public]Peer
	keySet    bool
	port      int
	closeOnce sync.Once

	resets atomic.Uint64 // sessions reset for a restarted peer (tests)
}

// New starts a wireguard-go device on tdev. The device takes ownership of
// tdev: Close closes it.
func New(tdev tun.Device, opts Options) (*Device, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bind := opts.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	d := &Device{name: opts.Name, log: log, applied: map[wgkey.Public]Peer{}}
	d.dev = device.NewDevice(tdev, bind, &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...), "component", "wireguard") },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...), "component", "wireguard") },
	})
	if opts.UAPI {
		f, err := ipc.UAPIOpen(opts.Name)
		if err != nil {
			d.dev.Close()
			// The socket directory is shared by every network namespace of
			// the host, so the name must be unique host-wide.
			return nil, fmt.Errorf("open UAPI socket /var/run/wireguard/%s.sock (another WireGuard device of that name runs on this host? choose another --interface): %w", opts.Name, err)
		}
		ln, err := ipc.UAPIListen(opts.Name, f)
		if err != nil {
			d.dev.Close()
			return nil, fmt.Errorf("listen on UAPI socket for %s: %w", opts.Name, err)
		}
		d.uapi = ln
		d.wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				d.wg.Go(func() { d.dev.IpcHandle(c) })
			}
		})
		if d.client, err = wgctrl.New(); err != nil {
			d.Close()
			return nil, fmt.Errorf("open wgctrl: %w", err)
		}
	}
	return d, nil
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Reconfig applies cfg, changing only what differs from the last applied
// configuration, and resets the session of every peer whose Epoch changed
// (see Peer.Epoch). It reports whether anything changed.
func (d *Device) Reconfig(cfg Config) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := make(map[wgkey.Public]Peer, len(cfg.Peers))
	for _, p := range cfg.Peers {
		if p.PublicKey.IsZero() {
			return false, errors.New("peer with empty public key")
		}
		if _, dup := want[p.PublicKey]; dup {
			return false, fmt.Errorf("peer %s listed twice", p.PublicKey)
		}
		want[p.PublicKey] = p
	}
	wc := wgtypes.Config{}
	changed := false
	var reset []wgkey.Public
	var streams []Peer // peers whose endpoint is a stream: set through the UAPI text
	if !d.keySet {
		k := cfg.PrivateKey.WGTypes()
		wc.PrivateKey = &k
		changed = true
	}
	if cfg.ListenPort != d.port {
		port := cfg.ListenPort
		wc.ListenPort = &port
		changed = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(d.applied), cmpKey) {
		if _, ok := want[k]; !ok {
			wc.Peers = append(wc.Peers, wgtypes.PeerConfig{PublicKey: k.WGTypes(), Remove: true})
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(want), cmpKey) {
		p := want[k]
		old, ok := d.applied[k]
		if ok {
			if p.Epoch == "" {
				p.Epoch = old.Epoch
				want[k] = p
			} else if old.Epoch != "" && old.Epoch != p.Epoch {
				reset = append(reset, k)
			}
			if peerEqual(old, p) {
				continue
			}
		}
		pc, err := peerConfig(p)
		if err != nil {
			return false, err
		}
		if strings.HasPrefix(p.Endpoint, wgstream.Scheme) {
			streams = append(streams, p)
		}
		wc.Peers = append(wc.Peers, pc)
	}
	if len(wc.Peers) > 0 {
		changed = true
	}
	if !changed {
		// A peer's first known epoch is bookkeeping, not device state.
		d.applied = want
		if len(reset) == 0 {
			return false, nil
		}
	} else {
		if err := d.apply(wc); err != nil {
			return false, err
		}
		if err := d.setStreamEndpoints(streams); err != nil {
			return false, err
		}
		d.keySet = true
		d.port = cfg.ListenPort
		d.applied = want
		if err := d.dev.Up(); err != nil {
			return true, fmt.Errorf("bring wireguard device up: %w", err)
		}
	}
	for _, k := range reset {
		d.resetSession(k, want[k].Epoch)
	}
	return true, nil
}

func cmpKey(a, b wgkey.Public) int { return strings.Compare(a.String(), b.String()) }

func peerEqual(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint && a.Keepalive == b.Keepalive &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

func peerConfig(p Peer) (wgtypes.PeerConfig, error) {
	pc := wgtypes.PeerConfig{PublicKey: p.PublicKey.WGTypes(), ReplaceAllowedIPs: true}
	if rest, ok := strings.CutPrefix(p.Endpoint, wgstream.Scheme); ok {
		// wgctrl takes UDP addresses only; setStreamEndpoints sets it.
		if _, err := netip.ParseAddrPort(rest); err != nil {
			return pc, fmt.Errorf("peer %s stream endpoint %q: want tls://IP:port: %w", p.PublicKey, p.Endpoint, err)
		}
	} else if p.Endpoint != "" {
		ua, err := net.ResolveUDPAddr("udp", p.Endpoint)
		if err != nil {
			return pc, fmt.Errorf("peer %s endpoint %q: %w", p.PublicKey, p.Endpoint, err)
		}
		pc.Endpoint = ua
	}
	if p.Keepalive > 0 {
		ka := p.Keepalive
		pc.PersistentKeepaliveInterval = &ka
	}
	for _, pfx := range p.AllowedIPs {
		pfx = pfx.Masked()
		pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{
			IP:   pfx.Addr().AsSlice(),
			Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen()),
		})
	}
	return pc, nil
}

// setStreamEndpoints points peers at their stream endpoints through the
// device's UAPI text, which hands the endpoint to the Bind as written
// (wgctrl would parse it as a UDP address).
func (d *Device) setStreamEndpoints(peers []Peer) error {
	if len(peers) == 0 {
		return nil
	}
	var b strings.Builder
	for _, p := range peers {
		k := p.PublicKey.WGTypes()
		fmt.Fprintf(&b, "public_key=%x\nupdate_only=true\nendpoint=%s\n", k[:], p.Endpoint)
	}
	if err := d.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("configure %s stream endpoints: %w", d.name, err)
	}
	return nil
}

// Rehandshake drops the current session with peer k and handshakes again
// now, over the peer's current endpoint: a client that moved a gateway to
// another path starts there at once instead of waiting for WireGuard's
// retry timer (5 s).
func (d *Device) Rehandshake(k wgkey.Public) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if peer := d.dev.LookupPeer(device.NoisePublicKey(k.WGTypes())); peer != nil {
		handshakeNow(peer)
	}
}

func (d *Device) apply(wc wgtypes.Config) error {
	if d.client != nil {
		if err := d.client.ConfigureDevice(d.name, wc); err != nil {
			return fmt.Errorf("configure %s through wgctrl: %w", d.name, err)
		}
		return nil
	}
	if err := d.dev.IpcSet(UAPIText(wc)); err != nil {
		return fmt.Errorf("configure %s: %w", d.name, err)
	}
	return nil
}

// UAPIText renders a configuration in the WireGuard cross-platform UAPI
// "set" format (https://www.wireguard.com/xplatform/).
func UAPIText(wc wgtypes.Config) string {
	var b strings.Builder
	if wc.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%x\n", wc.PrivateKey[:])
	}
	if wc.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *wc.ListenPort)
	}
	if wc.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range wc.Peers {
		fmt.Fprintf(&b, "public_key=%x\n", p.PublicKey[:])
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint.String())
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, ip := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", ip.String())
		}
	}
	return b.String()
}

// PeerStatus is what the device reports about a peer.
type PeerStatus struct {
	PublicKey     wgkey.Public
	Endpoint      string
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// Status reads the live peer state from the device.
func (d *Device) Status() ([]PeerStatus, error) {
	var dev *wgtypes.Device
	var err error
	if d.client != nil {
		dev, err = d.client.Device(d.name)
	} else {
		dev, err = parseIpcGet(d.dev)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s status: %w", d.name, err)
	}
	out := make([]PeerStatus, 0, len(dev.Peers))
	for _, p := range dev.Peers {
		ps := PeerStatus{
			PublicKey: wgkey.PublicFromWGTypes(p.PublicKey), LastHandshake: p.LastHandshakeTime,
			RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes,
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, n := range p.AllowedIPs {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				ones, _ := n.Mask.Size()
				ps.AllowedIPs = append(ps.AllowedIPs, netip.PrefixFrom(a.Unmap(), ones))
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

// Close stops the device, its UAPI socket and closes the tun device.
func (d *Device) Close() {
	d.closeOnce.Do(func() {
		if d.client != nil {
			d.client.Close()
		}
		if d.uapi != nil {
			d.uapi.Close()
		}
		d.dev.Close()
		d.wg.Wait()
	})
}
