package siem

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)

// sampleRecords is one record of every registered type and outcome,
// with every field set, plus the flow types another part adds and a type
// this version does not know.
func sampleRecords() []auditlog.Record {
	var out []auditlog.Record
	seq := int64(0)
	add := func(t audit.Type, outcome string, fields []audit.Field, actor, subject string) {
		seq++
		d := map[string]string{}
		for _, f := range fields {
			d[f.Name] = "v-" + f.Name
		}
		for _, k := range []string{"source", "src"} {
			if _, ok := d[k]; ok {
				d[k] = "192.0.2.7:51000"
			}
		}
		if _, ok := d["dst"]; ok {
			d["dst"] = "10.20.0.10:443"
		}
		if _, ok := d["mfa"]; ok {
			d["mfa"] = "true"
		}
		out = append(out, auditlog.Record{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Millisecond), Type: t,
			Actor: actor, Outcome: outcome, Subject: subject, Details: d, RequestID: "req-" + strconv.FormatInt(seq, 10)})
	}
	for _, s := range audit.All() {
		actor := "admin:root"
		switch s.Category {
		case audit.Flow:
			actor = "gateway:gw1"
		case audit.Session, audit.Authentication:
			actor = "user:nurse"
		}
		subject := "subject-" + string(s.Type)
		if s.Type == audit.AdminAuth {
			subject = "DELETE /v1/apps/ehr"
		}
		for _, o := range s.Outcomes {
			add(s.Type, string(o.Outcome), s.Fields, actor, subject)
		}
	}
	flowFields, _ := audit.Lookup(audit.FlowAllow)
	add("flow.start", "allow", flowFields.Fields, "gateway:gw1", "ehr")
	add("flow.end", "success", flowFields.Fields, "gateway:gw1", "ehr")
	add("future.thing", "success", nil, "controller", `odd "subject" with ] and \ and ünïcode`)
	return out
}

