package controlproto

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Gateway clusters (capability 12).
//
// The gateways of one segment form a memberlist cluster (the gateway's
// cluster package). The controller tells each gateway of capability 12
// its cluster in GatewayMap.Cluster: the gossip keys of the epochs around
// now and every enrolled gateway of the cluster with the address it
// gossips on and the public key of its certificate. A gateway that said
// hello with a ClusterAddr is listed; one that did not (no
// --cluster-listen, or an older gateway) is not.
//
// A gateway reports the cluster members it sees dead or suspect in
// Activity.Cluster; the controller calls a gateway down at once when a
// peer sees it dead and its own control connection is gone, without
// waiting out the grace period.
//
// Revocations travel two ways: in the maps, as always, and as signed
// notices (frame type revocation, [Revocation]) that the controller sends
// the connected gateways of a cluster when a device leaves their maps.
// The gateways gossip the notice to the others, which verify the
// controller's signature (the CA key they pinned at enrollment) and stop
// the device at once, until their own next map from the controller.

// TypeRevocation is a controller → gateway frame carrying a Revocation.
const TypeRevocation = "revocation"

// MinClusterCapability is the lowest gateway capability that gets
// GatewayMap.Cluster and revocation notices.
const MinClusterCapability = 12

// EpochLength is how long one gossip key is the one a cluster encrypts
// with. Epoch n starts at Unix time n*EpochLength.
const EpochLength = 24 * time.Hour

// Epoch is the gossip key epoch t falls in.
func Epoch(t time.Time) uint64 {
	if t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix()) / uint64(EpochLength/time.Second)
}

// GatewayCluster is a gateway's cluster as the controller sees it.
type GatewayCluster struct {
	// Name names the cluster (its segment); gateways refuse members of
	// another cluster.
	Name string `json:"name"`
	// Keys are the gossip keys (32 bytes, AES-256-GCM) of the epochs
	// before, at and after the controller's now, oldest first: the gateway
	// encrypts with its current epoch's key and accepts all three, so a
	// rotation never splits the cluster.
	Keys []ClusterKey `json:"keys"`
	// Members are the cluster's enrolled gateways, this one included.
	Members []ClusterMember `json:"members"`
}

// ClusterKey is the gossip key of one epoch.
type ClusterKey struct {
	Epoch uint64 `json:"epoch"`
	Key   []byte `json:"key"`
}

// ClusterMember is one enrolled gateway of a cluster.
type ClusterMember struct {
	GatewayID string         `json:"gateway_id"`
	Addr      netip.AddrPort `json:"addr"` // where it gossips (its --cluster-listen)
	// CertKey is the public key of the gateway's certificate (PKIX DER):
	// it signs the gateway's memberlist metadata and activity gossip.
	CertKey []byte `json:"cert_key"`
}

// ClusterMemberState is a cluster member as one gateway sees it.
type ClusterMemberState struct {
	GatewayID string `json:"gateway_id"`
	State     string `json:"state"` // MemberAlive, MemberSuspect or MemberDead
}

// Member states.
const (
	MemberAlive   = "alive"
	MemberSuspect = "suspect"
	MemberDead    = "dead"
)

// Revocation is a revocation notice and the controller's signature over
// it. Body is the notice's JSON exactly as signed.
type Revocation struct {
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"` // ASN.1 ECDSA P-256 over SHA-256(revocationDomain || Body)
}

// RevocationNotice says a device lost its access through a cluster: its
// session ended, it was revoked, or the policy no longer lets it reach
// the cluster's segment.
type RevocationNotice struct {
	ID        string       `json:"id"` // random; receivers act on each once
	DeviceID  string       `json:"device_id"`
	PublicKey wgkey.Public `json:"public_key"`
	Reason    string       `json:"reason,omitempty"` // for the log
	IssuedAt  time.Time    `json:"issued_at"`        // the controller's clock
}

// Bounds on notices.
const (
	// MaxRevocationBody bounds a notice's body, checked before parsing.
	MaxRevocationBody = 1024
	// RevocationMaxAge is how old (by the receiver's clock) a notice may
	// be when it arrives; older ones are replays or from a gateway whose
	// clock is off, and are dropped. RevocationMaxSkew is how far in the
	// future it may claim to be issued.
	RevocationMaxAge  = 5 * time.Minute
	RevocationMaxSkew = time.Minute
)

// revocationDomain separates revocation signatures from anything else the
// controller's CA key signs.
const revocationDomain = "cordon revocation notice v1\x00"

// Errors of VerifyRevocation.
var (
	ErrRevocationSignature = errors.New("revocation notice not signed by the controller")
	ErrRevocationStale     = errors.New("revocation notice too old or from the future")
)

// SignRevocation encodes n and signs it with the controller's key.
func SignRevocation(key *ecdsa.PrivateKey, n RevocationNotice) (*Revocation, error) {
	body, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode revocation notice: %w", err)
	}
	if len(body) > MaxRevocationBody {
		return nil, fmt.Errorf("revocation notice of %d bytes: over %d", len(body), MaxRevocationBody)
	}
	h := revocationDigest(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		return nil, fmt.Errorf("sign revocation notice: %w", err)
	}
	return &Revocation{Body: body, Sig: sig}, nil
}

// VerifyRevocation checks r's signature against the controller's key and
// its age against now, and returns the notice.
func VerifyRevocation(pub *ecdsa.PublicKey, r *Revocation, now time.Time) (RevocationNotice, error) {
	var n RevocationNotice
	if r == nil || len(r.Body) == 0 || len(r.Body) > MaxRevocationBody || len(r.Sig) == 0 || len(r.Sig) > 80 {
		return n, fmt.Errorf("%w: missing or oversized", ErrRevocationSignature)
	}
	h := revocationDigest(r.Body)
	if pub == nil || !ecdsa.VerifyASN1(pub, h[:], r.Sig) {
		return n, ErrRevocationSignature
	}
	if err := json.Unmarshal(r.Body, &n); err != nil {
		return n, fmt.Errorf("decode revocation notice: %w", err)
	}
	if n.ID == "" || n.DeviceID == "" {
		return n, errors.New("revocation notice names no device")
	}
	if now.Sub(n.IssuedAt) > RevocationMaxAge || n.IssuedAt.Sub(now) > RevocationMaxSkew {
		return n, fmt.Errorf("%w: issued %s", ErrRevocationStale, n.IssuedAt.Format(time.RFC3339))
	}
	return n, nil
}

func revocationDigest(body []byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte(revocationDomain), body))
}

// EqualClusters reports whether a and b list the same cluster (nil equals
// only nil).
func EqualClusters(a, b *GatewayCluster) bool { return ptrEq(a, b, clusterEq) }

func clusterEq(a, b *GatewayCluster) bool {
	return a.Name == b.Name &&
		slices.EqualFunc(a.Keys, b.Keys, func(x, y ClusterKey) bool { return x.Epoch == y.Epoch && sliceEq(x.Key, y.Key) }) &&
		(a.Keys == nil) == (b.Keys == nil) &&
		(a.Members == nil) == (b.Members == nil) &&
		slices.EqualFunc(a.Members, b.Members, func(x, y ClusterMember) bool {
			return x.GatewayID == y.GatewayID && x.Addr == y.Addr && sliceEq(x.CertKey, y.CertKey)
		})
}
