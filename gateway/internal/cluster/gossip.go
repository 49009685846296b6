package cluster

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// What the cluster carries, as memberlist user messages: one type byte,
// then
//
//	'n' notice    a controlproto.Revocation (JSON): the controller's
//	              signature is what makes it count, whoever relays it.
//	              The gateway the controller gave it sends it at once to
//	              every live member (UDP) and gossips it; each member
//	              gossips it on the first time it sees it (piggybacked on
//	              memberlist's gossip: the backup for a lost packet, not
//	              another n² round of sends). Copies seen before are
//	              dropped before their signature is checked.
//	'a' activity  4-byte body length, the body (JSON activityBody), the
//	              sender's signature over it: which devices sent app
//	              traffic through the sender lately, for the idle limit.
//	              Sent over TCP to each live member, every activity
//	              interval; a newer report (Seq) replaces an older one.
const (
	msgNotice   = 'n'
	msgActivity = 'a'
)

// maxActivityBody bounds an activity report (about 10,000 devices).
const maxActivityBody = 1 << 20

const activityDomain = "cordon cluster activity v1\x00"

type activityBody struct {
	From    string                        `json:"from"`
	Seq     uint64                        `json:"seq"` // the sender's clock, ns: increases across its restarts
	Devices []controlproto.DeviceActivity `json:"devices"`
}

// Stats counts what the cluster dropped, for metrics.
type Stats struct {
	Refused         uint64 // alive messages and merges of unlisted or unverified nodes
	FilteredPackets uint64 // packets and streams from unlisted addresses
	BadNotices      uint64 // notices whose controller signature or age did not verify
	BadActivity     uint64 // activity reports not signed by a listed member, or replayed
	Notices         uint64 // valid notices acted on
	// Gossip packet bytes (UDP) sent and received; streams not counted.
	PacketBytesSent, PacketBytesReceived uint64
}

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	return Stats{Refused: c.refusals.Load(), FilteredPackets: c.tr.dropped.Load(), BadNotices: c.badNotices.Load(),
		BadActivity: c.badActivity.Load(), Notices: c.goodNotices.Load(),
		PacketBytesSent: c.tr.sentBytes.Load(), PacketBytesReceived: c.tr.recvBytes.Load()}
}

// Revoke takes a revocation notice the controller sent this gateway: it
// verifies it, acts on it (OnNotice) and gossips it to the cluster.
func (c *Cluster) Revoke(r *controlproto.Revocation) error {
	_, err := c.takeNotice(r, true)
	return err
}

// takeNotice verifies r, and if it is new, acts on it and sends it on
// (to every live member at once when it is the origin). It reports
// whether it was new.
func (c *Cluster) takeNotice(r *controlproto.Revocation, origin bool) (bool, error) {
	now := c.cfg.Now()
	copyID := string(noticeCopyID(r))
	if c.notices.seenBefore(copyID) {
		return false, nil
	}
	n, err := controlproto.VerifyRevocation(c.cfg.Controller, r, now)
	if err != nil {
		c.badNotices.Add(1)
		return false, err
	}
	if !c.notices.first(n.ID, copyID, now) {
		return false, nil
	}
	c.goodNotices.Add(1)
	if c.cfg.OnNotice != nil {
		c.cfg.OnNotice(n)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return true, err
	}
	msg := append([]byte{msgNotice}, body...)
	c.queue.QueueBroadcast(broadcast(msg))
	if !origin {
		return true, nil
	}
	for _, m := range c.live() {
		if err := c.ml.Load().SendBestEffort(m, msg); err != nil {
			c.log.Debug("send revocation notice", "to", m.Name, "err", err)
		}
	}
	return true, nil
}

// SendActivity tells every live member which devices sent app traffic
// here and how long ago. It returns once each was sent or failed.
func (c *Cluster) SendActivity(devices []controlproto.DeviceActivity) error {
	live := c.live()
	if len(live) == 0 {
		return nil
	}
	seq := uint64(c.cfg.Now().UnixNano())
	body, err := json.Marshal(activityBody{From: c.cfg.Name, Seq: seq, Devices: devices})
	if err != nil {
		return fmt.Errorf("encode activity: %w", err)
	}
	if len(body) > maxActivityBody {
		return fmt.Errorf("activity report of %d bytes: over %d", len(body), maxActivityBody)
	}
	d := activityDigest(c.nameOf(), body)
	sig, err := ecdsa.SignASN1(rand.Reader, c.cfg.Key, d[:])
	if err != nil {
		return fmt.Errorf("sign activity: %w", err)
	}
	msg := make([]byte, 5, 5+len(body)+len(sig))
	msg[0] = msgActivity
	binary.BigEndian.PutUint32(msg[1:], uint32(len(body)))
	msg = append(append(msg, body...), sig...)
	var errs []error
	for _, m := range live {
		if err := c.ml.Load().SendReliable(m, msg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
		}
	}
	return errors.Join(errs...)
}

func activityDigest(cluster string, body []byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte(activityDomain), []byte(cluster), []byte{0}, body))
}

