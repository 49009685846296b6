package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/gateway/internal/spool"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Flow records on their way to the controller. The flow authorizer and
// the DNS server hand events to a bounded in-memory queue (never blocking
// the data path); the spool writer takes everything queued, appends it to
// the spool on disk (package spool) and fsyncs, one write per batch (group
// commit). The sender reads the spool and sends it to the controller; a
// controller of capability 11 commits each batch and acknowledges it, and
// only then is it deleted. On every connect the sender starts again from
// the oldest unacknowledged record; the controller records a resend once.
//
//	authorizer, DNS ──queue (FlowQueue)──▶ writer ──fsync──▶ spool ──▶ sender ──▶ controller
//	                                                          ▲                       │
//	                                                          └──── trim ◀── flow_ack ┘
//
// Not yet durable at any moment: what is in the queue (at most FlowQueue)
// plus the batch being written (at most writeBatch): a kill -9 or power
// cut loses at most FlowQueue+writeBatch decisions, never one the spool
// returned. A full queue drops the event (counted: Lost).
//
// A controller below capability 11 gets the events unnumbered, as before,
// and they leave the spool once handed to the connection.

// Spool-full policies: what a gateway does with new flows while its spool
// is full (Config.SpoolFull).
const (
	SpoolFailClosedPHI = "fail-closed-phi" // refuse new flows to apps classified phi (or of no known class); default
	SpoolFailClosed    = "fail-closed"     // refuse every new flow
	SpoolFailOpen      = "fail-open"       // admit new flows; their records are lost (counted)
)

// FlowQueue is the in-memory queue of flow events in front of the spool.
const FlowQueue = 4096

const (
	// writeBatch bounds one append (one fsync).
	writeBatch = 1024
	// sendBatch is how many records go in one flow_events frame; the
	// controller commits a frame in one transaction, and at 1,000 records
	// or more a commit reaches 50,000 records/s on a large trail
	// (docs/benchmarks.md, "Audit search").
	sendBatch = 2000
	// maxInflight is how many records may be sent and not yet
	// acknowledged.
	maxInflight = 4 * sendBatch
	// ackTimeout: with records in flight and no acknowledgement for this
	// long, the sender starts again from the oldest unacknowledged.
	ackTimeout = 15 * time.Second
)

// flowReporter owns the spool, its writer and its sender.
type flowReporter struct {
	log    *slog.Logger
	sp     *spool.Spool
	events chan controlproto.FlowEvent
	policy string
	now    func() time.Time

	lost    atomic.Uint64 // events the spool refused (full) or could not take
	refused func() uint64 // new flows refused while full (the authorizer's count)
	// queueDropped counts events dropped before the spool because the
	// queue was full (the authorizer's and the DNS server's counts).
	queueDropped func() uint64
	classes      atomic.Pointer[map[string]string]
	ctrlCaps     atomic.Int64  // controller capability on this connection; 0 unknown or down
	connGen      atomic.Uint64 // counts connection changes
	// sendMu is held to queue a frame for the connection, and by
	// connState to drop the frames queued for one that went down.
	sendMu sync.Mutex
	// discard drops the queued frames match selects (the control client's
	// Discard); nil drops none.
	discard    func(match func(*controlproto.Frame) bool) int
	wake       chan struct{} // the writer appended, a connection came, an ack arrived
	mu         sync.Mutex
	ackedSeq   uint64 // guarded by mu
	logFullAt  time.Time
	fullLogged bool
}

func openFlowReporter(stateDir string, maxBytes int64, policy string, log *slog.Logger) (*flowReporter, error) {
	switch policy {
	case "":
		policy = SpoolFailClosedPHI
	case SpoolFailClosedPHI, SpoolFailClosed, SpoolFailOpen:
	default:
		return nil, fmt.Errorf("--spool-full %q: use %s, %s or %s", policy, SpoolFailClosedPHI, SpoolFailClosed, SpoolFailOpen)
	}
	sp, err := spool.Open(filepath.Join(stateDir, "flowspool"), spool.Options{MaxBytes: maxBytes, Logger: log.With("component", "spool")})
	if err != nil {
		return nil, fmt.Errorf("flow spool: %w", err)
	}
	st := sp.Stats()
	log.Info("flow spool open", "bytes", st.Bytes, "max_bytes", st.MaxBytes, "next_seq", st.Next, "torn_tails_dropped", st.Torn, "full_policy", policy)
	r := &flowReporter{log: log, sp: sp, events: make(chan controlproto.FlowEvent, FlowQueue), policy: policy, now: time.Now,
		wake: make(chan struct{}, 1), refused: func() uint64 { return 0 }, queueDropped: func() uint64 { return 0 }}
	empty := map[string]string{}
	r.classes.Store(&empty)
	r.ackedSeq = sp.Acked()
	return r, nil
}

