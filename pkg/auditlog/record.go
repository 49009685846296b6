// Package auditlog is the verifiable form of Cordon's audit trail, shared by
// the controller (which appends to it and signs checkpoints), cordonctl
// (which verifies it, also offline from an exported bundle) and gateways
// (which keep the latest checkpoint and refuse one that is not an extension
// of it).
//
// The log is an RFC 6962 Merkle tree (golang.org/x/mod/sumdb/tlog) whose
// leaf i is the canonical encoding ([Record.AppendCanonical]) of the audit
// record with sequence number i+1: the position of a record in the tree is
// its seq, so a deleted, inserted or reordered record is a record at the
// wrong position. A checkpoint ([Checkpoint]) is a C2SP tlog-checkpoint
// (origin, tree size, root hash, and a time extension line) signed as a
// note (golang.org/x/mod/sumdb/note) with the controller's Ed25519 key.
//
// Nothing in this package trusts its input: records, checkpoints, proofs
// and bundles that do not parse, or do not verify, are errors that say
// which record or line is wrong.
package auditlog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// Record is one audit record as the log covers it: every field an auditor
// relies on.
type Record struct {
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`
	Type      audit.Type        `json:"type"`
	Actor     string            `json:"actor"`
	Outcome   string            `json:"outcome"`
	Subject   string            `json:"subject"`
	Details   map[string]string `json:"details"`
	RequestID string            `json:"request_id"`
}

// TimeLayout is how a record's time is written: UTC, exactly six
// fractional digits (the store keeps microseconds).
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// MaxRecordSize bounds one record's canonical encoding, checked before a
// line of a bundle is read whole.
const MaxRecordSize = 1 << 20

// AppendCanonical appends r's canonical encoding to b and returns it. It is
// one line of JSON (no newline) with the keys in this order, every key
// present, details sorted by key, no insignificant space, and strings
// escaped minimally:
//
//	{"seq":1,"time":"2026-12-03T15:04:05.123456Z","type":"admin.user.create","actor":"admin:root","outcome":"success","subject":"nurse","details":{"role":"x"},"request_id":""}
//
// Strings must be valid UTF-8 (the store makes them so before it appends):
// an invalid byte is written as U+FFFD, so the encoding of such a record
// would not parse back to it. The leaf hash of the record is
// tlog.RecordHash of these bytes (SHA-256 of 0x00 and the bytes).
func (r Record) AppendCanonical(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.UTC().AppendFormat(b, TimeLayout)
	b = append(b, `","type":`...)
	b = appendString(b, string(r.Type))
	b = append(b, `,"actor":`...)
	b = appendString(b, r.Actor)
	b = append(b, `,"outcome":`...)
	b = appendString(b, r.Outcome)
	b = append(b, `,"subject":`...)
	b = appendString(b, r.Subject)
	b = append(b, `,"details":`...)
	b = AppendDetails(b, r.Details)
	b = append(b, `,"request_id":`...)
	b = appendString(b, r.RequestID)
	return append(b, '}')
}

// AppendDetails appends details as the canonical encoding writes them: a
// JSON object sorted by key, strings escaped minimally, {} when empty.
// The store keeps a record's details in this form too: it is valid JSON
// and costs a fraction of encoding/json's reflection.
func AppendDetails(b []byte, details map[string]string) []byte {
	b = append(b, '{')
	if len(details) > 0 {
		keys := make([]string, 0, len(details))
		for k := range details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, details[k])
		}
	}
	return append(b, '}')
}

// Canonical returns r's canonical encoding.
func (r Record) Canonical() []byte { return r.AppendCanonical(nil) }

