package flow

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/policy"
)

// writeScratch holds the surviving packets of a partly filtered batch and
// their indexes in the caller's batch.
type writeScratch struct {
	bufs [][]byte
	idx  []int
}

// Write filters packets from clients and writes the survivors to the
// device. It leaves bufs untouched. On success it returns len(bufs): a
// dropped packet counts as consumed, as wireguard-go expects. If the device
// writes only part of the survivors, Write returns the number of leading
// packets of bufs that were written or dropped, and the device's error.
func (a *Authorizer) Write(bufs [][]byte, offset int) (int, error) {
	now := a.clock.Load()
	var c batchCounts
	var sc *writeScratch // nil while every packet so far passed
	for i, b := range bufs {
		if offset <= len(b) && a.filterIn(b[offset:], now, &c) {
			if sc != nil {
				sc.bufs = append(sc.bufs, b)
				sc.idx = append(sc.idx, i)
			}
			continue
		}
		if offset > len(b) {
			c.malformed++
		}
		if sc == nil {
			sc = a.scratch.Get().(*writeScratch)
			sc.bufs = append(sc.bufs, bufs[:i]...)
			for j := range i {
				sc.idx = append(sc.idx, j)
			}
		}
	}
	c.flush(&a.stats)

	out := bufs
	if sc != nil {
		out = sc.bufs
		defer a.putScratch(sc)
	}
	if len(out) == 0 {
		return len(bufs), nil
	}
	n, err := a.dev.Write(out, offset)
	if n >= len(out) {
		return len(bufs), err
	}
	if sc != nil {
		n = sc.idx[max(n, 0)]
	}
	return n, err
}

func (a *Authorizer) putScratch(sc *writeScratch) {
	clear(sc.bufs) // do not keep the caller's buffers alive
	sc.bufs, sc.idx = sc.bufs[:0], sc.idx[:0]
	a.scratch.Put(sc)
}

// filterIn decides one packet from a client; true passes it.
func (a *Authorizer) filterIn(b []byte, now int64, c *batchCounts) bool {
	p, err := packet.Parse(b)
	if err != nil {
		c.malformed++
		return false
	}
	if p.Frag == packet.FragLater {
		if a.laterFragment(&p, true, now, len(b)) {
			c.allowed++
			c.fragPassed++
			return true
		}
		c.fragments++
		return false
	}
	if f := a.flows.lookup(&p.Tuple); f != nil && a.forward(f, &p, now, len(b)) {
		if p.Frag == packet.FragFirst {
			a.firstFragment(&p, f, true, now)
		}
		c.allowed++
		return true
	}
	if p.IsICMPError() && p.HasInner && p.Inner.Dst == p.Src && a.flows.lookupReverse(&p.Inner) != nil {
		if p.IsPacketTooBig() {
			a.packetTooBig(&p, &a.stats.ptbToApps, "client")
		}
		c.allowed++ // an error about a packet the app sent the client
		return true
	}
	if !a.newFlow(&p, now, len(b), c) {
		if p.Frag == packet.FragFirst {
			c.fragments++
		}
		return false
	}
	if p.Frag == packet.FragFirst {
		if f := a.flows.lookup(&p.Tuple); f != nil {
			a.firstFragment(&p, f, true, now)
		}
	}
	return true
}

// firstFragment remembers the datagram of p, an admitted first fragment of
// flow f, for its later fragments.
func (a *Authorizer) firstFragment(p *packet.Packet, f *flow, fromClient bool, now int64) {
	if a.frags.add(p, f, fromClient, now) {
		n := a.stats.fragEvicted.Add(1)
		if s, ok := a.logAllowed(&a.logFragEvicted); ok {
			a.log.Warn("fragmented datagrams forgotten before their timeout to make room: a fragment flood, or too many fragmenting flows",
				logKeyEvicted, n, logKeySuppressed, s)
		}
	}
}

