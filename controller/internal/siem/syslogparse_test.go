package siem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// A strict reader of what the exporter sends, written from the RFCs and
// not from the encoder: RFC 5425 §4.3 octet-counted frames carrying
// RFC 5424 §6 messages. Anything the ABNF does not allow is an error.

// syslogMsg is one parsed RFC 5424 message.
type syslogMsg struct {
	Pri       int
	Version   int
	Timestamp time.Time
	Hostname  string
	AppName   string
	ProcID    string
	MsgID     string
	SD        []sdElement
	Msg       []byte
}

type sdElement struct {
	ID     string
	Params []sdParam
}

type sdParam struct{ Name, Value string }

// param returns the value of the first parameter name of element id.
func (m syslogMsg) param(id, name string) (string, bool) {
	for _, e := range m.SD {
		if e.ID != id {
			continue
		}
		for _, p := range e.Params {
			if p.Name == name {
				return p.Value, true
			}
		}
	}
	return "", false
}

// maxFrame bounds one frame in the reader.
const maxFrame = 4 << 20

// readFrame reads one "MSG-LEN SP SYSLOG-MSG" frame (io.EOF at a clean
// end between frames).
func readFrame(r *bufio.Reader) ([]byte, error) {
	n := 0
	digits := 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if digits == 0 {
				return nil, err // the end, between frames
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("frame length: %w", err)
		}
		if c == ' ' {
			break
		}
		if c < '0' || c > '9' || (digits == 0 && c == '0') {
			return nil, fmt.Errorf("frame length: byte %q is not a digit (or a leading zero)", c)
		}
		digits++
		n = n*10 + int(c-'0')
		if n > maxFrame {
			return nil, fmt.Errorf("frame length over %d", maxFrame)
		}
	}
	if digits == 0 {
		return nil, errors.New("frame length missing")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, err)
	}
	return b, nil
}

