package siem

import (
	"strconv"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// Syslog messages (RFC 5424), one per audit record and one per signed
// checkpoint, each framed for TCP and TLS by octet counting (RFC 5425
// §4.3: "LEN SP MSG", LEN in decimal without leading zeros). A record's
// message:
//
//	<110>1 2026-12-03T15:04:05.123456Z ctl-1 cordon-controller - admin.user.create [cordon@32473 seq="7" type="admin.user.create" category="administration" outcome="success" actor="admin:root" subject="nurse" leaf="q0b..."] {"seq":7,...}
//
// PRI is facility 13 (log audit, RFC 5424 §6.2.1) times 8 plus the
// severity of the record's type and outcome in pkg/audit
// (audit.Severity.Syslog). MSGID is the event type (at most 32 printable
// ASCII characters; a test checks every registered type fits). MSG is the
// record's canonical line (auditlog.Record.AppendCanonical), UTF-8 without
// a BOM: SHA-256 of 0x00 and those bytes is the leaf hash in the
// structured data, so a SIEM holding the log's checkpoints can check a
// record without the controller.
//
// A checkpoint's message has MSGID "audit.checkpoint", the structured
// data [cordon-checkpoint@32473 origin="..." size="N" root="..."] and MSG
// the signed note (its text and signature lines, newlines included).

const (
	// sdID is the structured data element of a record. 32473 is the
	// private enterprise number RFC 5612 reserves for documentation:
	// Cordon has none of its own, and "name@number" is the only form RFC
	// 5424 §6.3.2 allows for an element it does not register.
	sdID = "cordon@32473"
	// sdCheckpoint is the element of a checkpoint message.
	sdCheckpoint = "cordon-checkpoint@32473"
	// facility is "log audit" (13).
	facility = 13
	// AppName is the APP-NAME of every message.
	AppName = "cordon-controller"
	// MsgIDCheckpoint is the MSGID of a checkpoint message.
	MsgIDCheckpoint = "audit.checkpoint"
)

// severity is the record's severity: its type's severity for its
// outcome, or the type's highest for an outcome the schema does not list
// (a record written by an older or newer version), or Notice for a type
// it does not know.
func severity(r auditlog.Record) audit.Severity {
	spec, ok := audit.Lookup(r.Type)
	if !ok {
		return audit.Notice
	}
	if s, ok := spec.Severity(audit.Outcome(r.Outcome)); ok {
		return s
	}
	return spec.MaxSeverity()
}

// appendSyslogRecord appends record r's framed message to b.
func appendSyslogRecord(b []byte, host string, r auditlog.Record, canonical []byte, leaf tlog.Hash) []byte {
	spec, _ := audit.Lookup(r.Type)
	return frame(b, func(b []byte) []byte {
		b = appendHeader(b, severity(r).Syslog(), r.Time.UTC().AppendFormat(nil, auditlog.TimeLayout), host, msgID(string(r.Type)))
		b = append(b, '[')
		b = append(b, sdID...)
		b = appendParam(b, "seq", strconv.FormatInt(r.Seq, 10))
		b = appendParam(b, "type", string(r.Type))
		if spec.Category != "" {
			b = appendParam(b, "category", string(spec.Category))
		}
		b = appendParam(b, "outcome", r.Outcome)
		b = appendParam(b, "actor", r.Actor)
		b = appendParam(b, "subject", r.Subject)
		b = appendParam(b, "leaf", leaf.String())
		b = append(b, "] "...)
		return append(b, canonical...)
	})
}

// appendSyslogCheckpoint appends a checkpoint's framed message to b.
func appendSyslogCheckpoint(b []byte, host string, c auditlog.Checkpoint, note []byte) []byte {
	return frame(b, func(b []byte) []byte {
		b = appendHeader(b, audit.Info.Syslog(), c.Time.UTC().AppendFormat(nil, auditlog.TimeLayout), host, MsgIDCheckpoint)
		b = append(b, '[')
		b = append(b, sdCheckpoint...)
		b = appendParam(b, "origin", c.Origin)
		b = appendParam(b, "size", strconv.FormatInt(c.Size, 10))
		b = appendParam(b, "root", c.Root.String())
		b = append(b, "] "...)
		return append(b, note...)
	})
}

// frame appends "LEN SP" and the message msg appends: the message is
// written after a reserved 10-digit gap and moved left once its length is
// known, so it is built once.
func frame(b []byte, msg func([]byte) []byte) []byte {
	start := len(b)
	const gap = 11 // up to 10 digits and the space
	b = append(b, make([]byte, gap)...)
	b = msg(b)
	n := len(b) - start - gap
	var lenBuf [11]byte
	l := strconv.AppendInt(lenBuf[:0], int64(n), 10)
	l = append(l, ' ')
	copy(b[start:], l)
	copy(b[start+len(l):], b[start+gap:])
	return b[:len(b)-(gap-len(l))]
}

// appendHeader appends "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ".
func appendHeader(b []byte, sev int, ts []byte, host, msgid string) []byte {
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(facility*8+sev), 10)
	b = append(b, ">1 "...)
	b = append(b, ts...)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, ' ')
	b = append(b, AppName...)
	b = append(b, " - "...)
	b = append(b, msgid...)
	return append(b, ' ')
}

// appendParam appends ` name="value"` with '"', '\' and ']' escaped (RFC
// 5424 §6.3.3). Values are UTF-8 (the store makes every string of a
// record valid UTF-8).
func appendParam(b []byte, name, value string) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '"' || c == '\\' || c == ']' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// msgID is a header field: printable US-ASCII without spaces, at most
// max characters, "-" when empty (RFC 5424 §6). Anything else is replaced
// by '_'.
func headerField(s string, max int) string {
	if s == "" {
		return "-"
	}
	if len(s) > max {
		s = s[:max]
	}
	ok := true
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	return string(b)
}

func msgID(t string) string { return headerField(t, 32) }

// Hostname is the HOSTNAME field for a configured name (255 characters).
func Hostname(h string) string { return headerField(h, 255) }
