package flow

import (
	"encoding/binary"
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

	lastSeen atomic.Int64  // monotonic nanoseconds since Authorizer.epoch
	state    atomic.Uint32 // st* bits
	fwdNext  atomic.Uint32 // TCP: next sequence number the client will send
	revNext  atomic.Uint32 // TCP: next sequence number the app will send (valid once stReplied)

	meta flowMeta // guarded by the shard lock
}

// flowMeta is who and what a flow belongs to, for flow events.
type flowMeta struct {
	device, user, app, rule string
}

func metaOf(d policy.Decision) flowMeta {
	var m flowMeta
	if d.Peer != nil {
		m.device, m.user = d.Peer.DeviceID, d.Peer.User
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

type shard struct {
	mu sync.RWMutex
	m  map[packet.Tuple]*flow
	_  [64 - 24 - 8]byte // one shard per cache line
}

// table is the connection table: a sharded map from client-side tuple to
// flow.
type table struct {
	seed   uint64
	open   *atomic.Int64 // flows currently in the table
	shards [numShards]shard
}

func newTable(seed uint64, open *atomic.Int64) *table {
	t := &table{seed: seed, open: open}
	for i := range t.shards {
		t.shards[i].m = make(map[packet.Tuple]*flow)
	}
	return t
}

// hash mixes a tuple into 64 bits (splitmix64 finalizer over its words).
func hash(k *packet.Tuple, seed uint64) uint64 {
	s, d := k.Src.As16(), k.Dst.As16()
	h := seed ^ uint64(k.Proto)<<32 ^ uint64(k.SrcPort)<<16 ^ uint64(k.DstPort)
	h = mix(h ^ binary.LittleEndian.Uint64(s[:8]))
	h = mix(h ^ binary.LittleEndian.Uint64(s[8:]))
	h = mix(h ^ binary.LittleEndian.Uint64(d[:8]))
	return mix(h ^ binary.LittleEndian.Uint64(d[8:]))
}

func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func (t *table) shardOf(k *packet.Tuple) *shard {
	return &t.shards[hash(k, t.seed)%numShards]
}

// lookup returns the flow for client-side tuple k, or nil.
func (t *table) lookup(k packet.Tuple) *flow {
	s := t.shardOf(&k)
	s.mu.RLock()
	f := s.m[k]
	s.mu.RUnlock()
	return f
}

// remove deletes f if it is still the table's entry for its tuple.
func (t *table) remove(f *flow) bool {
	s := t.shardOf(&f.key)
	s.mu.Lock()
	ok := s.m[f.key] == f
	if ok {
		delete(s.m, f.key)
	}
	s.mu.Unlock()
	if ok {
		t.open.Add(-1)
	}
	return ok
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
