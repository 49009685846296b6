package siem

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// env is a controller's data dir: a real SQLite store, the state owner
// and the ledger that signs checkpoints.
type env struct {
	batch int // records per write; 0: DefaultBatch
	dir   string
	st    *sqlite.Store
	state *state.State
	led   *ledger.Ledger
	mu    sync.Mutex
	clock time.Time
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), clock: t0}
	st, err := sqlite.Open(context.Background(), filepath.Join(e.dir, "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := ledger.LoadKey(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	e.state = state.New(state.Config{Store: st, Now: e.now})
	e.led = ledger.New(ledger.Config{Store: st, State: e.state, Key: key, Now: e.now})
	return e
}

// now is the injected clock: it moves only when a test moves it.
func (e *env) now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clock
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.clock = e.clock.Add(d)
	e.mu.Unlock()
}

// add appends n records, as a gateway's flow reports are, and signs a
// checkpoint over them.
func (e *env) add(t testing.TB, n int) {
	t.Helper()
	evs := make([]store.AuditEvent, 0, 100)
	for i := range n {
		evs = append(evs, store.AuditEvent{Type: audit.FlowAllow, Outcome: "allow", Subject: "ehr-" + strconv.Itoa(i),
			Details: map[string]string{"proto": "tcp", "src": "100.64.0.7:40000", "dst": "10.20.0.10:443", "gateway": "gw1", "user": `nurse "x"]`}})
		if len(evs) == cap(evs) || i == n-1 {
			if err := e.state.Record(context.Background(), state.Origin{Actor: "gateway:gw1"}, evs...); err != nil {
				t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	if _, err := e.led.Sign(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (e *env) size(t testing.TB) int64 {
	n, err := e.st.AuditLogSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// run starts an exporter over the sinks; stop cancels it and waits.
func (e *env) run(t testing.TB, sinks ...SinkConfig) (x *Exporter, stop func()) {
	t.Helper()
	x, err := New(Config{Log: e.st, Recorder: e.state, Dir: filepath.Join(e.dir, "siem"), Sinks: sinks, Hostname: "ctl-1",
		Origin: e.led.Key().Origin(), Now: e.now, Poll: 5 * time.Millisecond, Backoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, Batch: e.batch})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return x, stop
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// caughtUp waits until every sink's cursor is at the log's end.
func caughtUp(t testing.TB, e *env, x *Exporter) {
	t.Helper()
	waitFor(t, "the sinks to catch up", func() error {
		n := e.size(t)
		for _, s := range x.Status() {
			if s.Cursor != n {
				return fmt.Errorf("sink %s at %d of %d (%s)", s.Name, s.Cursor, n, s.LastError)
			}
		}
		return nil
	})
}

// receiver is a syslog (or JSON lines) server on a real TCP or TLS
// listener that parses every frame strictly as it arrives.
type receiver struct {
	t      testing.TB
	format Format
	tls    *tls.Config
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	msgs  []syslogMsg
	lines [][]byte
	errs  []error
	wg    sync.WaitGroup
}

func startReceiver(t testing.TB, format Format, tlsCfg *tls.Config, addr string) *receiver {
	t.Helper()
	r := &receiver{t: t, format: format, tls: tlsCfg, addr: addr}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) start() {
	r.t.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.tls != nil {
		ln = tls.NewListener(ln, r.tls)
	}
	r.mu.Lock()
	r.ln, r.addr, r.conns = ln, ln.Addr().String(), map[net.Conn]bool{}
	r.mu.Unlock()
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = true
			r.mu.Unlock()
			r.wg.Go(func() { r.serve(c) })
		}
	})
}

func (r *receiver) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for first := true; ; first = false {
		var err error
		if r.format == FormatSyslog {
			var f []byte
			if f, err = readFrame(br); err == nil {
				var m syslogMsg
				if m, err = parse5424(f); err == nil {
					r.mu.Lock()
					r.msgs = append(r.msgs, m)
					r.mu.Unlock()
				}
			}
		} else {
			var line []byte
			if line, err = br.ReadBytes('\n'); err == nil {
				r.mu.Lock()
				r.lines = append(r.lines, line)
				r.mu.Unlock()
			}
		}
		if err != nil {
			// A refused handshake (a client with the wrong CA) and a
			// sender's reset between frames are not the stream's fault.
			handshake := first && r.tls != nil
			if !handshake && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset by peer") {
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}
			return
		}
	}
}

// stop closes the listener and every connection (a clean close: what
// was read is kept).
func (r *receiver) stop() {
	r.mu.Lock()
	ln := r.ln
	r.ln = nil
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	r.wg.Wait()
}

// seqs returns the seq of every record message received, in order, and
// the sizes of the checkpoints, failing on a parse error or a message
// whose leaf is not the hash of its MSG.
func (r *receiver) seqs() (seqs, checkpoints []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, err := range r.errs {
		r.t.Fatalf("receiver: %v", err)
	}
	for _, m := range r.msgs {
		if m.MsgID == MsgIDCheckpoint {
			v, _ := m.param(sdCheckpoint, "size")
			n, _ := strconv.ParseInt(v, 10, 64)
			checkpoints = append(checkpoints, n)
			continue
		}
		v, _ := m.param(sdID, "seq")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			r.t.Fatalf("message without seq: %+v", m)
		}
		leaf, _ := m.param(sdID, "leaf")
		if h, err := tlog.ParseHash(leaf); err != nil || h != tlog.Hash(sha256.Sum256(append([]byte{0}, m.Msg...))) {
			r.t.Fatalf("seq %d: leaf %q is not the hash of MSG", n, leaf)
		}
		seqs = append(seqs, n)
	}
	for _, l := range r.lines {
		var ev ocsfEvent
		if err := json.Unmarshal(l, &ev); err != nil {
			r.t.Fatalf("line %q: %v", l, err)
		}
		if cp := ev.Unmapped.Cordon.Checkpoint; cp != nil {
			checkpoints = append(checkpoints, cp.Size)
			continue
		}
		seqs = append(seqs, ev.Metadata.Sequence)
	}
	return seqs, checkpoints
}

// exactlyOnce checks that seqs is 1..n, each once, in order.
func exactlyOnce(t testing.TB, seqs []int64, n int64) {
	t.Helper()
	if int64(len(seqs)) != n {
		t.Errorf("%d records received, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != int64(i)+1 {
			t.Fatalf("record %d received is seq %d (want %d): %v", i, s, i+1, around(seqs, i))
		}
	}
}

func around(s []int64, i int) []int64 { return s[max(i-3, 0):min(i+4, len(s))] }

func (r *receiver) waitRecords(t testing.TB, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d records at the receiver", n), func() error {
		s, _ := r.seqs()
		if int64(len(s)) < n {
			return fmt.Errorf("%d received", len(s))
		}
		return nil
	})
}

