package auditlog

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
)

// FuzzVerifyBundle: no input makes the bundle reader panic, and a bundle
// it accepts under the pinned key is the log that key signed.
func FuzzVerifyBundle(f *testing.F) {
	k := testKey(f, 1)
	l := newMemLog(20)
	f.Add(l.bundle(f, k, 1, 20, 20))
	f.Add(l.bundle(f, k, 5, 9, 20))
	f.Add(l.bundle(f, k, 20, 20, 20))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := VerifyBundle(bytes.NewReader(b), VerifyOptions{Key: k.VerifierKey()})
		if err != nil {
			return
		}
		if res.Checkpoint.Size > 20 || res.Key != k.VerifierKey() {
			t.Fatalf("accepted a bundle of a log the key never signed: %+v", res)
		}
	})
}

// FuzzOpenCheckpoint: checkpoints from the wire never panic the parser,
// and one that opens is re-encoded to the text that was signed.
func FuzzOpenCheckpoint(f *testing.F) {
	k := testKey(f, 1)
	l := newMemLog(3)
	f.Add(l.checkpoint(f, k, 3))
	f.Add([]byte("o\n1\nAAAA\ntime x\n\n— o AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := OpenCheckpoint(b, k.VerifierKey())
		ParseCheckpointBody(string(b)) // must not panic either
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, []byte(c.Body())) {
			t.Fatalf("opened checkpoint %+v is not the signed text %q", c, b)
		}
	})
}

// FuzzParseRecord: a record that parses encodes back to the same bytes.
func FuzzParseRecord(f *testing.F) {
	f.Add(record(1).Canonical())
	f.Add(Record{Seq: 3, Time: t0, Details: map[string]string{"\x00": "\"\\"}}.Canonical())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Canonical(), b) {
			t.Fatalf("parsed %q, encodes as %q", b, r.Canonical())
		}
	})
}

// FuzzAppendDetails: the details object the store keeps is JSON that
// encoding/json reads back to the same map, for any valid UTF-8 keys and
// values (the store makes them so).
func FuzzAppendDetails(f *testing.F) {
	f.Add("src", "100.64.0.7:4000", "q", "\"<&>\u2028\\\n\x01é")
	f.Add("", "", "a", "\x7f\t\r")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		m := map[string]string{ValidUTF8(k1): ValidUTF8(v1), ValidUTF8(k2): ValidUTF8(v2)}
		b := AppendDetails(nil, m)
		var got map[string]string
		if err := json.Unmarshal(b, &got); err != nil || !maps.Equal(got, m) {
			t.Fatalf("%q: read back %q, %v; want %q", b, got, err, m)
		}
	})
}