// TestSyslogEveryType: every record type encodes as a frame the strict
// parser reads back field by field, with the record's severity, its type
// as MSGID, its seq, type, outcome and leaf in the structured data, and
// its canonical line as MSG, whose hash is the leaf.
func TestSyslogEveryType(t *testing.T) {
	var b []byte
	recs := sampleRecords()
	for _, r := range recs {
		line := r.Canonical()
		b = appendSyslogRecord(b, "ctl-1", r, line, tlog.RecordHash(line))
	}
	msgs, err := parseFrames(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(recs) {
		t.Fatalf("%d messages for %d records", len(msgs), len(recs))
	}
	for i, m := range msgs {
		checkRecordMsg(t, m, recs[i])
	}
}

func checkRecordMsg(t *testing.T, m syslogMsg, r auditlog.Record) {
	t.Helper()
	want := r.Canonical()
	if m.Version != 1 || m.Hostname != "ctl-1" || m.AppName != AppName || m.ProcID != "" {
		t.Errorf("seq %d: header %+v", r.Seq, m)
	}
	if m.Pri != facility*8+severity(r).Syslog() {
		t.Errorf("seq %d (%s %s): PRI %d, want %d", r.Seq, r.Type, r.Outcome, m.Pri, facility*8+severity(r).Syslog())
	}
	if len(r.Type) <= 32 && m.MsgID != string(r.Type) {
		t.Errorf("seq %d: MSGID %q", r.Seq, m.MsgID)
	}
	if !m.Timestamp.Equal(r.Time) {
		t.Errorf("seq %d: time %v, want %v", r.Seq, m.Timestamp, r.Time)
	}
	for name, v := range map[string]string{"seq": strconv.FormatInt(r.Seq, 10), "type": string(r.Type), "outcome": r.Outcome,
		"actor": r.Actor, "subject": r.Subject, "leaf": tlog.RecordHash(want).String()} {
		if got, ok := m.param(sdID, name); !ok || got != v {
			t.Errorf("seq %d: %s=%q, want %q", r.Seq, name, got, v)
		}
	}
	if !bytes.Equal(m.Msg, want) {
		t.Errorf("seq %d: MSG %q, want the canonical line %q", r.Seq, m.Msg, want)
	}
	leaf, _ := m.param(sdID, "leaf")
	sum := sha256.Sum256(append([]byte{0}, m.Msg...))
	if h, err := tlog.ParseHash(leaf); err != nil || h != tlog.Hash(sum) {
		t.Errorf("seq %d: leaf %q is not SHA-256(0x00 || MSG)", r.Seq, leaf)
	}
}

// TestSyslogMsgIDFits: every registered type is a valid MSGID as is.
func TestSyslogMsgIDFits(t *testing.T) {
	for _, s := range audit.All() {
		if msgID(string(s.Type)) != string(s.Type) {
			t.Errorf("type %q is not a valid MSGID (at most 32 printable ASCII characters)", s.Type)
		}
	}
}

// TestSyslogCheckpoint: a checkpoint message carries its size and root,
// and the signed note as MSG.
func TestSyslogCheckpoint(t *testing.T) {
	k, err := auditlog.NewKey(bytes.Repeat([]byte{7}, auditlog.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	c, note, err := k.Sign(42, tlog.Hash{1, 2, 3}, t0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := parseFrames(appendSyslogCheckpoint(nil, "ctl-1", c, note))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%v %v", msgs, err)
	}
	m := msgs[0]
	if m.MsgID != MsgIDCheckpoint || !bytes.Equal(m.Msg, note) {
		t.Fatalf("checkpoint message %+v", m)
	}
	if v, _ := m.param(sdCheckpoint, "size"); v != "42" {
		t.Errorf("size %q", v)
	}
	if v, _ := m.param(sdCheckpoint, "root"); v != c.Root.String() {
		t.Errorf("root %q", v)
	}
	if _, err := auditlog.OpenCheckpoint(m.Msg, k.VerifierKey()); err != nil {
		t.Errorf("the note in MSG does not verify: %v", err)
	}
}

// TestParserRejects: the reader is strict.
func TestParserRejects(t *testing.T) {
	good := `<110>1 2026-12-03T10:00:00.123456Z h app - id [x@1 a="b"] msg`
	if _, err := parseFrames([]byte(fmt.Sprintf("%d %s", len(good), good))); err != nil {
		t.Fatalf("good frame: %v", err)
	}
	for _, bad := range []string{
		"010 " + good[:10],
		"abc",
		fmt.Sprintf("%d %s", len(good)+5, good),
		"12 <999>1 - - ",
	} {
		if _, err := parseFrames([]byte(bad)); err == nil {
			t.Errorf("frames %q accepted", bad)
		}
	}
	for _, bad := range []string{
		`<110>0 - h app - id -`,
		`<110>1 2026-12-03T10:00:00.1234567Z h app - id -`,
		`<110>1 - h app - id [x@1 a="b]"]`,
		`<110>1 - h app - id [x@1 a=b]`,
		`<110>1 - h app - id`,
		`<110>1 - h app - 012345678901234567890123456789012 -`,
		`<110>1 - h app - id [x@1 a="b"`,
		`<192>1 - h app - id -`,
	} {
		if _, err := parse5424([]byte(bad)); err == nil {
			t.Errorf("message %q accepted", bad)
		}
	}
}

// FuzzSyslogRecord: any actor, subject, outcome, detail and request ID
// encode as a message the strict parser reads back exactly.
func FuzzSyslogRecord(f *testing.F) {
	f.Add("admin:root", "nurse", "success", "reason", "x", "")
	f.Add(`a]"\`, "ü\n]", "fail\\", "k", `v"]`, "r")
	f.Fuzz(func(t *testing.T, actor, subject, outcome, key, value, reqID string) {
		r := auditlog.Record{Seq: 9, Time: t0, Type: audit.AdminUserCreate,
			Actor: auditlog.ValidUTF8(actor), Subject: auditlog.ValidUTF8(subject), Outcome: auditlog.ValidUTF8(outcome),
			Details: map[string]string{auditlog.ValidUTF8(key): auditlog.ValidUTF8(value)}, RequestID: auditlog.ValidUTF8(reqID)}
		line := r.Canonical()
		msgs, err := parseFrames(appendSyslogRecord(nil, "ctl-1", r, line, tlog.RecordHash(line)))
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%v: %v", r, err)
		}
		checkRecordMsg(t, msgs[0], r)
	})
}

// FuzzParseFrames: the reader never panics, and what it accepts it
// accepts whole.
func FuzzParseFrames(f *testing.F) {
	good := `<110>1 2026-12-03T10:00:00.123456Z h app - id [x@1 a="b\]"] msg`
	f.Add([]byte(fmt.Sprintf("%d %s", len(good), good)))
	f.Add([]byte("3 <1>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := parseFrames(b)
		if err == nil {
			for _, m := range msgs {
				if m.Pri > 191 || m.Version < 1 || len(m.MsgID) > 32 {
					t.Fatalf("accepted %+v", m)
				}
			}
		}
	})
}
