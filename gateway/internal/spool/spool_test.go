package spool

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func rec(i uint64) []byte {
	return fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, bytes.Repeat([]byte("x"), int(i%50)))
}

func appendN(t testing.TB, s *Spool, from, n uint64) {
	t.Helper()
	var batch [][]byte
	for i := from; i < from+n; i++ {
		batch = append(batch, rec(i))
	}
	first, got, err := s.Append(batch)
	if err != nil || got != int(n) || first != from {
		t.Fatalf("Append(%d records from %d) = %d, %d, %v", n, from, first, got, err)
	}
}

// readAll reads every record from seq from on and checks each is rec(seq).
func readAll(t *testing.T, s *Spool, from uint64) []uint64 {
	t.Helper()
	c := s.Cursor(from)
	defer c.Close()
	var seqs []uint64
	for {
		rs, err := c.Next(7)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if len(rs) == 0 {
			return seqs
		}
		for _, r := range rs {
			if !bytes.Equal(r.Data, rec(r.Seq)) {
				t.Fatalf("record %d = %q, want %q", r.Seq, r.Data, rec(r.Seq))
			}
			seqs = append(seqs, r.Seq)
		}
	}
}

func wantRun(t *testing.T, got []uint64, from, to uint64) {
	t.Helper()
	if len(got) != int(to-from+1) {
		t.Fatalf("got %d records (%v...), want %d..%d", len(got), got[:min(len(got), 5)], from, to)
	}
	for i, s := range got {
		if s != from+uint64(i) {
			t.Fatalf("record %d has seq %d, want %d", i, s, from+uint64(i))
		}
	}
}

func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 1, 100)
	wantRun(t, readAll(t, s, 1), 1, 100)
	wantRun(t, readAll(t, s, 40), 40, 100)
	if st := s.Stats(); st.Segments < 3 {
		t.Fatalf("%d segments, want several of 1 KiB", st.Segments)
	}
	// A cursor that has caught up sees later appends.
	c := s.Cursor(1)
	if rs, _ := c.Next(1000); len(rs) != 100 {
		t.Fatalf("first read: %d", len(rs))
	}
	appendN(t, s, 101, 5)
	if rs, _ := c.Next(1000); len(rs) != 5 || rs[0].Seq != 101 {
		t.Fatalf("after append: %v", rs)
	}
	c.Close()

	before := s.Stats()
	if err := s.Ack(60); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.Segments >= before.Segments || after.Bytes >= before.Bytes {
		t.Fatalf("Ack(60) trimmed nothing: %+v -> %+v", before, after)
	}
	got := readAll(t, s, 1) // from before the trim: starts at the oldest kept
	if got[0] > 61 || got[len(got)-1] != 105 {
		t.Fatalf("after trim: %d..%d", got[0], got[len(got)-1])
	}
	id := s.ID()
	s.Close()

	s, err = Open(dir, Options{SegmentBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ID() != id || s.Next() != 106 {
		t.Fatalf("reopened: id %s next %d, want %s 106", s.ID(), s.Next(), id)
	}
	appendN(t, s, 106, 3)
	got = readAll(t, s, 61)
	wantRun(t, got, 61, 108)
	// Everything acknowledged: the active segment stays and carries the
	// next sequence number across a restart even when it is empty.
	s.Ack(108)
	appendN(t, s, 109, 1)
	s.Ack(109)
	s.Close()
	s, err = Open(dir, Options{SegmentBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if s.Next() != 110 {
		t.Fatalf("next after full ack and reopen = %d, want 110", s.Next())
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir mode %v, %v", st.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
}

// TestTornTail: whatever the last write left (cut at any byte, or
// garbage after it), Open keeps every whole record before it, counts the
// tear and goes on numbering after the last kept record.
func TestTornTail(t *testing.T) {
	base := t.TempDir()
	s, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 1, 20)
	s.Close()
	seg := filepath.Join(base, segName(1))
	whole, _ := os.ReadFile(seg)
	var ends []int // offset after each record
	Scan(whole, 1, func(r Record) bool { ends = append(ends, 0); return true })
	off := 0
	for i := range ends {
		off += HeaderSize + len(rec(uint64(i+1)))
		ends[i] = off
	}
	for cut := ends[15] + 1; cut < len(whole); cut += 3 {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, idFile), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
		os.WriteFile(filepath.Join(dir, segName(1)), whole[:cut], 0o600)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		kept := 0
		for i, e := range ends {
			if e <= cut {
				kept = i + 1
			}
		}
		wantRun(t, readAll(t, s, 1), 1, uint64(kept))
		torn := uint64(0)
		if cut != ends[kept-1] {
			torn = 1
		}
		if st := s.Stats(); st.Torn != torn || st.Next != uint64(kept+1) {
			t.Fatalf("cut at %d: stats %+v, want torn %d next %d", cut, st, torn, kept+1)
		}
		appendN(t, s, uint64(kept+1), 2)
		wantRun(t, readAll(t, s, 1), 1, uint64(kept+2))
		s.Close()
	}
	// Garbage after the last record, and a flipped byte in the last.
	for _, mut := range []func([]byte) []byte{
		func(b []byte) []byte { return append(b, 0, 0, 0, 9, 1, 2, 3) },
		func(b []byte) []byte { b[len(b)-2] ^= 0x40; return b },
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segName(1)), mut(bytes.Clone(whole)), 0o600)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, s, 1)
		if len(got) < 19 || s.Stats().Torn != 1 {
			t.Fatalf("kept %d records, torn %d", len(got), s.Stats().Torn)
		}
		s.Close()
	}
}