// laterFragment decides p, a later fragment from the client (fromClient)
// or the app: it passes if the first fragment of its datagram passed the
// same way, the flow is still open, and it does not overlap the first
// fragment (see the package doc).
func (a *Authorizer) laterFragment(p *packet.Packet, fromClient bool, now int64, size int) bool {
	f, verdict := a.frags.later(p, fromClient, now)
	switch verdict {
	case fragOverlap:
		n := a.stats.fragOverlap.Add(1)
		if s, ok := a.logAllowed(&a.logFragOverlap); ok {
			a.log.Warn("fragment overlapping its datagram's first fragment dropped",
				logKeyFlowSrc, p.Src, logKeyFlowDst, p.Dst, logKeyProto, p.Proto,
				logKeyOverlapping, n, logKeySuppressed, s)
		}
		return false
	case fragUnknown:
		return false
	}
	if a.flows.lookup(&f.key) != f {
		return false // the flow was cut or expired since its first fragment
	}
	if fromClient {
		f.touchClient(now)
		f.countToApp(size)
	} else {
		f.touch(now)
		f.countToClient(size)
	}
	return true
}

// packetTooBig counts and logs a path MTU signal about an open flow, sent
// by from ("client", or "app" for the app side: the app or a hop or the
// gateway host itself).
func (a *Authorizer) packetTooBig(p *packet.Packet, n *atomic.Uint64, from string) {
	n.Add(1)
	if s, ok := a.logAllowed(&a.logPMTU); ok {
		a.log.Info("path MTU: packet too big for a hop; the sender must send smaller packets",
			logKeyFrom, from, logKeyMTU, p.MTU, logKeyFlowSrc, p.Inner.SrcAddrPort(), logKeyFlowDst, p.Inner.DstAddrPort(),
			logKeyProto, p.Inner.Proto, logKeySuppressed, s)
	}
}

// forward tracks a client packet of open flow f. It returns false when the
// packet starts a new connection on the tuple of a closing one, which must
// be decided afresh.
func (a *Authorizer) forward(f *flow, p *packet.Packet, now int64, size int) bool {
	if p.Proto != policy.ProtoTCP {
		f.touchClient(now)
		f.countToApp(size)
		return true
	}
	fl, st := p.TCPFlags, f.state.Load()
	if fl&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn && st&(stFinClient|stFinApp) != 0 {
		if m, ok := a.flows.remove(f); ok {
			a.ended(f, m, now, controlproto.EndClosed, "")
		}
		return false
	}
	f.touchClient(now)
	f.countToApp(size)
	if fl&packet.TCPRst != 0 {
		if m, ok := a.flows.remove(f); ok {
			a.ended(f, m, now, controlproto.EndClosed, "reset by the client")
		}
		return true
	}
	advance(&f.fwdNext, nextSeq(p))
	if fl&packet.TCPFin != 0 && st&stFinClient == 0 {
		f.state.Or(stFinClient)
	}
	return true
}

// newFlow decides a client packet that belongs to no flow and, if the
// policy allows it, opens a flow.
func (a *Authorizer) newFlow(p *packet.Packet, now int64, size int, c *batchCounts) bool {
	pol := a.policy.Load()
	var d policy.Decision
	if a.observe != nil && p.Tuple.SrcPort%DecisionSample == 0 {
		start := time.Now()
		d = a.decide(pol, &p.Tuple)
		a.observe(time.Since(start))
	} else {
		d = a.decide(pol, &p.Tuple)
	}
	if d.Verdict != policy.Allow {
		c.denied++
		a.denied(p, d, now)
		return false
	}
	// ICMP errors and resets are allowed through but open nothing.
	if p.IsICMPError() || (p.Proto == policy.ProtoTCP && p.TCPFlags&packet.TCPRst != 0) {
		c.allowed++
		return true
	}
	if a.admit != nil && d.Rule != nil && !a.isLocal(d.Rule) && !a.admit(d.Rule.App) {
		c.denied++
		a.stats.flowsRefused.Add(1)
		a.refused(p, d, now)
		return false
	}
	f := &flow{key: p.Tuple, opened: now}
	f.lastSeen.Store(now)
	f.clientSeen.Store(now)
	f.countToApp(size)
	if p.Proto == policy.ProtoTCP {
		f.fwdNext.Store(nextSeq(p))
		if p.TCPFlags&packet.TCPFin != 0 {
			f.state.Store(stFinClient)
		}
	}
	var ok bool
	if d, ok = a.insert(f, pol, d); !ok {
		c.denied++
		a.denied(p, d, now)
		return false
	}
	c.allowed++
	return true
}

