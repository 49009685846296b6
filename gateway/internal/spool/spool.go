// Package spool is the gateway's durable queue of audit records on their
// way to the controller: flow decisions are appended here, fsynced, and
// kept until the controller acknowledges them, so a controller outage or a
// gateway restart (kill -9 included) loses none that were acknowledged to
// the writer.
//
// Records. Each record gets the next sequence number of the spool (1, 2,
// 3 ...), which never repeats for the life of the spool directory. A
// spool also has an ID, random, made when the directory is first used:
// the controller keeps the highest sequence number it committed per
// gateway and spool ID, so a resend after a crash is recorded once, and a
// spool that was deleted and started again from 1 is not taken for a
// resend.
//
// On disk. The directory (0700) holds the ID file and segment files named
// after the sequence number of their first record ("00000000000000000001.seg",
// 0600). A segment is a run of records, each
//
//	u32 length of data | u32 CRC-32C of (seq, data) | u64 seq | data
//
// big-endian. Append writes a batch and fsyncs before it returns: what it
// returned is durable. A kill -9 or a power cut in the middle of a write
// leaves a torn tail: a short record or one whose checksum fails. Open
// finds it, truncates the segment there and counts it (Stats.Torn); the
// records before it stand. A bad record in the middle of a segment (the
// disk changed it) ends that segment's readable records and is counted in
// Stats.Corrupt; reading goes on with the next segment.
//
// Bounds. Segments roll over at Options.SegmentBytes; the spool holds at
// most Options.MaxBytes. An Append that does not fit returns ErrFull for
// the records left over and Full reports true until acknowledgements have
// freed an eighth of the space (so it does not flap). Ack deletes the
// segments whose records are all acknowledged (never the one being
// written, whose name carries the next sequence number across restarts).
//
// Concurrency. One writer (Append, Ack) and any number of Cursors may be
// used at once; a Cursor sees records once Append has returned them.
package spool

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// HeaderSize is the size of a record's header.
const HeaderSize = 16

// Defaults of Options.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 4 << 20
	DefaultMaxRecord    = 64 << 10
)

// ErrFull is returned by Append for records that do not fit.
var ErrFull = errors.New("spool full: the controller has not acknowledged enough records")

