package flow

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/policy"
)

// State bits of a flow (see the package doc for the TCP state machine).
const (
	stReplied   uint32 = 1 << iota // the app has sent something back (TCP: established)
	stFinClient                    // the client has sent a FIN
	stFinApp                       // the app has sent a FIN
	stClosed    = stFinClient | stFinApp
)

// flow is one entry of the connection table. key is the tuple as the
// client sends it; return traffic matches key.Reverse().
//
// The data path updates the atomic fields without a lock: Write is the
// only writer of fwdNext (one wireguard-go peer's packets are written by one
// goroutine, and a flow belongs to one peer) and Read the only writer of
// revNext, so load-compare-store needs no CAS.
type flow struct {
	key packet.Tuple

	lastSeen atomic.Int64 // monotonic nanoseconds since Authorizer.epoch
	// clientSeen is lastSeen for the client's direction only: the
	// device's activity, for the session idle limit (an app that keeps
	// sending does not keep an idle user signed in).
	clientSeen atomic.Int64
	state      atomic.Uint32 // st* bits
	fwdNext    atomic.Uint32 // TCP: next sequence number the client will send
	revNext    atomic.Uint32 // TCP: next sequence number the app will send (valid once stReplied)

	// Counters for the flow's end record, each written by one direction
	// only (Write for toApp, Read for toClient), so a load and a store
	// suffice: no locked instruction on the established path.
	pktsToApp, bytesToApp       atomic.Uint64
	pktsToClient, bytesToClient atomic.Uint64
	opened                      int64 // monotonic nanoseconds since Authorizer.epoch

	meta flowMeta // guarded by the shard lock
}

// countToApp counts a client packet of n bytes.
func (f *flow) countToApp(n int) {
	f.pktsToApp.Store(f.pktsToApp.Load() + 1)
	f.bytesToApp.Store(f.bytesToApp.Load() + uint64(n))
}

// countToClient counts an app packet of n bytes.
func (f *flow) countToClient(n int) {
	f.pktsToClient.Store(f.pktsToClient.Load() + 1)
	f.bytesToClient.Store(f.bytesToClient.Load() + uint64(n))
}

// flowMeta is who and what a flow belongs to, for flow events.
type flowMeta struct {
	device, user, app, rule, session string
	policyVersion                    int64
	local                            bool // to a gateway-local service (DNS): not user activity
}

func metaOf(d policy.Decision) flowMeta {
	var m flowMeta
	if d.Peer != nil {
		m.device, m.user = d.Peer.DeviceID, d.Peer.User
		if d.Peer.Session != nil {
			m.session = d.Peer.Session.ID
		}
	}
	if d.Rule != nil {
		m.app, m.rule = d.Rule.App, string(d.Rule.ID)
	}
	return m
}

// touch records activity at now. It skips the store when the recorded time
// is recent, so the two directions of a busy flow do not fight over the
// cache line on every packet.
func (f *flow) touch(now int64) {
	if now-f.lastSeen.Load() > touchGranularity {
		f.lastSeen.Store(now)
	}
}

// touchClient records a packet from the client at now.
func (f *flow) touchClient(now int64) {
	f.touch(now)
	if now-f.clientSeen.Load() > touchGranularity {
		f.clientSeen.Store(now)
	}
}

// touchGranularity bounds how stale lastSeen may be (nanoseconds); far
// below every idle timeout.
const touchGranularity = int64(250e6)

// nextSeq is the sequence number that follows TCP segment p.
func nextSeq(p *packet.Packet) uint32 {
	n := p.Seq + uint32(p.Payload)
	if p.TCPFlags&packet.TCPSyn != 0 {
		n++
	}
	if p.TCPFlags&packet.TCPFin != 0 {
		n++
	}
	return n
}

// advance moves v forward to next in sequence-number space; a retransmission
// never moves it back.
func advance(v *atomic.Uint32, next uint32) {
	if int32(next-v.Load()) > 0 {
		v.Store(next)
	}
}