func TestFull(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 4096, SegmentBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var seq uint64 = 1
	for !s.Full() {
		first, n, err := s.Append([][]byte{rec(seq), rec(seq + 1)})
		if first != seq {
			t.Fatalf("first %d, want %d", first, seq)
		}
		seq += uint64(n)
		if err != nil && !errors.Is(err, ErrFull) {
			t.Fatal(err)
		}
		if seq > 1000 {
			t.Fatal("never full")
		}
	}
	st := s.Stats()
	if st.Bytes > 4096 || st.FullCount != 1 || st.Rejected == 0 {
		t.Fatalf("full: %+v", st)
	}
	if _, n, err := s.Append([][]byte{rec(seq)}); !errors.Is(err, ErrFull) || n != 0 {
		t.Fatalf("append when full: %d, %v", n, err)
	}
	if err := s.Ack(seq - 1); err != nil {
		t.Fatal(err)
	}
	if s.Full() {
		t.Fatalf("still full after acknowledging everything: %+v", s.Stats())
	}
	appendN(t, s, seq, 1)
}

func TestRecordTooLarge(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxRecord: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Append([][]byte{[]byte("short"), make([]byte, 11)}); err == nil {
		t.Fatal("accepted a record above MaxRecord")
	}
	if s.Next() != 1 {
		t.Fatalf("a refused batch assigned sequence numbers: next %d", s.Next())
	}
}

func TestDamagedIDRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, idFile), []byte("not-an-id"), 0o600)
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("opened a spool with a damaged ID")
	}
}

// FuzzScan: Scan never panics or reads past its input, what it accepts
// re-encodes to exactly the bytes it accepted, and it accepts every
// encoded prefix of whole records.
func FuzzScan(f *testing.F) {
	var good []byte
	for i := uint64(1); i <= 3; i++ {
		good = AppendRecord(good, i, rec(i))
	}
	f.Add(good, uint64(1))
	f.Add(good[:len(good)-3], uint64(1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint64(1))
	f.Add([]byte{}, uint64(7))
	f.Fuzz(func(t *testing.T, b []byte, first uint64) {
		var again []byte
		n, last, err := Scan(b, first, func(r Record) bool {
			again = AppendRecord(again, r.Seq, r.Data)
			return true
		})
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d of %d", n, len(b))
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatal("accepted bytes do not re-encode to themselves")
		}
		if (err == nil) != (n == len(b)) {
			t.Fatalf("n %d of %d with err %v", n, len(b), err)
		}
		if n > 0 && last < first {
			t.Fatalf("last %d below first %d", last, first)
		}
	})
}

// BenchmarkAppend measures durable appends: each Append is one write and
// one fsync, with batch records of about 300 bytes (a flow event's JSON).
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 128, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{MaxBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([][]byte, batch)
			for i := range data {
				data[i] = bytes.Repeat([]byte{byte('a' + rand.IntN(26))}, 300)
			}
			b.SetBytes(int64(batch * (300 + HeaderSize)))
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := s.Append(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
