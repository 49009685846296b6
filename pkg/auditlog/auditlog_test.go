package auditlog

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/mod/sumdb/tlog"
)

var t0 = time.Date(2026, 12, 3, 15, 4, 5, 123456000, time.UTC)

func testKey(t testing.TB, b byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{b}, SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func record(seq int64) Record {
	return Record{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Millisecond), Type: audit.AdminUserCreate,
		Actor: "admin:root", Outcome: "success", Subject: fmt.Sprintf("user-%d", seq),
		Details: map[string]string{"b": "2", "a": "1 \"quoted\" <tag> & é\n\x01"}}
}

// memLog is a log kept in memory the way the controller keeps it: each
// leaf's stored hashes with the leaf.
type memLog struct {
	lines  [][]byte
	stored [][]tlog.Hash // per leaf
	tree   *Tree
}

func newMemLog(n int) *memLog {
	l := &memLog{tree: &Tree{}}
	for i := range n {
		l.add(record(int64(i + 1)))
	}
	return l
}

func (l *memLog) add(r Record) {
	line := r.Canonical()
	l.lines = append(l.lines, line)
	l.stored = append(l.stored, l.tree.Append(tlog.RecordHash(line), nil))
}

func (l *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		leaf, off, err := StoredAt(x)
		if err != nil || leaf >= int64(len(l.stored)) || off >= len(l.stored[leaf]) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = l.stored[leaf][off]
	}
	return out, nil
}

// bundle exports records from..to with a checkpoint of size n.
func (l *memLog) bundle(t testing.TB, k *Key, from, to, n int64) []byte {
	t.Helper()
	note := l.checkpoint(t, k, n)
	prefix, err := l.ReadHashes(PrefixIndexes(from - 1))
	if err != nil {
		t.Fatal(err)
	}
	var proof tlog.TreeProof
	if to < n {
		var err error
		if proof, err = tlog.ProveTree(n, to, l); err != nil {
			t.Fatal(err)
		}
	}
	b, err := AppendBundleHeader(nil, BundleHeader{Key: k.VerifierKey(), Checkpoint: string(note), FromSeq: from, ToSeq: to, Prefix: prefix, Proof: proof})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range l.lines[from-1 : to] {
		b = append(append(b, line...), '\n')
	}
	return b
}

func (l *memLog) checkpoint(t testing.TB, k *Key, n int64) []byte {
	t.Helper()
	root, err := tlog.TreeHash(n, l)
	if err != nil {
		t.Fatal(err)
	}
	_, note, err := k.Sign(n, root, t0)
	if err != nil {
		t.Fatal(err)
	}
	return note
}

// TestTreeMatchesTlog: the right-edge tree computes exactly what
// tlog.StoredHashes and tlog.TreeHash compute from every stored hash, and
// continues from a prefix as from the start.
func TestTreeMatchesTlog(t *testing.T) {
	var all []tlog.Hash // tlog's own storage
	reader := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for i, x := range ix {
			out[i] = all[x]
		}
		return out, nil
	})
	tree := &Tree{}
	var stored []tlog.Hash
	for n := range int64(300) {
		data := record(n + 1).Canonical()
		want, err := tlog.StoredHashes(n, data, reader)
		if err != nil {
			t.Fatal(err)
		}
		stored = tree.Append(tlog.RecordHash(data), stored[:0])
		if fmt.Sprint(stored) != fmt.Sprint(want) {
			t.Fatalf("leaf %d: stored hashes %v, tlog %v", n, stored, want)
		}
		if got := tlog.StoredHashIndex(0, n); got != int64(len(all)) {
			t.Fatalf("leaf %d: storage index %d, have %d", n, got, len(all))
		}
		all = append(all, want...)
		root, _ := tlog.TreeHash(n+1, reader)
		if tree.Root() != root {
			t.Fatalf("size %d: root %v, tlog %v", n+1, tree.Root(), root)
		}
		prefix, _ := reader.ReadHashes(PrefixIndexes(n + 1))
		again, err := NewTree(n+1, prefix)
		if err != nil || again.Root() != root {
			t.Fatalf("size %d from prefix: %v, %v", n+1, err, again)
		}
		for i, x := range PrefixIndexes(n + 1) {
			leaf, off, _ := StoredAt(x)
			if all[x] != all[tlog.StoredHashIndex(0, leaf)+int64(off)] {
				t.Fatalf("size %d: prefix hash %d (index %d) is not stored with leaf %d at %d", n+1, i, x, leaf, off)
			}
		}
	}
	if _, err := NewTree(5, make([]tlog.Hash, 1)); err == nil {
		t.Error("NewTree(5) with one hash: no error")
	}
}

