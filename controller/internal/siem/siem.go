// Package siem streams the audit log to SIEMs: every record, in seq
// order, to each configured sink (syslog RFC 5424 over TCP or TLS, or
// OCSF JSON lines over TCP, TLS or to a file), each sink with its own
// durable cursor, and after the records each signed checkpoint that
// covers them.
//
// # Delivery
//
// One goroutine per sink (owned by [Exporter.Run]) polls the log's size
// every Poll (500 ms), reads the records after its cursor in batches of
// Batch (DefaultBatch, 2,048) in seq order (store.ScanAuditLog, read transactions only:
// the exporter never writes the store and never blocks a change), writes
// a batch as one write and, once the sink has accepted it, moves its
// cursor past it:
//
//   - TCP and TLS: "accepted" is written and acknowledged by the
//     receiver's TCP (the socket's send queue is empty while the
//     connection is still established; ack_linux.go). A receiver that
//     closed the connection is seen (its FIN) before the next write, and
//     bytes it reset are not acknowledged, so they are sent again on the
//     next connection.
//   - file: written and fsynced.
//
// The cursor is a 0600 file, DATA-DIR/siem/NAME.cursor, replaced
// atomically (pkg/atomicfile) after each accepted batch. It is a file and
// not a table: the rule that every store write carries its own audit
// record would make each cursor step a record, which the exporter would
// then have to export, for ever; and it is the state of one controller's
// deliveries, not part of the hospital's configuration or trail.
//
// What that guarantees (docs/audit.md, "SIEM export"):
//
//   - No record is skipped: the cursor moves only past accepted bytes, and
//     everything after it is sent again after any error, reconnect or
//     restart.
//   - No record is sent twice by a clean stop of the controller (the
//     batch in flight is finished, up to its ack timeout, and its cursor
//     written) nor by a receiver that closes its connection (what it did
//     not acknowledge is resent, what it acknowledged is not).
//   - A crash (kill -9, power loss) between a batch's acknowledgement and
//     its cursor write sends that batch, at most Batch records, once more.
//     A receiver that stalls (acknowledges nothing for AckTimeout) gets the
//     records of the batch in flight that it had not acknowledged once
//     more (over TLS: the whole batch), since the closed connection may
//     still deliver them. A receiver that crashes after acknowledging in
//     TCP but before reading loses those bytes: a receiver that needs no
//     loss then must acknowledge at the application level (RELP), which
//     syslog over TCP does not have. Every message carries the record's
//     seq, by which a SIEM can drop a repeat. A file sink has
//     no such window: at start it reads the highest seq in the file's
//     tail (and drops a torn last line), which wins over the cursor.
//
// # Backpressure
//
// A sink that is slow or down only falls behind: changes and the audit
// log never wait for it. Its lag (log size minus cursor) is shown by
// GET /v1/audit/sinks (cordonctl audit sinks) and logged; when it passes
// AlertLag records, or the sink has been behind for AlertAfter, one
// audit.export.lag alert is recorded, and one all-clear when it has
// caught up again.
package siem

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/atomicfile"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// Log is what the exporter reads: the store.
type Log interface {
	AuditLogSize(ctx context.Context) (int64, error)
	ScanAuditLog(ctx context.Context, from, to int64, fn func(e store.AuditEvent, leaf tlog.Hash, logged bool) error) error
	LatestCheckpoint(ctx context.Context) (store.Checkpoint, error)
}

// Recorder records the lag alerts: the state owner.
type Recorder interface {
	Record(ctx context.Context, o state.Origin, evs ...store.AuditEvent) error
}

