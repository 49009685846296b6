package siem

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// stdJSON is what encoding/json writes for e (without HTML escaping),
// and a newline: the reference the hand encoder must match.
func stdJSON(t testing.TB, e *ocsfEvent) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mapped is the event appendOCSFRecord encodes for r.
func mapped(r auditlog.Record) *ocsfEvent {
	line := r.Canonical()
	b, _ := appendOCSFRecord(nil, "o", r, line, tlog.RecordHash(line))
	var e ocsfEvent
	json.Unmarshal(b, &e)
	return &e
}

// TestOCSFEncoderMatchesJSON: for one record of every type and outcome
// and a checkpoint, the hand encoder writes byte for byte what
// encoding/json writes.
func TestOCSFEncoderMatchesJSON(t *testing.T) {
	for _, r := range sampleRecords() {
		e := mapped(r)
		if got, want := append(appendOCSFEvent(nil, e), '\n'), stdJSON(t, e); !bytes.Equal(got, want) {
			t.Errorf("%s %s:\n got %s\nwant %s", r.Type, r.Outcome, got, want)
		}
	}
	k, _ := auditlog.NewKey(bytes.Repeat([]byte{7}, auditlog.SeedSize))
	c, note, _ := k.Sign(42, tlog.Hash{1}, t0)
	got, _ := appendOCSFCheckpoint(nil, c, note)
	var e ocsfEvent
	json.Unmarshal(got, &e)
	if want := stdJSON(t, &e); !bytes.Equal(got, want) {
		t.Errorf("checkpoint:\n got %s\nwant %s", got, want)
	}
}

// FuzzOCSFEncoder: any strings in a record (control characters, quotes,
// U+2028, HTML characters) encode as encoding/json would.
func FuzzOCSFEncoder(f *testing.F) {
	f.Add("admin:root", "nurse", "k", "v\u2028<&>\x01\"\\", "r")
	f.Add("user:\xff", "\u2029", "\x7f", "\b\f", "")
	f.Fuzz(func(t *testing.T, actor, subject, key, value, reqID string) {
		// The store makes every string of a record valid UTF-8.
		v := auditlog.ValidUTF8
		actor, subject, key, value, reqID = v(actor), v(subject), v(key), v(value), v(reqID)
		for _, typ := range []audit.Type{audit.AdminUserCreate, audit.FlowDeny, audit.AuthLogin, audit.AdminAuth} {
			r := auditlog.Record{Seq: 3, Time: t0, Type: typ, Actor: actor, Outcome: "success", Subject: subject,
				Details: map[string]string{key: value, "source": value, "src": value}, RequestID: reqID}
			line := r.Canonical()
			got, err := appendOCSFRecord(nil, "o", r, line, tlog.RecordHash(line))
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got) {
				t.Fatalf("not JSON: %q", got)
			}
			var e ocsfEvent
			if err := json.Unmarshal(got, &e); err != nil {
				t.Fatal(err)
			}
			if want := stdJSON(t, &e); !bytes.Equal(got, want) {
				t.Fatalf("\n got %q\nwant %q", got, want)
			}
		}
	})
}