func (r *flowReporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// admit is the authorizer's Config.Admit: while the spool is full, new
// flows are refused per the policy.
func (r *flowReporter) admit(app string) bool {
	if !r.sp.Full() {
		return true
	}
	switch r.policy {
	case SpoolFailOpen:
		return true
	case SpoolFailClosed:
		return false
	}
	c := (*r.classes.Load())[app]
	return c == "internal" || c == "public" // phi, or unknown: refused
}

// setApps records the apps' classifications from a map.
func (r *flowReporter) setApps(apps []controlproto.App) {
	m := make(map[string]string, len(apps))
	for _, a := range apps {
		m[a.Name] = a.Classification
	}
	r.classes.Store(&m)
}

// connState is the control client's OnState.
//
// When the connection goes down, flow frames still queued for it are
// dropped: the next connection starts from the oldest unacknowledged
// record, and the controller skips what it has recorded by sequence
// number, so a stale frame of later records sent first on it would make
// the controller skip (and acknowledge) the earlier records the lost
// connection never delivered.
func (r *flowReporter) connState(up bool) {
	r.sendMu.Lock()
	r.ctrlCaps.Store(0)
	r.connGen.Add(1)
	if !up && r.discard != nil {
		if n := r.discard(isFlowEvents); n > 0 {
			r.log.Info("control connection down: flow frames queued for it dropped; the next connection resends from the oldest unacknowledged record", "frames", n)
		}
	}
	r.sendMu.Unlock()
	r.poke()
}

func isFlowEvents(f *controlproto.Frame) bool { return f.Type == controlproto.TypeFlowEvents }

// controllerCaps notes the controller's capability from a whole map. A
// map made from a delta carries none (0): the first map of a connection
// is always whole and said it.
func (r *flowReporter) controllerCaps(c int) {
	if c <= 0 {
		if r.ctrlCaps.Load() != 0 {
			return
		}
		c = 1 // older than 7: no capability on maps
	}
	if r.ctrlCaps.Swap(int64(c)) != int64(c) {
		r.poke()
	}
}

// ack takes the controller's acknowledgement.
func (r *flowReporter) ack(a *controlproto.FlowAck) {
	if a == nil || a.SpoolID != r.sp.ID() {
		r.log.Warn("flow acknowledgement for another spool; ignored")
		return
	}
	if err := r.sp.Ack(a.Seq); err != nil {
		r.log.Error("trim the flow spool", "err", err)
	}
	r.mu.Lock()
	r.ackedSeq = max(r.ackedSeq, a.Seq)
	r.mu.Unlock()
	r.poke()
}

func (r *flowReporter) acked() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ackedSeq
}

// status is the spool's state as the controller is told.
func (r *flowReporter) status() *controlproto.SpoolStatus {
	st := r.sp.Stats()
	return &controlproto.SpoolStatus{Full: st.Full, FullCount: st.FullCount, Bytes: st.Bytes, MaxBytes: st.MaxBytes,
		Lost: r.lost.Load() + r.queueDropped(), Refused: r.refused(), Policy: r.policy, Torn: st.Torn}
}

// writer moves queued events into the spool until ctx ends, then spools
// what is still queued.
func (r *flowReporter) writer(ctx context.Context) {
	batch := make([]controlproto.FlowEvent, 0, writeBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
		drain:
			for len(batch) < writeBatch {
				select {
				case e := <-r.events:
					batch = append(batch, e)
				default:
					break drain
				}
			}
			if len(batch) > 0 {
				r.write(batch)
			}
			return
		case e := <-r.events:
			batch = append(batch, e)
		}
	more:
		for len(batch) < writeBatch {
			select {
			case e := <-r.events:
				batch = append(batch, e)
			default:
				break more
			}
		}
		r.write(batch)
	}
}

// write appends one batch to the spool.
func (r *flowReporter) write(batch []controlproto.FlowEvent) {
	data := make([][]byte, 0, len(batch))
	for i := range batch {
		b, err := json.Marshal(&batch[i])
		if err != nil {
			r.lost.Add(1)
			r.log.Error("encode flow event; dropped", "err", err)
			continue
		}
		data = append(data, b)
	}
	_, n, err := r.sp.Append(data)
	if err == nil {
		r.poke()
		return
	}
	r.lost.Add(uint64(len(data) - n)) // before the sender hears of it
	r.poke()
	now := r.now()
	if errors.Is(err, spool.ErrFull) {
		if !r.fullLogged || now.Sub(r.logFullAt) > 10*time.Second {
			st := r.sp.Stats()
			r.log.Error("FLOW SPOOL FULL: flow records are being lost and new flows refused per --spool-full until the controller acknowledges",
				"policy", r.policy, "bytes", st.Bytes, "max_bytes", st.MaxBytes, "lost", r.lost.Load(), "refused", r.refused())
			r.fullLogged, r.logFullAt = true, now
		}
		r.poke() // the controller hears of it in the next frame
		return
	}
	r.log.Error("write the flow spool; records lost", "err", err, "lost", r.lost.Load())
}