// Config wires an Exporter.
type Config struct {
	Log      Log      // required
	Recorder Recorder // required: records audit.export.lag
	// Dir holds the cursor files (DATA-DIR/siem), made 0700.
	Dir   string
	Sinks []SinkConfig
	// Hostname is the syslog HOSTNAME; default os.Hostname.
	Hostname string
	// Origin is the log's name (its checkpoint key), the OCSF
	// metadata.log_provider.
	Origin string
	Now    func() time.Time // default time.Now
	Poll   time.Duration    // default 500ms
	Batch  int              // records per write; default DefaultBatch
	// Backoff is the first wait after a failed connection or write; it
	// doubles up to MaxBackoff. Defaults 1 s and 30 s.
	Backoff    time.Duration
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// DefaultBatch is how many records one write carries.
const DefaultBatch = 2048

// Exporter streams the log to every sink.
type Exporter struct {
	cfg   Config
	sinks []*sink
}

// Status is one sink's state, for GET /v1/audit/sinks.
type Status struct {
	Name       string
	Format     Format
	Transport  string
	Target     string
	Cursor     int64 // seq of the last record the sink accepted
	Checkpoint int64 // size of the last checkpoint it accepted
	LogSize    int64 // the log's size when last looked at
	Lag        int64 // LogSize - Cursor
	Connected  bool
	// BehindSince is when the sink last fell behind and has not caught
	// up since; zero while caught up.
	BehindSince time.Time
	Alerting    bool // an audit.export.lag alert is open
	LastError   string
	LastErrorAt time.Time
	LastSent    time.Time
	Sent        int64 // records sent since the controller started
}

// New checks the sinks, makes Dir and reads each sink's cursor.
func New(cfg Config) (*Exporter, error) {
	if cfg.Log == nil || cfg.Recorder == nil {
		return nil, errors.New("siem.New: Log and Recorder are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.Backoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	cfg.Hostname = Hostname(cfg.Hostname)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("siem cursor directory: %w", err)
	}
	// The log's size now, so that a sink's lag is right before its first
	// poll.
	size, err := cfg.Log.AuditLogSize(context.Background())
	if err != nil {
		return nil, fmt.Errorf("siem: %w", err)
	}
	x := &Exporter{cfg: cfg}
	for _, sc := range cfg.Sinks {
		if err := sc.check(); err != nil {
			return nil, fmt.Errorf("siem sink %q: %w", sc.Name, err)
		}
		s := &sink{x: x, cfg: sc, path: filepath.Join(cfg.Dir, sc.Name+".cursor"),
			log: cfg.Logger.With("sink", sc.Name)}
		if sc.Transport == TransportTLS {
			t, err := tlsConfig(sc)
			if err != nil {
				return nil, fmt.Errorf("siem sink %q: %w", sc.Name, err)
			}
			s.tls = t
		}
		c, err := readCursor(s.path)
		if err != nil {
			return nil, fmt.Errorf("siem sink %q: %w", sc.Name, err)
		}
		s.cur, s.size = c, size
		s.publish()
		x.sinks = append(x.sinks, s)
	}
	return x, nil
}

// Run runs every sink until ctx ends; each finishes the batch it is
// sending (up to its ack timeout) and writes its cursor before Run
// returns.
func (x *Exporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range x.sinks {
		wg.Go(func() { s.run(ctx) })
	}
	wg.Wait()
}

// Status returns every sink's state, in configuration order.
func (x *Exporter) Status() []Status {
	out := make([]Status, len(x.sinks))
	for i, s := range x.sinks {
		out[i] = *s.status.Load()
	}
	return out
}

// cursor is a sink's progress, as stored in its cursor file.
type cursor struct {
	Seq        int64 `json:"seq"`        // last record accepted
	Checkpoint int64 `json:"checkpoint"` // size of the last checkpoint accepted
}

func readCursor(path string) (cursor, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("read cursor: %w", err)
	}
	var c cursor
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Seq < 0 || c.Checkpoint < 0 {
		return cursor{}, fmt.Errorf("cursor file %s is damaged (%v): fix it or delete it to send the whole log again", path, err)
	}
	return c, nil
}

func writeCursor(path string, c cursor) error {
	b, _ := json.Marshal(c)
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// sink is one sink's goroutine state; only run's goroutine touches the
// fields above status.
type sink struct {
	x    *Exporter
	cfg  SinkConfig
	path string
	tls  *tls.Config
	log  *slog.Logger

	conn        transport
	cur         cursor
	buf         []byte
	ends        []int // where each record of buf ends
	line        []byte
	size        int64
	behindSince time.Time
	alerting    bool
	lastErr     error
	lastErrAt   time.Time
	lastSent    time.Time
	sent        int64

	status atomic.Pointer[Status]
}

// run is the sink's loop.
func (s *sink) run(ctx context.Context) {
	defer s.publish()
	defer s.closeConn()
	backoff := s.x.cfg.Backoff
	var t *time.Timer
	for {
		if ctx.Err() != nil {
			return
		}
		busy, err := s.step(ctx)
		wait := s.x.cfg.Poll
		switch {
		case err != nil && ctx.Err() == nil:
			if s.lastErr == nil || s.lastErr.Error() != err.Error() {
				s.log.Warn("SIEM sink not accepting; the records wait and will be sent", "target", s.cfg.Target(), "err", err, "cursor", s.cur.Seq, "lag", s.size-s.cur.Seq)
			}
			s.lastErr, s.lastErrAt = err, s.x.cfg.Now()
			s.closeConn()
			wait = backoff
			backoff = min(2*backoff, s.x.cfg.MaxBackoff)
		case err == nil && busy:
			backoff = s.x.cfg.Backoff
			s.publish()
			continue
		case err == nil:
			backoff = s.x.cfg.Backoff
		}
		s.publish()
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		} else {
			t.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sink) publish() {
	st := &Status{Name: s.cfg.Name, Format: s.cfg.Format, Transport: s.cfg.Transport, Target: s.cfg.Target(),
		Cursor: s.cur.Seq, Checkpoint: s.cur.Checkpoint, LogSize: s.size, Lag: max(s.size-s.cur.Seq, 0),
		Connected: s.conn != nil, BehindSince: s.behindSince, Alerting: s.alerting,
		LastErrorAt: s.lastErrAt, LastSent: s.lastSent, Sent: s.sent}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	s.status.Store(st)
}

func (s *sink) closeConn() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

func (s *sink) connect(ctx context.Context) error {
	var (
		t   transport
		err error
	)
	switch s.cfg.Transport {
	case TransportFile:
		var f *fileSink
		f, err = openFile(s.cfg.Path, s.cfg.MaxSize, s.x.cfg.Now)
		if err == nil {
			t = f
		}
	default:
		var c *streamConn
		c, err = dialStream(ctx, s.cfg, s.tls)
		if err == nil {
			t = c
		}
	}
	if err != nil {
		return err
	}
	if r, ok := t.(resumer); ok {
		seq, cp := r.Resume()
		if seq > s.cur.Seq || cp > s.cur.Checkpoint {
			// A crash after the sink had the bytes but before the cursor
			// was written: the sink knows better.
			c := cursor{Seq: max(seq, s.cur.Seq), Checkpoint: max(cp, s.cur.Checkpoint)}
			if err := writeCursor(s.path, c); err != nil {
				t.Close()
				return err
			}
			s.log.Info("SIEM sink resumes after what its file holds", "cursor_file", s.cur.Seq, "file", seq)
			s.cur = c
		}
	}
	if s.lastErr != nil {
		s.log.Info("SIEM sink accepting again", "target", s.cfg.Target(), "cursor", s.cur.Seq)
	}
	s.lastErr = nil
	s.conn = t
	return nil
}

// step sends the next batch, or the next checkpoint; busy says it did
// something and more may be waiting.
func (s *sink) step(ctx context.Context) (busy bool, err error) {
	size, err := s.x.cfg.Log.AuditLogSize(ctx)
	if err != nil {
		return false, err
	}
	s.size = size
	if s.cur.Seq > size {
		// The database was restored from a backup older than what was
		// sent: send what is appended from now on. The SIEM then holds two
		// records of some seqs; the log's checkpoints tell which is real.
		s.log.Error("SIEM sink's cursor is past the end of the audit log: the database was restored or replaced; sending from the log's end", "cursor", s.cur.Seq, "log_size", size)
		s.cur = cursor{Seq: size, Checkpoint: min(s.cur.Checkpoint, size)}
		if err := writeCursor(s.path, s.cur); err != nil {
			return false, err
		}
	}
	s.checkLag(ctx)
	cp, note, haveCP, err := s.latestCheckpoint(ctx)
	if err != nil {
		return false, err
	}
	pendingCP := haveCP && cp.Size > s.cur.Checkpoint
	if size == s.cur.Seq && !(pendingCP && cp.Size <= s.cur.Seq) {
		return false, nil
	}
	if s.conn == nil {
		if err := s.connect(ctx); err != nil {
			return false, err
		}
		if size == s.cur.Seq && !(pendingCP && cp.Size <= s.cur.Seq) {
			return false, nil // the file held it all already
		}
	}
	next := s.cur
	s.buf = s.buf[:0]
	s.ends = s.ends[:0]
	if size > s.cur.Seq {
		to := min(size, s.cur.Seq+int64(s.x.cfg.Batch))
		err := s.x.cfg.Log.ScanAuditLog(ctx, s.cur.Seq+1, to, func(e store.AuditEvent, leaf tlog.Hash, logged bool) error {
			if e.Seq != next.Seq+1 {
				return fmt.Errorf("audit record %d is missing (the next stored is %d): run cordonctl audit verify", next.Seq+1, e.Seq)
			}
			r := e.Record()
			s.line = r.AppendCanonical(s.line[:0])
			if !logged {
				leaf = tlog.RecordHash(s.line)
			}
			var err error
			s.buf, err = s.appendRecord(s.buf, r, s.line, leaf)
			if err != nil {
				return fmt.Errorf("encode audit record %d: %w", e.Seq, err)
			}
			next.Seq = e.Seq
			s.ends = append(s.ends, len(s.buf))
			return nil
		})
		if err != nil {
			return false, err
		}
		if next.Seq != to {
			return false, fmt.Errorf("audit log read stopped at %d of %d", next.Seq, to)
		}
	}
	if pendingCP && cp.Size <= next.Seq {
		var err error
		s.buf, err = s.appendCheckpoint(s.buf, cp, note)
		if err != nil {
			return false, err
		}
		next.Checkpoint = cp.Size
	}
	if next == s.cur {
		return false, nil
	}
	// The batch is finished even when ctx ends meanwhile: a clean stop
	// must not leave accepted bytes behind the cursor.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ackTimeout())
	defer cancel()
	n, err := s.conn.Write(wctx, s.buf)
	if err != nil {
		// The records wholly in what the receiver acknowledged count.
		done := cursor{Seq: s.cur.Seq + int64(sort.SearchInts(s.ends, n+1)), Checkpoint: s.cur.Checkpoint}
		if n == len(s.buf) {
			done = next
		}
		if done != s.cur {
			if werr := writeCursor(s.path, done); werr == nil {
				s.sent += done.Seq - s.cur.Seq
				s.cur = done
			}
		}
		return false, err
	}
	if err := writeCursor(s.path, next); err != nil {
		return false, fmt.Errorf("sent up to record %d, but its cursor was not saved (it will be sent again): %w", next.Seq, err)
	}
	s.sent += next.Seq - s.cur.Seq
	s.cur = next
	s.lastSent = s.x.cfg.Now()
	return true, nil
}

func (s *sink) appendRecord(b []byte, r auditlog.Record, line []byte, leaf tlog.Hash) ([]byte, error) {
	if s.cfg.Format == FormatSyslog {
		return appendSyslogRecord(b, s.x.cfg.Hostname, r, line, leaf), nil
	}
	return appendOCSFRecord(b, s.x.cfg.Origin, r, line, leaf)
}

func (s *sink) appendCheckpoint(b []byte, c auditlog.Checkpoint, note []byte) ([]byte, error) {
	if s.cfg.Format == FormatSyslog {
		return appendSyslogCheckpoint(b, s.x.cfg.Hostname, c, note), nil
	}
	return appendOCSFCheckpoint(b, c, note)
}

// latestCheckpoint reads the latest stored checkpoint (its text; the
// signature is the SIEM's to check with the log's public key).
func (s *sink) latestCheckpoint(ctx context.Context) (auditlog.Checkpoint, []byte, bool, error) {
	sc, err := s.x.cfg.Log.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return auditlog.Checkpoint{}, nil, false, nil
	}
	if err != nil {
		return auditlog.Checkpoint{}, nil, false, err
	}
	text, _, ok := bytes.Cut(sc.Note, []byte("\n\n"))
	if !ok {
		return auditlog.Checkpoint{}, nil, false, fmt.Errorf("stored checkpoint of size %d is not a signed note", sc.Size)
	}
	c, err := auditlog.ParseCheckpointBody(string(text) + "\n")
	if err != nil {
		return auditlog.Checkpoint{}, nil, false, fmt.Errorf("stored checkpoint of size %d: %w", sc.Size, err)
	}
	return c, sc.Note, true, nil
}

// checkLag tracks how long the sink has been behind and raises or clears
// the alert.
func (s *sink) checkLag(ctx context.Context) {
	lag := s.size - s.cur.Seq
	now := s.x.cfg.Now()
	if lag <= 0 {
		if s.alerting {
			s.alert(ctx, audit.Success, lag)
			s.log.Info("SIEM sink caught up", "cursor", s.cur.Seq)
		}
		s.behindSince, s.alerting = time.Time{}, false
		return
	}
	if s.behindSince.IsZero() {
		s.behindSince = now
	}
	if !s.alerting && (lag >= s.cfg.alertLag() || now.Sub(s.behindSince) >= s.cfg.alertAfter()) {
		s.alerting = true
		s.log.Error("SIEM sink is behind the audit log", "target", s.cfg.Target(), "lag", lag, "behind_since", s.behindSince, "err", s.lastErr)
		s.alert(ctx, audit.Raised, lag)
	}
}

func (s *sink) alert(ctx context.Context, o audit.Outcome, lag int64) {
	d := map[string]string{"target": s.cfg.Target(), "lag": strconv.FormatInt(lag, 10),
		"cursor": strconv.FormatInt(s.cur.Seq, 10), "behind_since": s.behindSince.UTC().Format(time.RFC3339)}
	if s.lastErr != nil {
		d["error"] = s.lastErr.Error()
	}
	ev := store.AuditEvent{Type: audit.AuditExportLag, Outcome: string(o), Subject: s.cfg.Name, Details: d}
	if err := s.x.cfg.Recorder.Record(ctx, state.Origin{Actor: "controller"}, ev); err != nil {
		s.log.ErrorContext(ctx, "audit event lost", "event", ev.Type, "err", err)
	}
}