// insert adds f, admitted under policy pol with decision d. If the policy
// changed since, f is decided again under the new one (SetPolicy's scan
// may have passed f's shard already). If another goroutine inserted the
// same tuple first, that flow stands and nothing is emitted. It returns the
// deciding decision and whether the packet passes.
func (a *Authorizer) insert(f *flow, pol *policy.Compiled, d policy.Decision) (policy.Decision, bool) {
	k := &f.key
	mk := keyOf(k)
	s := a.flows.shardOf(&mk)
	s.mu.Lock()
	if cur := a.policy.Load(); cur != pol {
		if d = a.decide(cur, k); d.Verdict != policy.Allow {
			s.mu.Unlock()
			return d, false
		}
	}
	if _, dup := s.m[mk]; dup {
		s.mu.Unlock()
		return d, true
	}
	meta := metaOf(d)
	meta.local = a.isLocal(d.Rule)
	meta.policyVersion = a.polVersion.Load()
	f.meta = meta
	s.m[mk] = f
	s.mu.Unlock()
	a.stats.flowsOpen.Add(1)
	a.stats.flowsOpened.Add(1)
	if !meta.local {
		a.emit(flowEvent(a.now(), controlproto.FlowAllow, *k, meta, policy.ReasonAllowed.String()))
	}
	return d, true
}

// isLocal reports whether r is one of the gateway's own services. Their
// allowed flows are not audited as flows: every DNS lookup would otherwise
// be an audit record (the DNS server audits the lookups it denies).
func (a *Authorizer) isLocal(r *policy.Rule) bool {
	for i := range a.services {
		if r == &a.services[i] {
			return true
		}
	}
	return false
}

// refused records a new flow the policy allowed but Config.Admit refused,
// like a denied one (first packet of the flow, within the rate limit).
func (a *Authorizer) refused(p *packet.Packet, d policy.Decision, now int64) {
	switch a.denies.admit(&p.Tuple, now) {
	case denyEmit:
		m := metaOf(d)
		m.policyVersion = a.polVersion.Load()
		a.emit(flowEvent(a.now(), controlproto.FlowDeny, p.Tuple, m, ReasonAuditSpoolFull))
	case denySuppressed:
		a.stats.suppressed.Add(1)
	}
}

// denied records a denied packet: the first of its flow emits an event,
// within the rate limit.
func (a *Authorizer) denied(p *packet.Packet, d policy.Decision, now int64) {
	switch a.denies.admit(&p.Tuple, now) {
	case denyEmit:
		m := metaOf(d)
		m.policyVersion = a.polVersion.Load()
		a.emit(flowEvent(a.now(), controlproto.FlowDeny, p.Tuple, m, d.Reason.String()))
	case denySuppressed:
		a.stats.suppressed.Add(1)
	}
}

// readBatch is one batch the reader goroutine read from the device.
type readBatch struct {
	bufs  [][]byte
	sizes []int
	n     int
	err   error
}

// reader reads the device and hands each batch to Read, until the device
// fails or Close.
func (a *Authorizer) reader() {
	defer a.wg.Done()
	for {
		var b *readBatch
		select {
		case b = <-a.free:
		case <-a.ctx.Done():
			a.pumpErr = os.ErrClosed
			close(a.pumpExit)
			return
		}
		b.n, b.err = a.dev.Read(b.bufs, b.sizes, 0)
		select {
		case a.outbound <- b:
		case <-a.ctx.Done():
			a.pumpErr = os.ErrClosed
			close(a.pumpExit)
			return
		}
		if b.err != nil && !errors.Is(b.err, tun.ErrTooManySegments) {
			a.pumpErr = b.err
			close(a.pumpExit)
			return
		}
	}
}

// Read returns packets from the device toward clients that belong to open
// flows, and resets injected by SetPolicy. It blocks until at least one
// packet passes, the device fails or Close.
func (a *Authorizer) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	a.readMu.Lock()
	defer a.readMu.Unlock()
	for {
		if n := a.takeInjected(bufs, sizes, offset, 0); n > 0 {
			return n, nil
		}
		if a.pending == nil {
			select {
			case b := <-a.outbound:
				a.pending, a.pendAt = b, 0
			case pkt := <-a.inject:
				n := 0
				if a.place(pkt, bufs[0], offset) {
					sizes[0] = len(pkt)
					n = 1
				}
				return a.takeInjected(bufs, sizes, offset, n), nil
			case <-a.pumpExit:
				return 0, a.pumpErr
			}
		}
		if n, err := a.drain(bufs, sizes, offset); n > 0 || err != nil {
			return n, err
		}
	}
}

