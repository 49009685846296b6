package ca

import (
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Gateway clusters (controlproto capability 12): the CA key is the one
// secret every controller replica shares, so both what clusters need come
// from it, and no operator ever writes a shared secret into a file.
//
//	gossip keys          HKDF-SHA256 of the CA's private scalar, per
//	                     cluster and epoch: a key never repeats across
//	                     clusters or days, and knowing one tells nothing
//	                     of another or of the CA key.
//	revocation notices   signed with the CA key itself (domain-separated,
//	                     controlproto.SignRevocation); gateways verify them
//	                     with the CA certificate they pinned at enrollment.

// gossipSalt separates the gossip keys from anything else derived from
// the CA key.
const gossipSalt = "cordon gateway cluster gossip key v1"

// ClusterKey is the gossip key of cluster name for epoch.
func (c *CA) ClusterKey(cluster string, epoch uint64) ([]byte, error) {
	k, ok := c.key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the CA key is not ECDSA: no cluster keys")
	}
	secret, err := k.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	info := binary.BigEndian.AppendUint64([]byte(cluster+"\x00"), epoch)
	return hkdf.Key(sha256.New, secret, []byte(gossipSalt), string(info), 32)
}

// SignRevocation signs a revocation notice for the gateways to gossip.
func (c *CA) SignRevocation(n controlproto.RevocationNotice) (*controlproto.Revocation, error) {
	k, ok := c.key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the CA key is not ECDSA: no revocation notices")
	}
	return controlproto.SignRevocation(k, n)
}
