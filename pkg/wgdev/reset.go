package wgdev

import (
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
	peer.ExpireCurrentKeypairs()
	peer.SendKeepalive()
}
