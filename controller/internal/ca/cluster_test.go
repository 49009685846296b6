package ca

import (
	"bytes"
	"crypto/ecdsa"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

func TestClusterKeysAndNotices(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k1, err := c.ClusterKey("icu", 100)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.ClusterKey("icu", 100)
	next, _ := c.ClusterKey("icu", 101)
	other, _ := c.ClusterKey("lab", 100)
	if len(k1) != 32 || !bytes.Equal(k1, again) {
		t.Fatalf("key of one cluster and epoch: %x then %x, want the same 32 bytes", k1, again)
	}
	if bytes.Equal(k1, next) || bytes.Equal(k1, other) {
		t.Error("the key repeats across epochs or clusters")
	}
	// Another controller (another CA) derives other keys.
	c2, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := c2.ClusterKey("icu", 100); bytes.Equal(k1, k2) {
		t.Error("two CAs derive the same gossip key")
	}

	now := time.Now()
	r, err := c.SignRevocation(controlproto.RevocationNotice{ID: "n", DeviceID: "d", IssuedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controlproto.VerifyRevocation(c.cert.PublicKey.(*ecdsa.PublicKey), r, now); err != nil {
		t.Errorf("notice does not verify with the CA certificate's key: %v", err)
	}
	if _, err := controlproto.VerifyRevocation(c2.cert.PublicKey.(*ecdsa.PublicKey), r, now); err == nil {
		t.Error("notice verifies with another CA's key")
	}
}
