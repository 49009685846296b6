package wgdev

import (
	"encoding/hex"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/device"

	"github.com/cordonhq/cordon/pkg/wgkey"
)

// resetSession makes the device forget its session with a peer that
// restarted and handshake with it again now.
//
// A restarted peer lost its keypairs, so it drops every packet we send on
// the old session without a word. wireguard-go would notice only when its
// timers fire: a fresh handshake 15 s (KeepaliveTimeout + RekeyTimeout)
// after data went unanswered, or at the next persistent keepalive or rekey.
// Instead we expire the current keypairs — what wireguard-go itself does
// when the device's private key changes — and queue a keepalive: with no
// usable keypair, sending it starts a handshake initiation at once, and it
// goes out on the new session, which confirms that session to the
// responder. Packets sent meanwhile are staged and follow the handshake.
// Called with d.mu held, after the device is up.
func (d *Device) resetSession(k wgkey.Public, epoch string) {
	peer := d.dev.LookupPeer(device.NoisePublicKey(k.WGTypes()))
	if peer == nil {
		return
	}
	d.resets.Add(1)
	d.log.Info("peer restarted: starting a new WireGuard session now", "peer", k.String(), "epoch", epoch)
	handshakeNow(peer)
}

// handshakeNow expires peer's keypairs and queues a keepalive, which
// starts a handshake at once (see resetSession).
func handshakeNow(peer *device.Peer) {
	peer.ExpireCurrentKeypairs()
	peer.SendKeepalive()
}

// Handshake points a configured peer that has no endpoint yet at endpoint
// and starts a handshake with it now. A gateway that restarted serving its
// saved map (the controller away, so its clients are not told) uses it to
// reach the clients it served before: their sessions died with the old
// process, and they would otherwise wait for WireGuard's timers (15 s)
// before handshaking again. Call it right after the peer is configured:
// an endpoint the peer roamed to since is replaced (its next packet
// restores it).
func (d *Device) Handshake(k wgkey.Public, endpoint netip.AddrPort) error {
	if !endpoint.IsValid() {
		return fmt.Errorf("peer %s: invalid endpoint", k)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	peer := d.dev.LookupPeer(device.NoisePublicKey(k.WGTypes()))
	if peer == nil {
		return fmt.Errorf("peer %s is not configured", k)
	}
	wk := k.WGTypes()
	set := fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", hex.EncodeToString(wk[:]), endpoint)
	if err := d.dev.IpcSet(set); err != nil {
		return fmt.Errorf("set endpoint of peer %s: %w", k, err)
	}
	peer.SendKeepalive()
	return nil
}