func tcpSink(name string, f Format, addr string) SinkConfig {
	return SinkConfig{Name: name, Format: f, Transport: TransportTCP, Address: addr}
}

// TestExportSyslogExactlyOnce: records reach a syslog receiver over TCP
// in seq order, each once, with the checkpoint that covers them after
// them, across a restart of the exporter (a controller restart: a new
// Exporter reading the same cursor) and a restart of the receiver
// (which closes its connections), with records appended while each was
// down.
func TestExportSyslogExactlyOnce(t *testing.T) {
	e := newEnv(t)
	e.add(t, 1500)
	r := startReceiver(t, FormatSyslog, nil, "")
	x, stop := e.run(t, tcpSink("splunk", FormatSyslog, r.addr))
	caughtUp(t, e, x)
	r.waitRecords(t, e.size(t))

	// The controller restarts; records arrive meanwhile.
	stop()
	e.add(t, 700)
	x, stop = e.run(t, tcpSink("splunk", FormatSyslog, r.addr))
	caughtUp(t, e, x)

	// The receiver restarts; records arrive meanwhile.
	r.waitRecords(t, e.size(t))
	r.stop()
	e.add(t, 300)
	waitFor(t, "the sink to see the receiver gone", func() error {
		if st := x.Status()[0]; st.Connected || st.LastError == "" {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	r.start()
	caughtUp(t, e, x)
	n := e.size(t)
	r.waitRecords(t, n)
	stop()
	seqs, cps := r.seqs()
	exactlyOnce(t, seqs, n)
	if len(cps) == 0 || cps[len(cps)-1] != n {
		t.Errorf("checkpoints received %v, want the last of size %d", cps, n)
	}
	for i := 1; i < len(cps); i++ {
		if cps[i] <= cps[i-1] {
			t.Errorf("checkpoint %d sent after %d", cps[i], cps[i-1])
		}
	}
	if st := x.Status()[0]; st.Sent != n-1500 || st.Lag != 0 {
		t.Errorf("status %+v", st)
	}
	fi, err := os.Stat(filepath.Join(e.dir, "siem", "splunk.cursor"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cursor file: %v %v", fi, err)
	}
}

// TestExportReceiverStalls: a receiver that stops reading fills its
// window; the write is not acknowledged in time, the records it did
// acknowledge count, the rest are sent again on the next connection.
// When the stalled receiver wakes up and reads its old connection to the
// end, it has every record, in two runs: the old connection's from 1, the
// new one's from the first record not acknowledged; the repeats are at
// most the one batch in flight. Appending records never waits.
func TestExportReceiverStalls(t *testing.T) {
	e := newEnv(t)
	e.batch = 500
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	// The stalled receiver: accepts, reads nothing.
	stalled := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(stalled)
				return
			}
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			stalled <- c
		}
	}()
	cfg := tcpSink("slow", FormatSyslog, addr)
	cfg.AckTimeout = Duration(100 * time.Millisecond)
	x, stop := e.run(t, cfg)
	defer stop()
	e.add(t, 3000) // never blocked by the sink
	waitFor(t, "the write to time out", func() error {
		if st := x.Status()[0]; !strings.Contains(st.LastError, "acknowledge") {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	// The controller stops (finishing, or timing out, the batch in
	// flight); the cursor it leaves is what was acknowledged.
	stop()
	ln.Close()
	acked := x.Status()[0].Cursor
	// The receiver wakes up and reads its old connections to the end:
	// each holds a run of records from where the cursor was when it was
	// opened.
	var runs [][]int64
	for c := range stalled {
		b, _ := io.ReadAll(c)
		c.Close()
		msgs, _ := parseFrames(b) // a cut last frame is dropped, as a receiver drops it
		var run []int64
		for _, m := range msgs {
			v, _ := m.param(sdID, "seq")
			n, _ := strconv.ParseInt(v, 10, 64)
			run = append(run, n)
		}
		if len(run) > 0 {
			runs = append(runs, run)
		}
	}
	var old []int64 // every record the old connections delivered, once
	repeated := 0
	for i, run := range runs {
		for j, s := range run {
			if s != run[0]+int64(j) {
				t.Fatalf("connection %d: record %d is seq %d", i, j, s)
			}
		}
		next := int64(len(old)) + 1
		if run[0] > next {
			t.Fatalf("connection %d starts at seq %d: records from %d lost", i, run[0], next)
		}
		if over := int(next - run[0]); over > e.batch {
			t.Fatalf("connection %d repeats %d records, more than a batch", i, over)
		} else if over > 0 {
			repeated += min(over, len(run))
		}
		for _, s := range run {
			if s == int64(len(old))+1 {
				old = append(old, s)
			}
		}
	}
	r := startReceiver(t, FormatSyslog, nil, addr)
	cfg.AckTimeout = 0 // the default: a loaded machine must not time out a healthy receiver
	x, stop = e.run(t, cfg)
	caughtUp(t, e, x)
	n := e.size(t)
	r.waitRecords(t, n-acked)
	stop()
	if int64(len(old)) < acked {
		t.Fatalf("the old connections delivered %d records, %d were acknowledged", len(old), acked)
	}
	if len(old)-int(acked) > e.batch {
		t.Fatalf("old connections delivered %d records past the %d acknowledged", len(old)-int(acked), acked)
	}
	repeated += len(old) - int(acked)
	seqs, _ := r.seqs()
	if len(seqs) == 0 || seqs[0] != acked+1 {
		t.Fatalf("new connection starts at %v, want %d", seqs[:min(1, len(seqs))], acked+1)
	}
	for i, s := range seqs {
		if s != acked+1+int64(i) {
			t.Fatalf("new connection: record %d is seq %d", i, s)
		}
	}
	if last := seqs[len(seqs)-1]; last != n {
		t.Fatalf("last record %d of %d", last, n)
	}
	t.Logf("%d records over %d stalled connections and a new one; %d acknowledged before the stop, %d repeated", n, len(runs), acked, repeated)
}

// TestExportTLS: a TLS receiver that requires a client certificate gets
// every record once, as syslog and as OCSF lines (each valid OCSF 1.3.0);
// a sink whose ca_file the receiver's certificate does not chain to
// refuses it and sends nothing.
func TestExportTLS(t *testing.T) {
	e := newEnv(t)
	e.add(t, 200)
	pki := newPKI(t)
	r := startReceiver(t, FormatSyslog, pki.serverTLS, "")
	sink := SinkConfig{Name: "sentinel", Format: FormatSyslog, Transport: TransportTLS, Address: r.addr,
		CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "siem.test"}
	wrongCA := sink
	wrongCA.Name, wrongCA.CAFile = "wrong", pki.otherCA
	ro := startReceiver(t, FormatOCSF, pki.serverTLS, "")
	ocsf := sink
	ocsf.Name, ocsf.Format, ocsf.Address = "ocsf", FormatOCSF, ro.addr
	x, stop := e.run(t, sink, wrongCA, ocsf)
	caughtUp2 := func() error {
		st := x.Status()
		if st[0].Cursor != e.size(t) {
			return fmt.Errorf("at %d", st[0].Cursor)
		}
		if !strings.Contains(st[1].LastError, "certificate") {
			return fmt.Errorf("wrong CA sink: %q", st[1].LastError)
		}
		return nil
	}
	waitFor(t, "TLS delivery", caughtUp2)
	r.waitRecords(t, e.size(t))
	ro.waitRecords(t, e.size(t))
	stop()
	seqs, _ := r.seqs()
	exactlyOnce(t, seqs, e.size(t))
	seqs, cps := ro.seqs()
	exactlyOnce(t, seqs, e.size(t))
	if len(cps) != 1 || cps[0] != e.size(t) {
		t.Errorf("OCSF checkpoints %v", cps)
	}
	schema := loadSchema(t)
	for _, l := range ro.lines {
		if err := schema.validate(l); err != nil {
			t.Fatalf("OCSF over TLS: %v\n%s", err, l)
		}
	}
	if c := x.Status()[1].Cursor; c != 0 {
		t.Errorf("sink with the wrong CA advanced to %d", c)
	}
}

// TestExportOCSFFile: OCSF lines go to a 0600 file; every line is valid
// OCSF 1.3.0. After a crash that left the cursor file behind the file
// and a torn last line, the restarted exporter drops the torn line,
// resumes after the last record the file holds, and the file has every
// record once.
func TestExportOCSFFile(t *testing.T) {
	e := newEnv(t)
	e.add(t, 300)
	path := filepath.Join(t.TempDir(), "audit.ocsf.jsonl")
	sink := SinkConfig{Name: "lake", Format: FormatOCSF, Transport: TransportFile, Path: path}
	x, stop := e.run(t, sink)
	caughtUp(t, e, x)
	stop()
	// The crash: the cursor file lags, the last write was cut short.
	if err := writeCursor(filepath.Join(e.dir, "siem", "lake.cursor"), cursor{Seq: 120}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"activity_id":1,"metadata":{"sequence":30`)
	f.Close()
	e.add(t, 50)
	x, stop = e.run(t, sink)
	caughtUp(t, e, x)
	stop()

	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", fi, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := loadSchema(t)
	var seqs, cps []int64
	for i, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if err := s.validate([]byte(line)); err != nil {
			t.Fatalf("line %d: %v\n%s", i+1, err, line)
		}
		var ev ocsfEvent
		json.Unmarshal([]byte(line), &ev)
		if cp := ev.Unmapped.Cordon.Checkpoint; cp != nil {
			cps = append(cps, cp.Size)
			continue
		}
		seqs = append(seqs, ev.Metadata.Sequence)
	}
	exactlyOnce(t, seqs, e.size(t))
	if len(cps) != 2 || cps[1] != e.size(t) {
		t.Errorf("checkpoints %v", cps)
	}
}

// TestExportOCSFRotates: with max_size the file is rotated; the pieces
// together hold every record once.
func TestExportOCSFRotates(t *testing.T) {
	e := newEnv(t)
	e.batch = 500
	e.add(t, 1300) // three batches, each past max_size
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	x, stop := e.run(t, SinkConfig{Name: "lake", Format: FormatOCSF, Transport: TransportFile, Path: path, MaxSize: 64 << 10})
	caughtUp(t, e, x)
	stop()
	files, _ := filepath.Glob(path + "*")
	if len(files) < 3 {
		t.Fatalf("files %v: not rotated", files)
	}
	// Each piece holds a run of records; in the order of their first
	// records they hold every record once.
	var pieces [][]int64
	for _, f := range files {
		if s := fileSeqs(t, f); len(s) > 0 {
			pieces = append(pieces, s)
		}
	}
	slices.SortFunc(pieces, func(a, b []int64) int { return cmp.Compare(a[0], b[0]) })
	exactlyOnce(t, slices.Concat(pieces...), e.size(t))
}

func fileSeqs(t *testing.T, path string) []int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v", path, fi.Mode().Perm())
	}
	var out []int64
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			continue
		}
		var ev ocsfEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if ev.Unmapped.Cordon.Checkpoint == nil {
			out = append(out, ev.Metadata.Sequence)
		}
	}
	return out
}

// TestExportLagAlert: a sink that is down falls behind without holding
// anything up; past alert_lag records one audit.export.lag alert is
// recorded, and when the receiver is back the sink catches up, records
// the all-clear, and the receiver has every record (the alerts too)
// once. A second sink is alerted by time alone (alert_after, on the
// injected clock).
func TestExportLagAlert(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	down := tcpSink("down", FormatSyslog, addr)
	down.AlertLag = 100
	quiet := tcpSink("quiet", FormatSyslog, addr)
	quiet.AlertLag, quiet.AlertAfter = 1_000_000, Duration(10*time.Minute)
	x, stop := e.run(t, down, quiet)
	defer stop()
	e.add(t, 99)
	alerts := func(sink, outcome string) int {
		evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Type: string(audit.AuditExportLag), Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range evs {
			if ev.Subject == sink && ev.Outcome == outcome {
				n++
			}
		}
		return n
	}
	waitFor(t, "the sink to try", func() error {
		if st := x.Status()[0]; st.LastError == "" || st.Lag != 99 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if n := alerts("down", "alert"); n != 0 {
		t.Fatalf("alert below the threshold")
	}
	e.add(t, 1)
	waitFor(t, "the lag alert", func() error {
		if alerts("down", "alert") != 1 {
			return errors.New("no alert yet")
		}
		return nil
	})
	if alerts("quiet", "alert") != 0 {
		t.Fatal("quiet sink alerted before alert_after")
	}
	e.advance(10 * time.Minute)
	waitFor(t, "the time alert", func() error {
		if alerts("quiet", "alert") != 1 {
			return errors.New("no alert yet")
		}
		return nil
	})
	e.add(t, 200)
	if n := alerts("down", "alert"); n != 1 {
		t.Fatalf("%d alerts for one episode", n)
	}
	if st := x.Status()[0]; !st.Alerting || st.BehindSince.IsZero() {
		t.Errorf("status %+v", st)
	}
	r := startReceiver(t, FormatSyslog, nil, addr)
	waitFor(t, "the all-clear", func() error {
		if alerts("down", "success") != 1 || alerts("quiet", "success") != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	caughtUp(t, e, x)
	stop()
	seqs, _ := r.seqs()
	// Two sinks to one receiver: each record twice, once per sink.
	per := map[int64]int{}
	for _, s := range seqs {
		per[s]++
	}
	for s := int64(1); s <= e.size(t); s++ {
		if per[s] != 2 {
			t.Fatalf("seq %d received %d times by two sinks", s, per[s])
		}
	}
}

// TestConfig: the config file is strict.
func TestConfig(t *testing.T) {
	good := `
hostname: ctl-1
sinks:
  - name: splunk
    format: syslog
    transport: tls
    address: siem.example:6514
    ca_file: /etc/ca.pem
  - name: lake
    format: ocsf
    transport: file
    path: /var/log/cordon/audit.jsonl
    max_size: 1000000
    alert_after: 2m
`
	f, err := ParseFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Sinks) != 2 || time.Duration(f.Sinks[1].AlertAfter) != 2*time.Minute {
		t.Fatalf("%+v", f)
	}
	for name, bad := range map[string]string{
		"empty":          ``,
		"no sinks":       `hostname: x`,
		"unknown key":    "sinks:\n  - name: a\n    format: syslog\n    transport: tcp\n    address: h:1\n    colour: red\n",
		"no transport":   "sinks:\n  - name: a\n    format: syslog\n    address: h:1\n",
		"tls without ca": "sinks:\n  - name: a\n    format: syslog\n    transport: tls\n    address: h:1\n",
		"tcp with ca":    "sinks:\n  - name: a\n    format: syslog\n    transport: tcp\n    address: h:1\n    ca_file: x\n",
		"bad format":     "sinks:\n  - name: a\n    format: cef\n    transport: tcp\n    address: h:1\n",
		"bad name":       "sinks:\n  - name: ../a\n    format: syslog\n    transport: tcp\n    address: h:1\n",
		"twice":          "sinks:\n  - {name: a, format: syslog, transport: tcp, address: 'h:1'}\n  - {name: a, format: syslog, transport: tcp, address: 'h:2'}\n",
		"half key pair":  "sinks:\n  - {name: a, format: syslog, transport: tls, address: 'h:1', ca_file: c, cert_file: x}\n",
		"syslog file":    "sinks:\n  - {name: a, format: syslog, transport: file, path: /x}\n",
		"no port":        "sinks:\n  - {name: a, format: syslog, transport: tcp, address: h}\n",
		"bad duration":   "sinks:\n  - {name: a, format: syslog, transport: tcp, address: 'h:1', alert_after: soon}\n",
	} {
		if _, err := ParseFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A syntax error names its own line: yaml.v3 says line 1 for the
	// badly indented key on line 4.
	if _, err := ParseFile([]byte("sinks:\n  - name: a\n    format: syslog\n   transport: tcp\n")); err == nil || !strings.Contains(err.Error(), "line 4, column 4: YAML syntax error") {
		t.Errorf("syntax error: %v, want it at line 4, column 4", err)
	}
}

// TestCursorDamaged: a damaged cursor file stops the start with an error
// that says what to do, instead of sending from somewhere.
func TestCursorDamaged(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.dir, "siem")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "a.cursor"), []byte(`{"seq":-4}`), 0o600)
	_, err := New(Config{Log: e.st, Recorder: e.state, Dir: dir, Sinks: []SinkConfig{tcpSink("a", FormatSyslog, "127.0.0.1:1")}})
	if err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("err %v", err)
	}
}

// pki is a CA with a server and a client certificate, and an unrelated
// CA, in files.
type pki struct {
	caFile, otherCA, clientCert, clientKey string
	serverTLS                              *tls.Config
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage, serial int64) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	ca, caKey, caDER := newCA("siem test CA")
	_, _, otherDER := newCA("another CA")
	p := &pki{caFile: write("ca.pem", "CERTIFICATE", caDER), otherCA: write("other.pem", "CERTIFICATE", otherDER)}
	srvDER, srvKey := leaf(ca, caKey, "siem.test", x509.ExtKeyUsageServerAuth, 2)
	cliDER, cliKey := leaf(ca, caKey, "cordon-controller", x509.ExtKeyUsageClientAuth, 3)
	p.clientCert = write("client.pem", "CERTIFICATE", cliDER)
	kb, _ := x509.MarshalECPrivateKey(cliKey)
	p.clientKey = write("client.key", "EC PRIVATE KEY", kb)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p.serverTLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	return p
}

var _ = auditlog.TimeLayout