// numShards splits the connection table so that Read, Write (one goroutine
// per wireguard-go peer) and the janitor rarely meet on one lock.
const numShards = 64

// key is a tuple in the form the table hashes fastest: 40 bytes with no
// padding and no pointers, which the runtime hashes and compares as one
// block of memory (a packet.Tuple holds two netip.Addr, each with a
// pointer, and is hashed field by field).
type key struct {
	src, dst [16]byte
	ports    uint32 // source port << 16 | destination port
	proto    uint32 // protocol | keyIPv6: an IPv4-mapped IPv6 address must not match an IPv4 flow
}

const keyIPv6 = 1 << 8

func keyOf(t *packet.Tuple) key {
	k := key{
		src:   t.Src.As16(),
		dst:   t.Dst.As16(),
		ports: uint32(t.SrcPort)<<16 | uint32(t.DstPort),
		proto: uint32(t.Proto),
	}
	if !t.Src.Is4() {
		k.proto |= keyIPv6
	}
	return k
}

// shardIndex folds the parts of k that vary most between flows (ports and
// the low 32 bits of each address) into a shard number. A skewed spread only
// costs lock sharing, never a wrong answer.
func (k *key) shardIndex(seed uint32) uint32 {
	le := binary.LittleEndian
	x := seed ^ k.ports ^ k.proto ^ le.Uint32(k.src[12:]) ^ bits.RotateLeft32(le.Uint32(k.dst[12:]), 16)
	return (x * 0x9e3779b1) >> (32 - 6) // top 6 bits: numShards = 64
}

// hash mixes all of k into 64 bits (splitmix64 finalizer), for the deny
// cache, whose sets an attacker's port scan should not be able to aim at.
func (k *key) hash(seed uint64) uint64 {
	le := binary.LittleEndian
	h := seed ^ uint64(k.ports)<<32 ^ uint64(k.proto)
	h = mix(h ^ le.Uint64(k.src[:8]))
	h = mix(h ^ le.Uint64(k.src[8:]))
	h = mix(h ^ le.Uint64(k.dst[:8]))
	return mix(h ^ le.Uint64(k.dst[8:]))
}

func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

type shard struct {
	mu sync.RWMutex
	m  map[key]*flow
	_  [64 - 24 - 8]byte // one shard per cache line
}

// table is the connection table: a sharded map from client-side tuple to
// flow.
type table struct {
	seed   uint32
	open   *atomic.Int64 // flows currently in the table
	shards [numShards]shard
}

func newTable(seed uint32, open *atomic.Int64) *table {
	t := &table{seed: seed, open: open}
	for i := range t.shards {
		t.shards[i].m = make(map[key]*flow)
	}
	return t
}

func (t *table) shardOf(k *key) *shard {
	return &t.shards[k.shardIndex(t.seed)]
}

// lookup returns the flow for client-side tuple tu, or nil.
func (t *table) lookup(tu *packet.Tuple) *flow {
	k := keyOf(tu)
	s := t.shardOf(&k)
	s.mu.RLock()
	f := s.m[k]
	s.mu.RUnlock()
	return f
}

// lookupReverse returns the flow whose return traffic has tuple tu, or nil.
func (t *table) lookupReverse(tu *packet.Tuple) *flow {
	r := tu.Reverse()
	return t.lookup(&r)
}

// remove deletes f if it is still the table's entry for its tuple, and
// returns its meta (for its end record).
func (t *table) remove(f *flow) (flowMeta, bool) {
	k := keyOf(&f.key)
	s := t.shardOf(&k)
	s.mu.Lock()
	ok := s.m[k] == f
	var m flowMeta
	if ok {
		delete(s.m, k)
		m = f.meta
	}
	s.mu.Unlock()
	if ok {
		t.open.Add(-1)
	}
	return m, ok
}

// len counts the flows (for tests; takes every lock).
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