// ErrCorrupt says a record failed its checks.
var ErrCorrupt = errors.New("spool record corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a Spool; zero fields take their defaults.
type Options struct {
	MaxBytes     int64 // bound on all segments together
	SegmentBytes int64 // a segment rolls over past this
	MaxRecord    int   // bound on one record's data
	Logger       *slog.Logger
}

// Record is one spooled record.
type Record struct {
	Seq  uint64
	Data []byte
}

// Stats are a spool's counters.
type Stats struct {
	ID        string
	Bytes     int64  // on disk, all segments
	MaxBytes  int64  // the bound
	Next      uint64 // the sequence number the next record gets
	Acked     uint64 // highest acknowledged (0: none since start)
	Segments  int    // segment files
	Torn      uint64 // torn tails found and dropped by Open
	Corrupt   uint64 // bad records found inside a segment (records after them in it lost)
	Full      bool   // the last Append did not fit and space has not been freed since
	FullCount uint64 // times the spool became full
	Rejected  uint64 // records Append refused for lack of space
}

type segment struct {
	first uint64 // the seq its name carries
	last  uint64 // seq of its last record; first-1 while empty
	size  int64  // committed bytes: what Append returned
	path  string
}

// Spool is a durable, bounded queue of records; see the package doc.
type Spool struct {
	dir string
	opt Options
	log *slog.Logger
	id  string

	mu     sync.Mutex
	segs   []*segment // by first seq; the last is the active one
	active *os.File
	next   uint64
	acked  uint64
	bytes  int64
	closed bool

	full                               atomic.Bool
	torn, corrupt, fullCount, rejected atomic.Uint64
}

const (
	idFile    = "id"
	ackedFile = "acked" // the highest acknowledged seq, in decimal (a hint: not fsynced)
)

// Open opens (or creates) the spool in dir, dropping a torn tail.
func Open(dir string, opt Options) (*Spool, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = DefaultSegmentBytes
	}
	if opt.MaxRecord <= 0 {
		opt.MaxRecord = DefaultMaxRecord
	}
	if opt.SegmentBytes > opt.MaxBytes {
		opt.SegmentBytes = opt.MaxBytes
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s := &Spool{dir: dir, opt: opt, log: opt.Logger}
	id, err := loadID(dir)
	if err != nil {
		return nil, err
	}
	s.id = id
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadID reads the spool's ID, making one the first time.
func loadID(dir string) (string, error) {
	p := filepath.Join(dir, idFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			return "", fmt.Errorf("spool ID file %s is damaged (%q): delete the spool directory to start a new spool (its unacknowledged records are lost)", p, clip(id))
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read spool ID: %w", err)
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("make spool ID: %w", err)
	}
	id := hex.EncodeToString(r[:])
	tmp := p + ".tmp"
	if err := writeSync(tmp, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("write spool ID: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("write spool ID: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("write spool ID: %w", err)
	}
	return id, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func segName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

// load reads every segment, truncating torn tails, and opens the active one.
func (s *Spool) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") || e.IsDir() {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil || first == 0 {
			s.log.Warn("spool: file with a segment's suffix but not its name; ignored", "file", name)
			continue
		}
		s.segs = append(s.segs, &segment{first: first, last: first - 1, path: filepath.Join(s.dir, name)})
	}
	slices.SortFunc(s.segs, func(a, b *segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	for i, sg := range s.segs {
		data, err := os.ReadFile(sg.path)
		if err != nil {
			return fmt.Errorf("open spool: read %s: %w", sg.path, err)
		}
		n, last, serr := Scan(data, sg.first, nil)
		if last != 0 {
			sg.last = last
		}
		sg.size = int64(n)
		if serr != nil {
			if i == len(s.segs)-1 {
				s.torn.Add(1)
				s.log.Warn("spool: torn tail dropped (the gateway stopped in the middle of a write)",
					"segment", sg.path, "kept_bytes", n, "dropped_bytes", len(data)-n, "err", serr)
			} else {
				s.corrupt.Add(1)
				s.log.Error("spool: corrupt record inside a segment; the records after it in this segment are lost",
					"segment", sg.path, "at", n, "dropped_bytes", len(data)-n, "err", serr)
			}
			if err := truncateSync(sg.path, int64(n)); err != nil {
				return fmt.Errorf("open spool: drop torn tail of %s: %w", sg.path, err)
			}
		}
		if i > 0 && sg.first <= s.segs[i-1].last {
			return fmt.Errorf("open spool: segment %s overlaps the one before it: the spool directory %s was edited; move it aside to start a new spool", sg.path, s.dir)
		}
		s.bytes += sg.size
	}
	if len(s.segs) == 0 {
		return s.newSegment(1)
	}
	act := s.segs[len(s.segs)-1]
	s.next = act.last + 1
	f, err := os.OpenFile(act.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	s.active = f
	s.acked = s.segs[0].first - 1
	if b, err := os.ReadFile(filepath.Join(s.dir, ackedFile)); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > s.acked {
			s.acked = min(v, s.next-1)
		}
	}
	return nil
}

func truncateSync(path string, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}

// newSegment starts a segment whose first record is first and makes it
// the active one. The caller holds mu (or is Open).
func (s *Spool) newSegment(first uint64) error {
	p := filepath.Join(s.dir, segName(first))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: new segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("spool: new segment: %w", err)
	}
	if s.active != nil {
		s.active.Close()
	}
	s.active = f
	s.segs = append(s.segs, &segment{first: first, last: first - 1, path: p})
	s.next = first
	if len(s.segs) == 1 {
		s.acked = first - 1
	}
	return nil
}

// ID returns the spool's ID.
func (s *Spool) ID() string { return s.id }

// AppendRecord encodes one record onto buf.
func AppendRecord(buf []byte, seq uint64, data []byte) []byte {
	var h [HeaderSize]byte
	binary.BigEndian.PutUint32(h[0:], uint32(len(data)))
	binary.BigEndian.PutUint64(h[8:], seq)
	c := crc32.Update(0, castagnoli, h[8:16])
	c = crc32.Update(c, castagnoli, data)
	binary.BigEndian.PutUint32(h[4:], c)
	buf = append(buf, h[:]...)
	return append(buf, data...)
}

// Scan parses the records of one segment whose first record has sequence
// number first, calling fn (if not nil) with each until it returns false
// (n then ends after that record); fn's Data aliases b. It
// returns how many bytes hold whole, valid records, the last record's
// sequence number (0: none), and why it stopped short of len(b): a torn or
// corrupt record, or records out of sequence (ErrCorrupt). It never reads
// past b and never panics, whatever b holds.
func Scan(b []byte, first uint64, fn func(Record) bool) (n int, last uint64, err error) {
	want := first
	for n < len(b) {
		rest := b[n:]
		if len(rest) < HeaderSize {
			return n, last, fmt.Errorf("%w: %d bytes of a header at offset %d", ErrCorrupt, len(rest), n)
		}
		size := binary.BigEndian.Uint32(rest[0:])
		if uint64(size) > uint64(len(rest)-HeaderSize) {
			return n, last, fmt.Errorf("%w: record at offset %d claims %d bytes, %d left", ErrCorrupt, n, size, len(rest)-HeaderSize)
		}
		seq := binary.BigEndian.Uint64(rest[8:])
		data := rest[HeaderSize : HeaderSize+int(size)]
		c := crc32.Update(0, castagnoli, rest[8:16])
		c = crc32.Update(c, castagnoli, data)
		if c != binary.BigEndian.Uint32(rest[4:]) {
			return n, last, fmt.Errorf("%w: checksum mismatch at offset %d", ErrCorrupt, n)
		}
		if seq != want {
			return n, last, fmt.Errorf("%w: record at offset %d has sequence number %d, want %d", ErrCorrupt, n, seq, want)
		}
		last, want = seq, seq+1
		n += HeaderSize + int(size)
		if fn != nil && !fn(Record{Seq: seq, Data: data}) {
			return n, last, nil
		}
	}
	return n, last, nil
}

// Append adds records, one per element of data, fsyncs them and returns
// the sequence number of the first and how many were appended. Records
// that do not fit are not appended: err is then ErrFull (n < len(data)).
// A record above Options.MaxRecord is an error and nothing is appended.
func (s *Spool) Append(data [][]byte) (first uint64, n int, err error) {
	for _, d := range data {
		if len(d) > s.opt.MaxRecord {
			return 0, 0, fmt.Errorf("spool: record of %d bytes is above the %d-byte limit", len(d), s.opt.MaxRecord)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, 0, errors.New("spool closed")
	}
	first = s.next
	var buf []byte
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		act := s.segs[len(s.segs)-1]
		if _, err := s.active.Write(buf); err != nil {
			// Do not leave part of a batch a reader could take for whole.
			if terr := s.active.Truncate(act.size); terr != nil {
				s.log.Error("spool: undo a failed write", "err", terr)
			}
			return fmt.Errorf("spool: write: %w", err)
		}
		if err := s.active.Sync(); err != nil {
			return fmt.Errorf("spool: fsync: %w", err)
		}
		act.size += int64(len(buf))
		s.bytes += int64(len(buf))
		act.last = s.next - 1
		buf = buf[:0]
		return nil
	}
	seq := s.next
	for i, d := range data {
		rec := int64(HeaderSize + len(d))
		if s.bytes+int64(len(buf))+rec > s.opt.MaxBytes {
			if err := flush(); err != nil {
				s.next = s.segs[len(s.segs)-1].last + 1
				return first, n, err
			}
			s.rejected.Add(uint64(len(data) - i))
			if !s.full.Swap(true) {
				s.fullCount.Add(1)
			}
			return first, n, ErrFull
		}
		act := s.segs[len(s.segs)-1]
		if act.size+int64(len(buf)) > 0 && act.size+int64(len(buf))+rec > s.opt.SegmentBytes {
			if err := flush(); err != nil {
				s.next = s.segs[len(s.segs)-1].last + 1
				return first, n, err
			}
			if err := s.newSegment(seq); err != nil {
				return first, n, err
			}
		}
		buf = AppendRecord(buf, seq, d)
		seq++
		s.next = seq
		n++
	}
	if err := flush(); err != nil {
		s.next = s.segs[len(s.segs)-1].last + 1
		return first, 0, err
	}
	return first, n, nil
}

// Ack says the controller committed every record up to seq: segments
// holding only such records are deleted.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq >= s.next {
		seq = s.next - 1
	}
	if seq <= s.acked {
		return nil
	}
	s.acked = seq
	// Where to start sending after a restart. Not fsynced: after a power
	// cut an older value only means a resend, which the controller
	// records once.
	tmp := filepath.Join(s.dir, ackedFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err == nil {
		os.Rename(tmp, filepath.Join(s.dir, ackedFile))
	}
	removed := 0
	for len(s.segs) > 1 && s.segs[0].last <= seq {
		sg := s.segs[0]
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: trim: %w", err)
		}
		s.bytes -= sg.size
		s.segs = s.segs[1:]
		removed++
	}
	if removed > 0 {
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("spool: trim: %w", err)
		}
	}
	if s.full.Load() && s.bytes <= s.opt.MaxBytes-s.opt.MaxBytes/8 {
		s.full.Store(false)
		s.log.Info("spool has room again", "bytes", s.bytes, "max_bytes", s.opt.MaxBytes)
	}
	return nil
}