func TestRecordCanonical(t *testing.T) {
	r := record(7)
	line := r.Canonical()
	want := `{"seq":7,"time":"2026-12-03T15:04:05.130456Z","type":"admin.user.create","actor":"admin:root","outcome":"success","subject":"user-7","details":{"a":"1 \"quoted\" <tag> & é\n\u0001","b":"2"},"request_id":""}`
	if string(line) != want {
		t.Fatalf("canonical:\n%s\nwant\n%s", line, want)
	}
	got, err := ParseRecord(line)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Canonical(), line) || !got.Time.Equal(r.Time) || got.Details["a"] != r.Details["a"] {
		t.Fatalf("round trip: %+v", got)
	}
	empty := Record{Seq: 1, Time: t0}
	if _, err := ParseRecord(empty.Canonical()); err != nil {
		t.Fatalf("record with empty fields: %v", err)
	}
	for name, bad := range map[string]string{
		"space":        strings.Replace(want, `"seq":7`, `"seq": 7`, 1),
		"order":        strings.Replace(want, `"seq":7,"time":"2026-12-03T15:04:05.130456Z"`, `"time":"2026-12-03T15:04:05.130456Z","seq":7`, 1),
		"duplicate":    strings.Replace(want, `"actor":"admin:root"`, `"actor":"admin:root","actor":"admin:eve"`, 1),
		"unknown key":  strings.Replace(want, `"request_id":""`, `"request_id":"","x":1`, 1),
		"missing key":  strings.Replace(want, `,"request_id":""`, ``, 1),
		"escape":       strings.Replace(want, `é`, `\u00e9`, 1),
		"time zone":    strings.Replace(want, `05.130456Z`, `05.130456+00:00`, 1),
		"time digits":  strings.Replace(want, `05.130456Z`, `05.13Z`, 1),
		"seq zero":     strings.Replace(want, `"seq":7`, `"seq":0`, 1),
		"trailing":     want + " ",
		"not json":     "seq 7",
		"invalid utf8": strings.Replace(want, `é`, "\xff", 1),
	} {
		if _, err := ParseRecord([]byte(bad)); err == nil {
			t.Errorf("%s: %s parsed", name, bad)
		}
	}
	if got := ValidUTF8("a\xffb"); got != "a\ufffdb" {
		t.Errorf("ValidUTF8: %q", got)
	}
}