// parseFrames reads every frame of b.
func parseFrames(b []byte) ([]syslogMsg, error) {
	r := bufio.NewReader(bytes.NewReader(b))
	var out []syslogMsg
	for {
		f, err := readFrame(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		m, err := parse5424(f)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

type p5424 struct {
	b []byte
	i int
}

func (p *p5424) errf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *p5424) sp() error {
	if p.i >= len(p.b) || p.b[p.i] != ' ' {
		return p.errf("want SP")
	}
	p.i++
	return nil
}

// field reads a header field: "-" or 1..max PRINTUSASCII.
func (p *p5424) field(name string, max int) (string, error) {
	j := p.i
	for j < len(p.b) && p.b[j] >= 33 && p.b[j] <= 126 {
		j++
	}
	if j == p.i {
		return "", p.errf("%s is empty", name)
	}
	if j-p.i > max {
		return "", p.errf("%s longer than %d", name, max)
	}
	s := string(p.b[p.i:j])
	p.i = j
	if s == "-" {
		return "", nil
	}
	return s, nil
}

func parse5424(b []byte) (syslogMsg, error) {
	p := &p5424{b: b}
	var m syslogMsg
	// PRI
	if len(b) < 3 || b[0] != '<' {
		return m, p.errf("want <PRI>")
	}
	p.i = 1
	j := p.i
	for j < len(b) && j-p.i < 4 && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == p.i || j-p.i > 3 || j >= len(b) || b[j] != '>' || (j-p.i > 1 && b[p.i] == '0') {
		return m, p.errf("bad PRI")
	}
	m.Pri, _ = strconv.Atoi(string(b[p.i:j]))
	if m.Pri > 191 {
		return m, p.errf("PRI %d over 191", m.Pri)
	}
	p.i = j + 1
	// VERSION
	j = p.i
	for j < len(b) && j-p.i < 4 && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == p.i || j-p.i > 3 || b[p.i] == '0' {
		return m, p.errf("bad VERSION")
	}
	m.Version, _ = strconv.Atoi(string(b[p.i:j]))
	p.i = j
	if err := p.sp(); err != nil {
		return m, err
	}
	ts, err := p.field("TIMESTAMP", 32)
	if err != nil {
		return m, err
	}
	if ts != "" {
		if m.Timestamp, err = parseTimestamp(ts); err != nil {
			return m, p.errf("TIMESTAMP %q: %v", ts, err)
		}
	}
	for _, f := range []struct {
		dst  *string
		name string
		max  int
	}{{&m.Hostname, "HOSTNAME", 255}, {&m.AppName, "APP-NAME", 48}, {&m.ProcID, "PROCID", 128}, {&m.MsgID, "MSGID", 32}} {
		if err := p.sp(); err != nil {
			return m, err
		}
		if *f.dst, err = p.field(f.name, f.max); err != nil {
			return m, err
		}
	}
	if err := p.sp(); err != nil {
		return m, err
	}
	// STRUCTURED-DATA
	if p.i < len(b) && b[p.i] == '-' {
		p.i++
	} else {
		for p.i < len(b) && b[p.i] == '[' {
			e, err := p.element()
			if err != nil {
				return m, err
			}
			m.SD = append(m.SD, e)
		}
		if len(m.SD) == 0 {
			return m, p.errf("want STRUCTURED-DATA")
		}
	}
	if p.i == len(b) {
		return m, nil
	}
	if err := p.sp(); err != nil {
		return m, err
	}
	m.Msg = b[p.i:]
	if bytes.HasPrefix(m.Msg, []byte("\xef\xbb\xbf")) && !utf8.Valid(m.Msg[3:]) {
		return m, p.errf("MSG has a BOM but is not UTF-8")
	}
	return m, nil
}

func (p *p5424) name(what string) (string, error) {
	j := p.i
	for j < len(p.b) {
		c := p.b[j]
		if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' {
			break
		}
		j++
	}
	if j == p.i || j-p.i > 32 {
		return "", p.errf("bad %s", what)
	}
	s := string(p.b[p.i:j])
	p.i = j
	return s, nil
}

func (p *p5424) element() (sdElement, error) {
	var e sdElement
	p.i++ // [
	id, err := p.name("SD-ID")
	if err != nil {
		return e, err
	}
	e.ID = id
	for {
		if p.i >= len(p.b) {
			return e, p.errf("SD-ELEMENT not closed")
		}
		if p.b[p.i] == ']' {
			p.i++
			return e, nil
		}
		if err := p.sp(); err != nil {
			return e, err
		}
		n, err := p.name("PARAM-NAME")
		if err != nil {
			return e, err
		}
		if p.i+1 >= len(p.b) || p.b[p.i] != '=' || p.b[p.i+1] != '"' {
			return e, p.errf(`want ="`)
		}
		p.i += 2
		var v []byte
		for {
			if p.i >= len(p.b) {
				return e, p.errf("PARAM-VALUE not closed")
			}
			c := p.b[p.i]
			if c == '"' {
				p.i++
				break
			}
			if c == ']' {
				return e, p.errf("unescaped ] in PARAM-VALUE")
			}
			if c == '\\' && p.i+1 < len(p.b) && (p.b[p.i+1] == '"' || p.b[p.i+1] == '\\' || p.b[p.i+1] == ']') {
				v = append(v, p.b[p.i+1])
				p.i += 2
				continue
			}
			v = append(v, c)
			p.i++
		}
		if !utf8.Valid(v) {
			return e, p.errf("PARAM-VALUE is not UTF-8")
		}
		e.Params = append(e.Params, sdParam{n, string(v)})
	}
}

// parseTimestamp reads an RFC 5424 TIMESTAMP (RFC 3339 with at most six
// fractional digits).
func parseTimestamp(s string) (time.Time, error) {
	if i := bytes.IndexByte([]byte(s), '.'); i >= 0 {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j-i-1 < 1 || j-i-1 > 6 {
			return time.Time{}, errors.New("1 to 6 fractional digits")
		}
	}
	return time.Parse(time.RFC3339Nano, s)
}