// Acked returns the highest acknowledged sequence number known (across
// restarts, as Ack last recorded it).
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Full reports whether the spool is full (see the package doc).
func (s *Spool) Full() bool { return s.full.Load() }

// Next returns the sequence number the next record will get.
func (s *Spool) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Stats returns the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{ID: s.id, Bytes: s.bytes, MaxBytes: s.opt.MaxBytes, Next: s.next, Acked: s.acked, Segments: len(s.segs),
		Torn: s.torn.Load(), Corrupt: s.corrupt.Load(), Full: s.full.Load(), FullCount: s.fullCount.Load(), Rejected: s.rejected.Load()}
}

// Close closes the active segment. Records appended stay on disk.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.active.Close()
}

// Cursor reads records in sequence order, from a starting point on.
type Cursor struct {
	s     *Spool
	next  uint64 // seq of the next record to return
	f     *os.File
	seg   uint64 // first seq of the segment f is
	off   int64  // offset in it of the record with seq atSeq
	atSeq uint64
}

// Cursor returns a cursor at sequence number from (or the oldest record
// still spooled, if that is later). Close it.
func (s *Spool) Cursor(from uint64) *Cursor { return &Cursor{s: s, next: from} }

// Position is the sequence number of the next record Next returns.
func (c *Cursor) Position() uint64 { return c.next }

