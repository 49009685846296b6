package siem

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// A hand-written encoder of ocsfEvent: encoding/json spent 10 to 27 µs per
// event on reflection, the details map and escaping, and was the OCSF
// sinks' limit (docs/benchmarks.md). It writes exactly what
// encoding/json with SetEscapeHTML(false) writes for the struct (same key
// order, same omitempty, same escapes); ocsfenc_test.go checks that byte
// for byte, and fuzzes it.

// jobj appends one JSON object's members.
type jobj struct {
	b []byte
	n int
}

func (o *jobj) key(k string) {
	if o.n > 0 {
		o.b = append(o.b, ',')
	}
	o.n++
	o.b = append(o.b, '"')
	o.b = append(o.b, k...)
	o.b = append(o.b, '"', ':')
}

func (o *jobj) str(k, v string) {
	o.key(k)
	o.b = appendJSONString(o.b, v)
}

func (o *jobj) strOmit(k, v string) {
	if v != "" {
		o.str(k, v)
	}
}

func (o *jobj) int(k string, v int64) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, v, 10)
}

func (o *jobj) intOmit(k string, v int64) {
	if v != 0 {
		o.int(k, v)
	}
}

// obj appends member k, an object whose members fill writes.
func (o *jobj) obj(k string, fill func(*jobj)) {
	o.key(k)
	c := jobj{b: append(o.b, '{')}
	fill(&c)
	o.b = append(c.b, '}')
}