// sendState is the sender's view of one connection.
type sendState struct {
	cur        *spool.Cursor
	gen        uint64    // the connection
	lastSent   uint64    // highest seq sent on it
	lastAcked  uint64    // highest acknowledged when last looked
	progressAt time.Time // last ack progress (or start of the window)
	lastFrame  time.Time
	wasFull    bool
}

// sender sends spooled records to the controller until ctx ends.
func (r *flowReporter) sender(ctx context.Context, send func(*controlproto.Frame) bool) {
	st := &sendState{}
	defer func() {
		if st.cur != nil {
			st.cur.Close()
		}
	}()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		if g := r.connGen.Load(); g != st.gen || st.cur == nil {
			// A new connection: from the oldest unacknowledged record.
			if st.cur != nil {
				st.cur.Close()
			}
			acked := r.acked()
			*st = sendState{cur: r.sp.Cursor(acked + 1), gen: g, progressAt: r.now(), lastAcked: acked, lastSent: acked}
		}
		if caps := r.ctrlCaps.Load(); caps > 0 {
			r.sendSome(ctx, send, caps, st)
		}
		timer.Reset(time.Second)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// rewind makes the sender read again from the oldest unacknowledged
// record.
func (r *flowReporter) rewind(st *sendState) {
	st.cur.Close()
	acked := r.acked()
	st.cur, st.lastSent, st.progressAt = r.sp.Cursor(acked+1), acked, r.now()
}

// sendSome sends what the window allows.
func (r *flowReporter) sendSome(ctx context.Context, send func(*controlproto.Frame) bool, caps int64, st *sendState) {
	now := r.now()
	numbered := caps >= controlproto.MinFlowAckCapability
	acked := r.acked()
	if acked > st.lastAcked {
		st.lastAcked, st.progressAt = acked, now
	}
	if numbered && st.lastSent > acked && now.Sub(st.progressAt) > ackTimeout {
		r.log.Warn("no flow acknowledgement from the controller; resending from the oldest unacknowledged record", "acked", acked, "sent", st.lastSent)
		r.rewind(st)
	}
	for ctx.Err() == nil {
		if numbered && st.lastSent > acked+maxInflight {
			return // window full: wait for an ack
		}
		recs, err := st.cur.Next(sendBatch)
		if err != nil {
			r.log.Error("read the flow spool", "err", err)
		}
		full := r.sp.Full()
		heartbeat := numbered && (now.Sub(st.lastFrame) >= controlproto.FlowHeartbeat || full != st.wasFull)
		if len(recs) == 0 && !heartbeat {
			return
		}
		evs := make([]controlproto.FlowEvent, 0, len(recs))
		for _, rec := range recs {
			var e controlproto.FlowEvent
			if err := json.Unmarshal(rec.Data, &e); err != nil {
				r.log.Error("spooled flow event unreadable; skipped", "seq", rec.Seq, "err", err)
				continue
			}
			if numbered {
				e.Seq = rec.Seq
			}
			evs = append(evs, e)
		}
		fe := &controlproto.FlowEvents{Events: evs}
		if numbered {
			fe.SpoolID, fe.SentAt, fe.Spool = r.sp.ID(), r.now().UTC(), r.status()
		}
		// Queued only for the connection the cursor was made for: once
		// it went down, the sender starts again from the oldest
		// unacknowledged record.
		r.sendMu.Lock()
		stale := r.connGen.Load() != st.gen
		queued := !stale && send(&controlproto.Frame{Type: controlproto.TypeFlowEvents, FlowEvents: fe})
		r.sendMu.Unlock()
		if stale {
			return
		}
		if !queued {
			r.rewind(st) // the connection's queue is full: read these again later
			return
		}
		st.lastFrame, st.wasFull = now, full
		if len(recs) == 0 {
			return
		}
		last := recs[len(recs)-1].Seq
		if !numbered {
			// An older controller acknowledges nothing: handed over is
			// as far as it goes (today's behaviour).
			if err := r.sp.Ack(last); err != nil {
				r.log.Error("trim the flow spool", "err", err)
			}
			r.mu.Lock()
			r.ackedSeq = max(r.ackedSeq, last)
			r.mu.Unlock()
		}
		if st.lastSent <= acked {
			st.progressAt = now // the window was empty: the ack clock starts now
		}
		st.lastSent = last
		acked = r.acked()
	}
}

// close closes the spool once the writer and sender have stopped.
func (r *flowReporter) close() {
	if err := r.sp.Close(); err != nil {
		r.log.Error("close the flow spool", "err", err)
	}
}