// Close releases the cursor's file.
func (c *Cursor) Close() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

// readChunk bounds one read of a segment; above Options.MaxRecord.
const readChunk = 1 << 20

// Next returns up to max records from the cursor's position on (none when
// it has caught up with Append) and moves past them.
func (c *Cursor) Next(limit int) ([]Record, error) {
	var out []Record
	for len(out) < limit {
		s := c.s
		s.mu.Lock()
		if c.next < s.segs[0].first {
			c.next = s.segs[0].first // trimmed: acknowledged
		}
		if c.next >= s.next {
			s.mu.Unlock()
			return out, nil
		}
		i := len(s.segs) - 1
		for i > 0 && s.segs[i].first > c.next {
			i--
		}
		sg := s.segs[i]
		committed, segLast, path, first := sg.size, sg.last, sg.path, sg.first
		isLast := i == len(s.segs)-1
		var nextFirst uint64
		if !isLast {
			nextFirst = s.segs[i+1].first
		}
		s.mu.Unlock()

		if c.next > segLast || (c.f != nil && c.seg == first && c.off >= committed) {
			// Past this segment's records (it was cut short).
			if isLast {
				return out, nil
			}
			c.next = nextFirst
			continue
		}
		if c.f == nil || c.seg != first {
			c.Close()
			f, err := os.Open(path)
			if err != nil {
				return out, fmt.Errorf("spool: read %s: %w", path, err)
			}
			c.f, c.seg, c.off, c.atSeq = f, first, 0, first
		}
		buf := make([]byte, min(committed-c.off, readChunk))
		if _, err := c.f.ReadAt(buf, c.off); err != nil && !errors.Is(err, io.EOF) {
			return out, fmt.Errorf("spool: read %s: %w", path, err)
		}
		n, last, err := Scan(buf, c.atSeq, func(r Record) bool {
			if r.Seq >= c.next {
				out = append(out, r)
			}
			return len(out) < limit
		})
		c.off += int64(n)
		if last != 0 {
			c.atSeq = last + 1
			c.next = max(c.next, last+1)
		}
		if err != nil && len(buf) < readChunk && c.off < committed && n < len(buf) {
			// A committed record changed on disk since it was written.
			s.corrupt.Add(1)
			s.log.Error("spool: corrupt record; the rest of its segment is skipped", "segment", path, "at", c.off, "err", err)
			if isLast {
				return out, fmt.Errorf("read %s: %w", path, err)
			}
			c.next = nextFirst
			continue
		}
		if n == 0 && err != nil {
			return out, fmt.Errorf("spool: read %s: %w", path, err)
		}
	}
	return out, nil
}