func TestCheckpoint(t *testing.T) {
	k := testKey(t, 1)
	if !strings.HasPrefix(k.Origin(), "cordon-audit/") || !strings.HasPrefix(k.VerifierKey(), k.Origin()+"+") {
		t.Fatalf("origin %q, key %q", k.Origin(), k.VerifierKey())
	}
	root := tlog.RecordHash([]byte("x"))
	c, note, err := k.Sign(42, root, t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(note, k.VerifierKey())
	if err != nil || got != c || got.Size != 42 || got.Root != root || !got.Time.Equal(t0) {
		t.Fatalf("open: %v, %+v, want %+v", err, got, c)
	}
	if _, err := OpenCheckpoint(note, testKey(t, 2).VerifierKey()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v", err)
	}
	forged := bytes.Replace(note, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := OpenCheckpoint(forged, k.VerifierKey()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("edited size: %v", err)
	}
	if _, err := OpenCheckpoint([]byte("hello"), k.VerifierKey()); err == nil {
		t.Error("not a note: no error")
	}
	if _, err := OpenCheckpoint(note, "junk"); err == nil {
		t.Error("bad key: no error")
	}
	for _, body := range []string{
		"", "o\n1\n" + root.String() + "\n", "o\n01\n" + root.String() + "\ntime 2026-12-03T15:04:05.123456Z\n",
		"o\n1\nxx\ntime 2026-12-03T15:04:05.123456Z\n", "o\n1\n" + root.String() + "\nwhen 2026\n",
		"o\n-1\n" + root.String() + "\ntime 2026-12-03T15:04:05.123456Z\n",
		"o\n1\n" + root.String() + "\ntime 2026-12-03T15:04:05.123456Z\nextra\n",
	} {
		if _, err := ParseCheckpointBody(body); err == nil {
			t.Errorf("body %q parsed", body)
		}
	}
}

func TestConsistent(t *testing.T) {
	k := testKey(t, 1)
	l := newMemLog(100)
	open := func(note []byte) Checkpoint {
		c, err := OpenCheckpoint(note, k.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c40, c100 := open(l.checkpoint(t, k, 40)), open(l.checkpoint(t, k, 100))
	p, err := tlog.ProveTree(100, 40, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := Consistent(c40, c100, p); err != nil {
		t.Errorf("grown log: %v", err)
	}
	if err := Consistent(c40, c40, nil); err != nil {
		t.Errorf("same checkpoint: %v", err)
	}
	if err := Consistent(c100, c40, nil); !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "truncated or rolled back") {
		t.Errorf("shrunk log: %v", err)
	}
	// A fork: the same first 39 records, then another 40th.
	f := newMemLog(39)
	r := record(40)
	r.Actor = "admin:mallory"
	f.add(r)
	for i := int64(41); i <= 100; i++ {
		f.add(record(i))
	}
	f40, f100 := open(f.checkpoint(t, k, 40)), open(f.checkpoint(t, k, 100))
	if err := Consistent(c40, f40, nil); !errors.Is(err, ErrInconsistent) {
		t.Errorf("forked, same size: %v", err)
	}
	fp, _ := tlog.ProveTree(100, 40, f)
	if err := Consistent(c40, f100, fp); !errors.Is(err, ErrInconsistent) {
		t.Errorf("forked, grown: %v", err)
	}
}

func verify(b []byte, o VerifyOptions) (*BundleResult, error) {
	return VerifyBundle(bytes.NewReader(b), o)
}

func TestBundle(t *testing.T) {
	k := testKey(t, 1)
	l := newMemLog(200)
	for _, c := range []struct{ from, to, n int64 }{{1, 200, 200}, {1, 1, 1}, {1, 1, 200}, {37, 150, 200}, {200, 200, 200}, {64, 128, 129}} {
		b := l.bundle(t, k, c.from, c.to, c.n)
		res, err := verify(b, VerifyOptions{Key: k.VerifierKey()})
		if err != nil {
			t.Fatalf("bundle %v: %v", c, err)
		}
		if res.FromSeq != c.from || res.ToSeq != c.to || res.Checkpoint.Size != c.n || res.Key != k.VerifierKey() {
			t.Errorf("bundle %v: result %+v", c, res)
		}
		if !strings.Contains(res.Describe(), fmt.Sprintf("records seq %d to %d", c.from, c.to)) {
			t.Errorf("describe: %s", res.Describe())
		}
	}

	// An earlier checkpoint the log extends, and one it does not.
	b := l.bundle(t, k, 50, 150, 200)
	for _, n := range []int64{49, 50, 120, 150, 200} {
		res, err := verify(b, VerifyOptions{Earlier: l.checkpoint(t, k, n)})
		if err != nil || res.Earlier == nil || res.Earlier.Size != n {
			t.Errorf("earlier checkpoint of size %d: %v", n, err)
		}
	}
	if _, err := verify(b, VerifyOptions{Earlier: l.checkpoint(t, k, 30)}); err == nil || !strings.Contains(err.Error(), "export a range that covers seq 30") {
		t.Errorf("earlier checkpoint before the range: %v", err)
	}
	fork := newMemLog(99)
	r := record(100)
	r.Outcome = "failure"
	fork.add(r)
	if _, err := verify(b, VerifyOptions{Earlier: fork.checkpoint(t, k, 100)}); !errors.Is(err, ErrInconsistent) {
		t.Errorf("forked earlier checkpoint: %v", err)
	}
	longer := newMemLog(250)
	if _, err := verify(b, VerifyOptions{Earlier: longer.checkpoint(t, k, 250)}); !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("earlier checkpoint longer than the log: %v", err)
	}
	if _, err := verify(b, VerifyOptions{Earlier: l.checkpoint(t, testKey(t, 2), 100)}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("earlier checkpoint of another key: %v", err)
	}
}

// TestBundleTamper: every change to an exported bundle is refused, and the
// error names the first bad record where one can be named.
func TestBundleTamper(t *testing.T) {
	k := testKey(t, 1)
	l := newMemLog(100)
	good := l.bundle(t, k, 11, 90, 100)
	lines := bytes.SplitAfter(good, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty string after the last newline
	join := func(ls [][]byte) []byte { return bytes.Join(ls, nil) }
	rec := func(seq int64) int { return int(seq - 11 + 1) } // index of seq's line

	edited := append([][]byte(nil), lines...)
	edited[rec(40)] = bytes.Replace(lines[rec(40)], []byte("admin:root"), []byte("admin:eve"), 1)
	deleted := append(append([][]byte(nil), lines[:rec(40)]...), lines[rec(40)+1:]...)
	reordered := append([][]byte(nil), lines...)
	reordered[rec(40)], reordered[rec(41)] = lines[rec(41)], lines[rec(40)]
	// Renumbered after a deletion: self-consistent seqs, but not the
	// signed records.
	renumbered := append([][]byte(nil), lines[:rec(40)]...)
	for seq := int64(41); seq <= 90; seq++ {
		r, _ := ParseRecord(bytes.TrimSuffix(lines[rec(seq)], []byte("\n")))
		r.Seq--
		renumbered = append(renumbered, append(r.Canonical(), '\n'))
	}
	renumbered = append(renumbered, append(record(90).Canonical(), '\n'))
	// A whole forged log, signed by another key.
	forged := newMemLog(100).bundle(t, testKey(t, 9), 11, 90, 100)
	header := bytes.Replace(lines[0], []byte(`"to_seq":90`), []byte(`"to_seq":89`), 1)
	badProof := bytes.Replace(lines[0], []byte(`"proof":["`), []byte(`"proof":["AAAA`), 1)

	for _, c := range []struct {
		name, want string
		b          []byte
		o          VerifyOptions
	}{
		{"edit", "do not hash to the signed checkpoint", join(edited), VerifyOptions{}},
		{"delete", "record seq 40 (line 31): found seq 41 in its place", join(deleted), VerifyOptions{}},
		{"reorder", "record seq 40 (line 31): found seq 41", join(reordered), VerifyOptions{}},
		{"renumber", "do not hash to the signed checkpoint", join(renumbered), VerifyOptions{}},
		{"truncate", "record seq 90 (line 81): missing", join(lines[:len(lines)-1]), VerifyOptions{}},
		{"cut mid-line", "record seq 90 (line 81): the last line has no newline", good[:len(good)-10], VerifyOptions{}},
		{"appended", "goes on after its last record", append(append([]byte(nil), good...), lines[1]...), VerifyOptions{}},
		{"forged, other key", "not the expected", forged, VerifyOptions{Key: k.VerifierKey()}},
		{"range edited", "goes on after its last record (seq 89)", join(append([][]byte{header}, lines[1:]...)), VerifyOptions{}},
		{"proof edited", "bundle header", join(append([][]byte{badProof}, lines[1:]...)), VerifyOptions{}},
		{"empty", "bundle header", nil, VerifyOptions{}},
		{"not a bundle", "bundle format \"zip\"", []byte("{\"format\":\"zip\"}\n"), VerifyOptions{}},
	} {
		_, err := verify(c.b, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := verify(forged, VerifyOptions{}); err != nil {
		t.Errorf("a forged log without a pinned key verifies on its own (its key is reported): %v", err)
	}
}

// go test -run XXX -bench VerifyBundleFile ./pkg/auditlog -args -records=10000000
var benchRecords = flag.Int("records", 1_000_000, "records in the bundle BenchmarkVerifyBundleFile writes")

// BenchmarkVerifyBundleFile verifies a bundle of the whole log, -records
// flow records, from a file: what cordonctl audit verify --bundle does.
func BenchmarkVerifyBundleFile(b *testing.B) {
	k := testKey(b, 1)
	path := filepath.Join(b.TempDir(), "bundle.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	n := int64(*benchRecords)
	// The records twice: once for the root the header needs, once to write.
	gen := func(seq int64, buf []byte) []byte {
		r := Record{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Millisecond), Type: audit.FlowAllow, Actor: "gateway:gw-1", Outcome: "allow", Subject: "ehr",
			Details: map[string]string{"proto": "tcp", "src": fmt.Sprintf("100.64.%d.%d:%d", seq%256, seq/256%256, 40000+seq%20000), "dst": "10.20.0.10:443", "gateway": "gw-1", "user": "nurse", "device": "dev-3f2a9c01d2"}}
		return r.AppendCanonical(buf)
	}
	tree := &Tree{}
	var buf []byte
	for seq := int64(1); seq <= n; seq++ {
		buf = gen(seq, buf[:0])
		tree.Append(tlog.RecordHash(buf), nil)
	}
	_, note, _ := k.Sign(n, tree.Root(), t0)
	hdr, _ := AppendBundleHeader(nil, BundleHeader{Key: k.VerifierKey(), Checkpoint: string(note), FromSeq: 1, ToSeq: n})
	w.Write(hdr)
	for seq := int64(1); seq <= n; seq++ {
		buf = append(gen(seq, buf[:0]), '\n')
		w.Write(buf)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyBundle(f, VerifyOptions{Key: k.VerifierKey()}); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*n), "ns/record")
}

func BenchmarkVerifyBundle(b *testing.B) {
	k := testKey(b, 1)
	const n = 100_000
	l := &memLog{tree: &Tree{}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		r := record(int64(i + 1))
		r.Details = map[string]string{"src": fmt.Sprintf("100.64.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(65536)), "dst": "10.20.0.10:443", "proto": "tcp", "app": "ehr"}
		l.add(r)
	}
	bundle := l.bundle(b, k, 1, n, n)
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		if _, err := verify(bundle, VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}