// takeActivity checks an activity report and hands it on.
func (c *Cluster) takeActivity(msg []byte) error {
	if len(msg) < 4 {
		return errors.New("short activity report")
	}
	n := binary.BigEndian.Uint32(msg)
	if n > maxActivityBody || uint64(len(msg)) < 4+uint64(n)+8 {
		return errors.New("truncated or oversized activity report")
	}
	body, sig := msg[4:4+n], msg[4+n:]
	var a activityBody
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("decode activity report: %w", err)
	}
	m, ok := c.auth.Load().members[a.From]
	if !ok || a.From == c.cfg.Name {
		return fmt.Errorf("activity report from %q: %w", a.From, errNotListed)
	}
	d := activityDigest(c.nameOf(), body)
	if !ecdsa.VerifyASN1(m.key, d[:], sig) {
		return fmt.Errorf("activity report from %s: bad signature", a.From)
	}
	if !c.activity.newer(a.From, a.Seq) {
		return fmt.Errorf("activity report from %s: replayed or out of order", a.From)
	}
	if c.cfg.OnActivity != nil {
		c.cfg.OnActivity(a.From, a.Devices)
	}
	return nil
}

func (c *Cluster) nameOf() string { return c.auth.Load().name }

// live is every listed member memberlist sees alive, this one aside.
func (c *Cluster) live() []*memberlist.Node {
	ml := c.ml.Load()
	if ml == nil {
		return nil
	}
	auth := c.auth.Load()
	var out []*memberlist.Node
	for _, n := range ml.Members() {
		if _, ok := auth.members[n.Name]; ok && n.Name != c.cfg.Name && n.State == memberlist.StateAlive {
			out = append(out, n)
		}
	}
	return out
}

// delegate is memberlist's view of the Cluster.
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte {
	m := (*Cluster)(d).meta.Load()
	if m == nil || len(*m) > limit {
		return nil
	}
	return slices.Clone(*m)
}

func (d *delegate) NotifyMsg(b []byte) {
	c := (*Cluster)(d)
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case msgNotice:
		var r controlproto.Revocation
		if err := json.Unmarshal(b[1:], &r); err != nil {
			c.badNotices.Add(1)
			return
		}
		if _, err := c.takeNotice(&r, false); err != nil {
			// Counted (cordon_gateway_cluster_refused_total); a member
			// could flood the log.
			c.log.Debug("gossiped revocation notice refused", "err", err)
		}
	case msgActivity:
		if err := c.takeActivity(b[1:]); err != nil {
			c.badActivity.Add(1)
			c.log.Debug("activity report refused", "err", err)
		}
	default:
		c.badActivity.Add(1)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Cluster)(d).queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte            { return nil }
func (d *delegate) MergeRemoteState(_ []byte, _ bool) {}

// events tells the owner when a member's state changed.
type events Cluster

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Cluster)(e).changed(n, "joined") }
func (e *events) NotifyLeave(n *memberlist.Node)  { (*Cluster)(e).changed(n, "dead") }
func (e *events) NotifyUpdate(n *memberlist.Node) {}

func (c *Cluster) changed(n *memberlist.Node, what string) {
	if n.Name == c.cfg.Name {
		return
	}
	c.log.Info("cluster member "+what, "member", n.Name, "addr", addrPortOf(n.Addr, n.Port))
	if c.cfg.OnChange != nil {
		c.cfg.OnChange()
	}
}

// broadcast is a gossiped message; none replaces another.
type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}

// noticeLog remembers the notices acted on, for as long as one may
// arrive (controlproto.RevocationMaxAge and skew), so each counts once:
// by notice ID, and by the hash of the exact copy (a copy seen before is
// dropped without checking its signature again).
type noticeLog struct {
	mu     sync.Mutex
	seen   map[string]time.Time // notice ID → when acted on
	copies map[string]time.Time // noticeCopyID → when verified
}

func noticeCopyID(r *controlproto.Revocation) []byte {
	h := sha256.New()
	h.Write(r.Body)
	h.Write([]byte{0})
	h.Write(r.Sig)
	return h.Sum(nil)
}

func (l *noticeLog) seenBefore(copyID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.copies[copyID]
	return ok
}

func (l *noticeLog) first(id, copyID string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen, l.copies = map[string]time.Time{}, map[string]time.Time{}
	}
	l.copies[copyID] = now
	if _, ok := l.seen[id]; ok {
		return false
	}
	if len(l.seen) >= 1024 {
		keep := controlproto.RevocationMaxAge + controlproto.RevocationMaxSkew
		for _, m := range []map[string]time.Time{l.seen, l.copies} {
			for k, at := range m {
				if now.Sub(at) > keep {
					delete(m, k)
				}
			}
		}
	}
	l.seen[id] = now
	return true
}

// activitySeq is the newest activity report taken from each member.
type activitySeq struct {
	mu  sync.Mutex
	seq map[string]uint64
}

func (a *activitySeq) newer(from string, seq uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seq == nil {
		a.seq = map[string]uint64{}
	}
	if seq <= a.seq[from] {
		return false
	}
	a.seq[from] = seq
	return true
}