// takeInjected moves queued resets into bufs[n:] without blocking and
// returns the new count.
func (a *Authorizer) takeInjected(bufs [][]byte, sizes []int, offset, n int) int {
	for n < len(bufs) {
		select {
		case pkt := <-a.inject:
			if a.place(pkt, bufs[n], offset) {
				sizes[n] = len(pkt)
				n++
			}
		default:
			return n
		}
	}
	return n
}

// place copies pkt into buf at offset, if it fits.
func (a *Authorizer) place(pkt, buf []byte, offset int) bool {
	if len(buf)-offset < len(pkt) {
		a.stats.malformed.Add(1)
		if s, ok := a.logAllowed(&a.logOversize); ok {
			a.log.Warn("packet larger than the read buffer dropped", logKeySuppressed, s)
		}
		return false
	}
	copy(buf[offset:], pkt)
	return true
}

// drain filters the pending batch into bufs and returns how many passed;
// when the batch is used up it returns it to the reader, with its error.
func (a *Authorizer) drain(bufs [][]byte, sizes []int, offset int) (int, error) {
	b := a.pending
	now := a.clock.Load()
	var c batchCounts
	n := 0
	for a.pendAt < b.n && n < len(bufs) {
		i := a.pendAt
		a.pendAt++
		if b.sizes[i] <= 0 {
			continue
		}
		pkt := b.bufs[i][:b.sizes[i]]
		if a.filterOut(pkt, now, &c) && a.place(pkt, bufs[n], offset) {
			sizes[n] = len(pkt)
			n++
		}
	}
	c.flush(&a.stats)
	if a.pendAt < b.n {
		return n, nil
	}
	err := b.err
	a.pending = nil
	a.free <- b // never blocks: free holds every batch
	return n, err
}

// filterOut decides one packet from the device toward a client; true
// passes it.
func (a *Authorizer) filterOut(b []byte, now int64, c *batchCounts) bool {
	p, err := packet.Parse(b)
	if err != nil {
		c.malformed++
		return false
	}
	if p.Frag == packet.FragLater {
		if a.laterFragment(&p, false, now, len(b)) {
			c.returned++
			c.fragPassed++
			return true
		}
		c.fragments++
		return false
	}
	if f := a.flows.lookupReverse(&p.Tuple); f != nil {
		a.reverse(f, &p, now, len(b))
		if p.Frag == packet.FragFirst {
			a.firstFragment(&p, f, false, now)
		}
		c.returned++
		return true
	}
	if p.IsICMPError() && p.HasInner && p.Inner.Src == p.Dst && a.flows.lookup(&p.Inner) != nil {
		if p.IsPacketTooBig() {
			a.packetTooBig(&p, &a.stats.ptbToClients, "app")
		}
		c.returned++ // an error about a packet the client sent
		return true
	}
	if p.Frag == packet.FragFirst {
		c.fragments++
	}
	c.returnDropped++
	return false
}

// reverse tracks an app packet of open flow f.
func (a *Authorizer) reverse(f *flow, p *packet.Packet, now int64, size int) {
	f.touch(now)
	f.countToClient(size)
	st := f.state.Load()
	if p.Proto != policy.ProtoTCP {
		if st&stReplied == 0 {
			f.state.Or(stReplied)
		}
		return
	}
	fl := p.TCPFlags
	if fl&packet.TCPRst != 0 {
		if m, ok := a.flows.remove(f); ok {
			a.ended(f, m, now, controlproto.EndClosed, "reset by the app")
		}
		return
	}
	if st&stReplied == 0 {
		f.revNext.Store(nextSeq(p)) // before the bit: readers check the bit first
		f.state.Or(stReplied)
	} else {
		advance(&f.revNext, nextSeq(p))
	}
	if fl&packet.TCPFin != 0 && st&stFinApp == 0 {
		f.state.Or(stFinApp)
	}
}