// LeafHash is the hash of r's leaf in the tree.
func (r Record) LeafHash() tlog.Hash { return tlog.RecordHash(r.Canonical()) }

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: '"' and '\\' escaped, control
// characters as \n, \r, \t or \u00XX, everything else (also '<', '>', '&'
// and U+2028) as is; invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// ParseRecord parses one canonical record. Anything that is not exactly the
// canonical encoding of the record it decodes to is an error: unknown,
// missing or repeated keys, other key order, spacing or escaping, a time
// not in TimeLayout, a seq below 1. So the bytes an auditor reads are the
// bytes the leaf hash covers, and two tools cannot read one line two ways.
func ParseRecord(line []byte) (Record, error) {
	if len(line) > MaxRecordSize {
		return Record{}, fmt.Errorf("record of %d bytes is larger than %d", len(line), MaxRecordSize)
	}
	if !utf8.Valid(line) {
		return Record{}, errors.New("record is not valid UTF-8")
	}
	p := parser{b: line}
	var r Record
	p.lit(`{"seq":`)
	r.Seq = p.int()
	p.lit(`,"time":`)
	ts := p.str()
	p.lit(`,"type":`)
	r.Type = audit.Type(p.str())
	p.lit(`,"actor":`)
	r.Actor = p.str()
	p.lit(`,"outcome":`)
	r.Outcome = p.str()
	p.lit(`,"subject":`)
	r.Subject = p.str()
	p.lit(`,"details":{`)
	if !p.peek('}') {
		r.Details = make(map[string]string)
		for {
			k := p.str()
			p.lit(`:`)
			if _, dup := r.Details[k]; dup && p.err == nil {
				p.err = fmt.Errorf("details key %q repeated", clip(k))
			}
			r.Details[k] = p.str()
			if !p.peek(',') {
				break
			}
			p.lit(`,`)
		}
	}
	p.lit(`},"request_id":`)
	r.RequestID = p.str()
	p.lit(`}`)
	if p.err == nil && p.i != len(p.b) {
		p.err = fmt.Errorf("unexpected bytes after the record at offset %d", p.i)
	}
	if p.err != nil {
		return Record{}, fmt.Errorf("record is not in canonical form: %w", p.err)
	}
	if r.Seq < 1 {
		return Record{}, fmt.Errorf("record has seq %d; sequence numbers start at 1", r.Seq)
	}
	at, err := time.Parse(TimeLayout, ts)
	if err != nil {
		return Record{}, fmt.Errorf("record time %q: want %s", clip(ts), TimeLayout)
	}
	r.Time = at
	// The parser accepts a little more than canonical (unsorted details,
	// a seq with leading zeros, escapes appendString would not write);
	// encoding again catches all of it at once.
	if c := r.AppendCanonical(make([]byte, 0, len(line))); !bytes.Equal(c, line) {
		return Record{}, errors.New("record is not in canonical form (key order, number format or escaping differ from the encoding of what it says)")
	}
	return r, nil
}

// parser reads the fixed shape of a canonical record; the first error
// sticks and later calls do nothing.
type parser struct {
	b   []byte
	i   int
	err error
}

func (p *parser) fail(what string) {
	if p.err == nil {
		p.err = fmt.Errorf("want %s at offset %d", what, p.i)
	}
}

func (p *parser) lit(s string) {
	if p.err != nil {
		return
	}
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		p.fail(strconv.Quote(s))
		return
	}
	p.i += len(s)
}

func (p *parser) peek(c byte) bool { return p.err == nil && p.i < len(p.b) && p.b[p.i] == c }

func (p *parser) int() int64 {
	if p.err != nil {
		return 0
	}
	j := p.i
	for j < len(p.b) && j-p.i < 19 && p.b[j] >= '0' && p.b[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(p.b[p.i:j]), 10, 64)
	if err != nil {
		p.fail("a number")
		return 0
	}
	p.i = j
	return n
}

// str reads a JSON string with the escapes appendString writes.
func (p *parser) str() string {
	if p.err != nil {
		return ""
	}
	if !p.peek('"') {
		p.fail("a string")
		return ""
	}
	p.i++
	start := p.i
	var out []byte // nil while there is no escape
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if out != nil {
				return string(append(out, s...))
			}
			return string(s)
		case c < 0x20:
			p.fail("an escaped control character")
			return ""
		case c != '\\':
			p.i++
			continue
		}
		out = append(out, p.b[start:p.i]...)
		if p.i+1 >= len(p.b) {
			break
		}
		switch e := p.b[p.i+1]; e {
		case '"', '\\':
			out = append(out, e)
			p.i += 2
		case 'n':
			out = append(out, '\n')
			p.i += 2
		case 'r':
			out = append(out, '\r')
			p.i += 2
		case 't':
			out = append(out, '\t')
			p.i += 2
		case 'u':
			if p.i+6 > len(p.b) {
				p.fail("four hex digits")
				return ""
			}
			v, err := strconv.ParseUint(string(p.b[p.i+2:p.i+6]), 16, 8)
			if err != nil || v >= 0x20 {
				p.fail(`\u00XX of a control character`)
				return ""
			}
			out = append(out, byte(v))
			p.i += 6
		default:
			p.fail("an escape the canonical form uses")
			return ""
		}
		start = p.i
	}
	p.fail("the end of the string")
	return ""
}

// ValidUTF8 returns s with every invalid UTF-8 sequence replaced by U+FFFD,
// so its canonical encoding reads back as s. The store applies it to every
// string of a record before it stores and logs it.
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\ufffd")
}