func appendOCSFEvent(b []byte, e *ocsfEvent) []byte {
	o := jobj{b: append(b, '{')}
	o.int("activity_id", int64(e.ActivityID))
	o.strOmit("activity_name", e.ActivityName)
	o.int("category_uid", int64(e.CategoryUID))
	o.str("category_name", e.CategoryName)
	o.int("class_uid", int64(e.ClassUID))
	o.str("class_name", e.ClassName)
	o.int("type_uid", int64(e.TypeUID))
	o.int("severity_id", int64(e.SeverityID))
	o.str("severity", e.Severity)
	o.int("time", e.Time)
	o.intOmit("status_id", int64(e.StatusID))
	o.strOmit("status", e.Status)
	o.strOmit("status_detail", e.StatusDetail)
	o.strOmit("message", e.Message)
	o.obj("metadata", func(m *jobj) {
		md := &e.Metadata
		m.str("version", md.Version)
		m.obj("product", func(p *jobj) {
			p.str("name", md.Product.Name)
			p.str("vendor_name", md.Product.VendorName)
		})
		m.str("log_name", md.LogName)
		m.strOmit("log_provider", md.LogProvider)
		m.str("uid", md.UID)
		m.int("sequence", md.Sequence)
		m.str("event_code", md.EventCode)
		m.strOmit("correlation_uid", md.CorrelationUID)
	})
	if e.Actor != nil {
		o.obj("actor", func(a *jobj) {
			if e.Actor.User != nil {
				a.obj("user", func(u *jobj) { appendUser(u, e.Actor.User) })
			}
		})
	}
	if e.User != nil {
		o.obj("user", func(u *jobj) { appendUser(u, e.User) })
	}
	if e.Group != nil {
		o.obj("group", func(g *jobj) { g.str("name", e.Group.Name) })
	}
	if e.API != nil {
		o.obj("api", func(a *jobj) { a.str("operation", e.API.Operation) })
	}
	if len(e.Resources) > 0 {
		o.key("resources")
		o.b = append(o.b, '[')
		for i, r := range e.Resources {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			c := jobj{b: append(o.b, '{')}
			c.str("name", r.Name)
			c.strOmit("type", r.Type)
			o.b = append(c.b, '}')
		}
		o.b = append(o.b, ']')
	}
	if e.SrcEndpoint != nil {
		o.obj("src_endpoint", func(p *jobj) { appendEndpoint(p, e.SrcEndpoint) })
	}
	if e.DstEndpoint != nil {
		o.obj("dst_endpoint", func(p *jobj) { appendEndpoint(p, e.DstEndpoint) })
	}
	if e.Connection != nil {
		o.obj("connection_info", func(c *jobj) {
			c.strOmit("protocol_name", e.Connection.ProtocolName)
			c.int("direction_id", int64(e.Connection.DirectionID))
		})
	}
	if e.Session != nil {
		o.obj("session", func(s *jobj) { s.str("uid", e.Session.UID) })
	}
	if e.IsMFA != nil {
		o.key("is_mfa")
		o.b = strconv.AppendBool(o.b, *e.IsMFA)
	}
	if e.Entity != nil {
		o.obj("entity", func(x *jobj) {
			x.strOmit("name", e.Entity.Name)
			x.strOmit("uid", e.Entity.UID)
			x.strOmit("type", e.Entity.Type)
		})
	}
	if e.Device != nil {
		o.obj("device", func(d *jobj) {
			d.str("uid", e.Device.UID)
			d.strOmit("hostname", e.Device.Hostname)
			d.int("type_id", int64(e.Device.TypeID))
			d.strOmit("type", e.Device.Type)
		})
	}
	if e.Query != nil {
		o.obj("query", func(q *jobj) { q.str("hostname", e.Query.Hostname) })
	}
	o.intOmit("rcode_id", int64(e.RcodeID))
	o.strOmit("rcode", e.Rcode)
	if e.FindingInfo != nil {
		o.obj("finding_info", func(f *jobj) {
			fi := e.FindingInfo
			f.str("uid", fi.UID)
			f.str("title", fi.Title)
			if len(fi.Types) > 0 {
				f.key("types")
				f.b = append(f.b, '[')
				for i, t := range fi.Types {
					if i > 0 {
						f.b = append(f.b, ',')
					}
					f.b = appendJSONString(f.b, t)
				}
				f.b = append(f.b, ']')
			}
			f.strOmit("desc", fi.Desc)
		})
	}
	o.strOmit("raw_data", e.RawData)
	o.obj("unmapped", func(u *jobj) {
		u.obj("cordon", func(c *jobj) {
			x := &e.Unmapped.Cordon
			c.intOmit("seq", x.Seq)
			c.strOmit("type", x.Type)
			c.strOmit("category", x.Category)
			c.strOmit("outcome", x.Outcome)
			c.strOmit("actor", x.Actor)
			c.strOmit("subject", x.Subject)
			if len(x.Details) > 0 {
				keys := make([]string, 0, len(x.Details))
				for k := range x.Details {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				c.obj("details", func(d *jobj) {
					for _, k := range keys {
						if d.n > 0 {
							d.b = append(d.b, ',')
						}
						d.n++
						d.b = appendJSONString(d.b, k)
						d.b = append(d.b, ':')
						d.b = appendJSONString(d.b, x.Details[k])
					}
				})
			}
			c.strOmit("leaf", x.Leaf)
			if cp := x.Checkpoint; cp != nil {
				c.obj("checkpoint", func(p *jobj) {
					p.str("origin", cp.Origin)
					p.int("size", cp.Size)
					p.str("root", cp.Root)
					p.str("note", cp.Note)
				})
			}
		})
	})
	return append(o.b, '}')
}

func appendUser(u *jobj, x *ocsfUser) {
	u.strOmit("name", x.Name)
	u.strOmit("uid", x.UID)
	u.int("type_id", int64(x.TypeID))
	u.strOmit("type", x.Type)
}

func appendEndpoint(p *jobj, x *ocsfEndpoint) {
	p.strOmit("ip", x.IP)
	p.intOmit("port", int64(x.Port))
	p.strOmit("name", x.Name)
	p.strOmit("uid", x.UID)
}

// appendJSONString appends s as encoding/json writes it without HTML
// escaping: '"' and '\' escaped, control characters as \b \f \n \r \t or
// \u00XX, U+2028 and U+2029 as \u2028 and \u2029, invalid UTF-8 as
// \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
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
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"
